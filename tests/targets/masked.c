#define _GNU_SOURCE
/* masked: work() (whose first instruction is a call) runs under every kind
 * of signal mask a program can give its handlers, while it is probed:
 *   - a storm of SIGUSR1 whose handler has a full sa_mask (sigfillset), sent
 *     by kill() from a thread and raised by four threads at once;
 *   - the target's own SIGTRAP handler, installed without SA_NODEFER;
 *   - a SIGUSR2 handler run inside sigsuspend(), ppoll() and pselect()
 *     with every other signal blocked;
 *   - a full sigprocmask()/pthread_sigmask() block.
 * Usage: masked N. Prints calls=TOTAL (every call of work()) at the end. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

static long calls;

__attribute__((noinline, used)) long helper(long x)
{
	__asm__ volatile("" ::: "memory");
	__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
	return x + 1;
}

/* work's first five bytes are a call: a site the jump path cannot take. */
long work(long x);
__asm__(".text\n"
	".globl work\n"
	".type work,@function\n"
	"work:\n"
	"	call helper\n"
	"	ret\n"
	".size work, .-work\n");

static long usr1, trap, usr2;
static volatile int stop;

static void on_usr1(int sig)
{
	__atomic_fetch_add(&usr1, 1, __ATOMIC_RELAXED);
	work(sig);
}

static void on_trap(int sig)
{
	trap++;
	work(sig);
}

static void on_usr2(int sig)
{
	usr2++;
	work(sig);
}

static long n;

static void *raiser(void *arg)
{
	for (long i = 0; i < n; i++)
		raise(SIGUSR1);
	return arg;
}

static void *killer(void *arg)
{
	for (long i = 0; i < n; i++)
		kill(getpid(), SIGUSR1);
	return arg;
}

static void handler(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigfillset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atol(argv[1]) : 1000;
	setvbuf(stdout, NULL, _IONBF, 0);
	handler(SIGUSR1, on_usr1, SA_RESTART);
	handler(SIGTRAP, on_trap, 0);
	handler(SIGUSR2, on_usr2, 0);

	/* The storm. */
	pthread_t t[5];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, raiser, NULL);
	pthread_create(&t[4], NULL, killer, NULL);
	for (int i = 0; i < 5; i++)
		pthread_join(t[i], NULL);

	/* The target's own SIGTRAP. */
	for (long i = 0; i < n; i++)
		raise(SIGTRAP);

	/* Handlers run with the temporary masks of sigsuspend, ppoll, pselect. */
	sigset_t usr2set, all_but_usr2, old;
	sigemptyset(&usr2set);
	sigaddset(&usr2set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr2set, &old);
	sigfillset(&all_but_usr2);
	sigdelset(&all_but_usr2, SIGUSR2);
	for (long i = 0; i < n; i++) {
		raise(SIGUSR2);
		switch (i % 3) {
		case 0:
			sigsuspend(&all_but_usr2);
			break;
		case 1: {
			struct timespec ts = { 5, 0 };
			ppoll(NULL, 0, &ts, &all_but_usr2);
			break;
		}
		default: {
			struct timespec ts = { 5, 0 };
			pselect(0, NULL, NULL, NULL, &ts, &all_but_usr2);
		}
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);

	/* A full block of the thread's own mask. */
	sigset_t full;
	sigfillset(&full);
	sigprocmask(SIG_BLOCK, &full, &old);
	for (long i = 0; i < n; i++)
		work(i);
	pthread_sigmask(SIG_BLOCK, &full, NULL);
	for (long i = 0; i < n; i++)
		work(i);
	sigprocmask(SIG_SETMASK, &old, NULL);

	printf("usr1=%ld trap=%ld usr2=%ld\n", usr1, trap, usr2);
	printf("calls=%ld\n", calls);
	return 0;
}
