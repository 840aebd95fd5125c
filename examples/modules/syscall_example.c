/*
 * syscall_example.c - the kretprobe example of the 2005 Kprobes document, at the system call level:
 * reports every failing call of the open family (open, openat, openat2,
 * creat) with its raw kernel return value (-errno), whoever makes it.
 *
 *   make -C examples/modules
 *   target/debug/ptap load examples/modules/syscall_example.so -c 'cat /nonexistent'
 */
#include <unistd.h>
#include <ptap/syscalls.h>

static const int open_family[] = { SYSCALL_OPEN_FAMILY };

/* Return handler: if the call failed, log the path and the return value. */
static int ret_handler(struct syscall_probe *p, struct pt_regs *regs)
{
	long retval = (long)regs->ax;
	if (retval < 0)
		printk("pid %d: open(\"%s\") returns %ld\n", (int)getpid(), syscall_open_path(regs), retval);
	return 0;
}

static struct syscall_probe my_probe = {
	.nrs = open_family,
	.n = sizeof(open_family) / sizeof(open_family[0]),
	.ret = ret_handler,
};

int init_module(void)
{
	int ret = register_syscall_probe(&my_probe);
	if (ret < 0) {
		printk("register_syscall_probe failed, returned %d\n", ret);
		return -1;
	}
	return 0;
}

void cleanup_module(void)
{
	unregister_syscall_probe(&my_probe);
	if (my_probe.nmissed)
		printk("Missed %lu open calls\n", my_probe.nmissed);
}

MODULE_LICENSE("GPL");
