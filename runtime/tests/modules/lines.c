/* printk from many threads at once: every line must arrive whole. */
#include <ptap/kprobes.h>
#include <unistd.h>
#include <sys/syscall.h>

static struct kprobe kp;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	long tid = syscall(SYS_gettid);
	printk("<%ld|%s|%s|%ld>\n", tid,
	       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	       "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", tid);
	return 0;
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	return register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
}
