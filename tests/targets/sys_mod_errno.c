/* sys_mod_errno.c: getppid entry and return handlers that call libc
 * functions failing with EBADF (close(-1)): the target's errno must be
 * what it was before the call. */
#include <unistd.h>
#include <ptap/syscalls.h>

static const int getppid_nr[] = { 110 };
static unsigned long hits;

static int h(struct syscall_probe *p, struct pt_regs *regs)
{
	hits++;
	close(-1);
	return 0;
}

static struct syscall_probe ppid = { .nrs = getppid_nr, .n = 1, .entry = h, .ret = h };

int init_module(void)
{
	return register_syscall_probe(&ppid);
}

void cleanup_module(void)
{
	unregister_syscall_probe(&ppid);
	printk("hits=%lu\n", hits);
}
