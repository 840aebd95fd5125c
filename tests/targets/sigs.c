/* sigs: blocks every signal, installs its own SIGTRAP handler with signal(),
 * executes int3 three times, and calls work(); prints what it saw. */
#include <signal.h>
#include <stdio.h>

static volatile int traps;
static void on_trap(int sig) { traps++; }

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2 + 1;
}

int main(void)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	signal(SIGTRAP, on_trap);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	sigprocmask(SIG_BLOCK, &all, NULL); /* SIGTRAP must stay deliverable */
	long s = 0;
	for (int i = 0; i < 3; i++) {
		__asm__ volatile("int3");
		s += work(i);
	}
	struct sigaction old;
	sigaction(SIGTRAP, NULL, &old);
	printf("traps=%d sum=%ld own_handler=%d\n", traps, s, old.sa_handler == on_trap);
	return 0;
}
