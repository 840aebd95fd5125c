/* sites_mod.c: for `sites_one_table one`: a kprobe (pre_handler only) on
 * the target's sites_probed() and a syscall probe on getppid, so that one
 * loop hits an int3 of each kind of site: the kprobe's (the test runs with
 * PTAP_NO_OPTIMIZE=1: its trap path) and the one on the `syscall`
 * instruction of libc's syscall(), moved while a syscall probe is on. */
#include <ptap/syscalls.h>

static unsigned long pre, sys_e;

static int k_pre(struct kprobe *p, struct pt_regs *r)
{
	pre++;
	return 0;
}

static int s_e(struct syscall_probe *p, struct pt_regs *r)
{
	sys_e++;
	return 0;
}

static struct kprobe kp = { .symbol_name = "sites_probed", .pre_handler = k_pre };
static const int nr[] = { 110 };
static struct syscall_probe sp = { .nrs = nr, .n = 1, .entry = s_e };

int init_module(void)
{
	int r1 = register_kprobe(&kp);
	int r2 = register_syscall_probe(&sp);
	printk("reg %d %d\n", r1, r2);
	return 0;
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	unregister_syscall_probe(&sp);
	printk("kprobe_pre=%lu sys_entry=%lu\n", pre, sys_e);
}
