/* altstack_spam: the main thread raises SIGUSR1 N times (argv[1], default
 * 2000); its SA_ONSTACK handler keeps a 2 KiB pattern on the alternate stack
 * and calls work(41) there. Another thread sends SIGUSR2 (SA_ONSTACK too) to
 * the main thread all the while, so that some arrive while a probe handler
 * runs for work(): their frames must not land over the live frames on the
 * alternate stack. Prints the calls made and the pattern checks that failed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char altstk[256 << 10];
static volatile long usr2, bad, calls;
static volatile int stop;
static pid_t main_tid;

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static void on_usr2(int s)
{
	usr2++;
}

static void on_usr1(int s)
{
	volatile char buf[2048];
	for (int i = 0; i < 2048; i++)
		buf[i] = (char)(i * 7);
	long r = work(41);
	for (int i = 0; i < 2048; i++)
		if (buf[i] != (char)(i * 7)) {
			bad++;
			break;
		}
	if (r != 42)
		bad++;
	calls++;
}

static void *spam(void *a)
{
	while (!stop)
		syscall(SYS_tgkill, getpid(), main_tid, SIGUSR2);
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	main_tid = syscall(SYS_gettid);
	stack_t ss = { .ss_sp = altstk, .ss_size = sizeof altstk };
	sigaltstack(&ss, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, 0);
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_ONSTACK | SA_RESTART;
	sigaction(SIGUSR2, &sa, 0);
	pthread_t t;
	pthread_create(&t, 0, spam, 0);
	for (int i = 0; i < n; i++)
		raise(SIGUSR1);
	stop = 1;
	pthread_join(t, 0);
	printf("calls=%ld bad=%ld\n", calls, bad);
	return 0;
}
