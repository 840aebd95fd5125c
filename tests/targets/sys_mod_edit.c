/* sys_mod_edit.c: handlers that change the call (syscall-probe tests).
 *  - entry on openat: "/nonexistent/open" becomes "/etc/hostname";
 *  - ret on getppid: the target sees 4242;
 *  - ret on openat of "/nonexistent/fopen": the handler faults (NULL store);
 *    it is aborted and the target goes on. */
#include <string.h>
#include <ptap/syscalls.h>

static const int openat_nr[] = { 257 };
static const int getppid_nr[] = { 110 };
static const char replacement[] = "/etc/hostname";

static int open_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	const char *path = (const char *)regs->si;
	if (path && !strcmp(path, "/nonexistent/open"))
		regs->si = (unsigned long)replacement;
	return 0;
}

static int open_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	const char *path = (const char *)regs->si;
	if (path && !strcmp(path, "/nonexistent/fopen"))
		*(volatile int *)0 = 1;
	return 0;
}

static int ppid_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	regs->ax = 4242;
	return 0;
}

static struct syscall_probe opens = { .nrs = openat_nr, .n = 1, .entry = open_entry, .ret = open_ret };
static struct syscall_probe ppid = { .nrs = getppid_nr, .n = 1, .ret = ppid_ret };

int init_module(void)
{
	return register_syscall_probe(&opens) || register_syscall_probe(&ppid);
}

void cleanup_module(void)
{
	unregister_syscall_probe(&opens);
	unregister_syscall_probe(&ppid);
	printk("edit cleanup\n");
}
