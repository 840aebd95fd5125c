/* sys_fast_mod: entry + return handlers on getppid (counting) and readv
 * (printing its arguments and raw result), for `sys_opens fast`. */
#include <ptap/kprobes.h>
#include <ptap/syscalls.h>

static const int ppid_nr[] = { 110 };
static const int readv_nr[] = { 19 };
static unsigned long entries, returns;

static int ppid_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	entries++;
	return 0;
}

static int ppid_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	returns++;
	return 0;
}

static int readv_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	printk("readv entry nr=%lu fd=%ld iovcnt=%ld\n", regs->orig_ax, (long)regs->di, (long)regs->dx);
	return 0;
}

static int readv_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	printk("readv ret=%ld\n", (long)regs->ax);
	return 0;
}

static struct syscall_probe ppid = { .nrs = ppid_nr, .n = 1, .entry = ppid_entry, .ret = ppid_ret };
static struct syscall_probe rv = { .nrs = readv_nr, .n = 1, .entry = readv_entry, .ret = readv_ret };

int init_module(void)
{
	if (register_syscall_probe(&ppid) || register_syscall_probe(&rv))
		return -1;
	return 0;
}

void cleanup_module(void)
{
	unregister_syscall_probe(&ppid);
	unregister_syscall_probe(&rv);
	printk("getppid entries=%lu returns=%lu nmissed=%lu\n", entries, returns, ppid.nmissed + rv.nmissed);
}
