/* For tests/targets/sigprobe: a pre_handler on work() raises SIGUSR1 at its
 * own thread (the target's handler siglongjmps); a counting kprobe on
 * after(). Every hit must run its handler (no thread state left stuck by
 * the jump). */
#include <ptap/kprobes.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct kprobe kw, ka;
static long hw, ha;

static int pre_w(struct kprobe *p, struct pt_regs *regs)
{
	hw++;
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1);
	return 0;
}

static int pre_a(struct kprobe *p, struct pt_regs *regs)
{
	ha++;
	return 0;
}

int init_module(void)
{
	kw.symbol_name = "work";
	kw.pre_handler = pre_w;
	ka.symbol_name = "after";
	ka.pre_handler = pre_a;
	int r1 = register_kprobe(&kw), r2 = register_kprobe(&ka);
	printk("register=%d,%d\n", r1, r2);
	return r1 || r2;
}

void cleanup_module(void)
{
	unregister_kprobe(&kw);
	unregister_kprobe(&ka);
	printk("hits=%ld after_hits=%ld missed=%lu\n", hw, ha, kw.nmissed + ka.nmissed);
}
