/* A kprobe on libc's getppid whose handler calls libc and fails there
 * (close(-1) sets errno to EBADF): the target's errno must stay as it left
 * it (errno_keep). */
#include <ptap/kprobes.h>
#include <unistd.h>

static long hits;

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	(void)p;
	(void)regs;
	hits++;
	close(-1);
	return 0;
}

static struct kprobe kp = { .symbol_name = "getppid", .pre_handler = pre };

int init_module(void)
{
	return register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	printk("hits=%ld\n", hits);
}
