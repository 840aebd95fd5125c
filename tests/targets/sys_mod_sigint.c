/* sys_mod_sigint.c: a getppid probe whose first entry handler raises
 * SIGALRM on its own thread (as a timer could fire while a handler runs).
 * The target's SIGALRM handler siglongjmps away; the probe must keep
 * working for every later call (the signal waits until the handlers are
 * done). Reports hits at cleanup. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <ptap/syscalls.h>

static const int getppid_nr[] = { 110 };
static unsigned long hits, rets;
static int raised;

static int entry(struct syscall_probe *p, struct pt_regs *regs)
{
	hits++;
	if (!raised) {
		raised = 1;
		syscall(SYS_tgkill, getpid(), (int)syscall(SYS_gettid), SIGALRM);
		/* Still here: the signal did not interrupt the handler. */
		printk("handler finished\n");
	}
	return 0;
}

static int ret(struct syscall_probe *p, struct pt_regs *regs)
{
	rets++;
	return 0;
}

static struct syscall_probe ppid = { .nrs = getppid_nr, .n = 1, .entry = entry, .ret = ret };

int init_module(void)
{
	return register_syscall_probe(&ppid);
}

void cleanup_module(void)
{
	unregister_syscall_probe(&ppid);
	printk("hits=%lu rets=%lu\n", hits, rets);
}
