/* mod_getppid.c: entry and return handlers on getppid that only count. */
#include <ptap/syscalls.h>

static const int nr[] = { 110 };
static unsigned long entries, returns;

static int on_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	entries++;
	return 0;
}

static int on_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	returns++;
	return 0;
}

static struct syscall_probe probe = { .nrs = nr, .n = 1, .entry = on_entry, .ret = on_ret };

int init_module(void)
{
	return register_syscall_probe(&probe);
}

void cleanup_module(void)
{
	unregister_syscall_probe(&probe);
	printk("entries=%lu returns=%lu nmissed=%lu\n", entries, returns, probe.nmissed);
}
