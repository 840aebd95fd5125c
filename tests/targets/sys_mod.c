/* sys_mod.c: the syscall-probe test module (C API of ptap/syscalls.h).
 * Watches the open family (lines for paths under /nonexistent), getppid
 * (entry registers and return value) and futex (counted), and reports
 * its counters at cleanup. SYS_MOD_LOOKUP=1: the first open handler calls
 * kallsyms_lookup_name, which makes the runtime read ELF files.
 * SYS_MOD_PREFIX: report opens under this prefix (default /nonexistent). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ptap/syscalls.h>

static const int open_family[] = { SYSCALL_OPEN_FAMILY };
static const int getppid_nr[] = { 110 };
static const int futex_nr[] = { 202 };
static unsigned long futexes, opens_seen, data_bad;
static int lookup;
static const char *prefix = "/nonexistent";

/* Entry keeps the path pointer in the per-call data; return checks it. */
static int open_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	const char **d = syscall_probe_data();
	if (!d || *d)
		__atomic_fetch_add(&data_bad, 1, __ATOMIC_RELAXED);
	else
		*d = syscall_open_path(regs);
	return 0;
}

static int open_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	const char *path = syscall_open_path(regs);
	const char **d = syscall_probe_data();
	if (!d || *d != path)
		__atomic_fetch_add(&data_bad, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&opens_seen, 1, __ATOMIC_RELAXED);
	if (lookup) {
		lookup = 0;
		printk("lookup=%d\n", kallsyms_lookup_name("libc.so.6:fopen") != 0);
	}
	if (path && !strncmp(path, prefix, strlen(prefix)))
		printk("open nr=%lu pid=%d comm=%s path=%s ret=%ld\n", regs->orig_ax, (int)getpid(),
		       program_invocation_short_name, path, (long)regs->ax);
	return 0;
}

static int getppid_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	printk("getppid entry di=%lx si=%lx dx=%lx r10=%lx r8=%lx r9=%lx orig_ax=%ld ax=%ld\n",
	       regs->di, regs->si, regs->dx, regs->r10, regs->r8, regs->r9, regs->orig_ax, (long)regs->ax);
	return 0;
}

static int getppid_ret(struct syscall_probe *p, struct pt_regs *regs)
{
	printk("getppid ret ax=%ld real=%d\n", (long)regs->ax, (int)getppid());
	return 0;
}

static int futex_entry(struct syscall_probe *p, struct pt_regs *regs)
{
	__atomic_fetch_add(&futexes, 1, __ATOMIC_RELAXED);
	return 0;
}

static struct syscall_probe opens = { .nrs = open_family, .n = 4, .entry = open_entry, .ret = open_ret };
static struct syscall_probe ppid = { .nrs = getppid_nr, .n = 1, .entry = getppid_entry, .ret = getppid_ret };
static struct syscall_probe fut = { .nrs = futex_nr, .n = 1, .entry = futex_entry };

int init_module(void)
{
	const char *l = getenv("SYS_MOD_LOOKUP");
	lookup = l && *l == '1';
	const char *pre = getenv("SYS_MOD_PREFIX");
	if (pre && *pre)
		prefix = pre;
	if (register_syscall_probe(&opens) || register_syscall_probe(&ppid) || register_syscall_probe(&fut)) {
		printk("register failed\n");
		return -1;
	}
	int again = register_syscall_probe(&opens);
	int bad = register_syscall_probe(&(struct syscall_probe){ .nrs = open_family, .n = 0, .ret = open_ret });
	printk("registered again=%d bad=%d\n", again, bad);
	return 0;
}

void cleanup_module(void)
{
	unregister_syscall_probe(&opens);
	unregister_syscall_probe(&ppid);
	unregister_syscall_probe(&fut);
	printk("cleanup pid=%d futexes=%lu opens_seen=%lu nmissed=%lu data_bad=%lu outside=%d\n", (int)getpid(),
	       futexes, opens_seen, opens.nmissed + ppid.nmissed + fut.nmissed, data_bad, syscall_probe_data() != 0);
}
