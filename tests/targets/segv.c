#define _GNU_SOURCE
/* segv [handler|nohandler] [N]: crash(NULL) faults in its first instruction.
 * With "handler", a SIGSEGV handler (installed with sigaction in main, after
 * the runtime) checks the faulting ip is crash's own address and recovers. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

static sigjmp_buf env;
static int *volatile nullp;

__attribute__((noipa)) void crash(int *p)
{
	*p = 1;
}

static void on_segv(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	unsigned long ip = uc->uc_mcontext.gregs[REG_RIP];
	printf("handler: sig=%d ip=%s addr=%p\n", sig, ip == (unsigned long)crash ? "crash" : "elsewhere", si->si_addr);
	fflush(stdout);
	siglongjmp(env, 1);
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 3;
	if (argc > 1 && !strcmp(argv[1], "handler")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_segv;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSEGV, &sa, NULL);
		for (int i = 0; i < n; i++)
			if (!sigsetjmp(env, 1))
				crash(nullp);
		printf("recovered %d\n", n);
		return 0;
	}
	crash(nullp);
	printf("not reached\n");
	return 0;
}
