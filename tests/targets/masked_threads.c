/* masked_threads FLAG SECS CODE [late]: the common server pattern: main blocks
 * every signal before it starts its workers (they inherit the mask), and
 * sigwait()s in a thread of its own; main then unblocks them again. Two workers call work() (whose first
 * instruction is a call: a trap-path site) until FLAG exists; with "late",
 * each worker then blocks every signal again (pthread_sigmask and
 * sigprocmask, as after an attach) and calls work() 1000 times. Prints
 * "ready" once the workers run, "done calls>=1000: 1" at the end, and exits
 * with CODE (3 after SECS seconds without FLAG). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long calls;

__attribute__((noinline, used)) long helper(long x)
{
	__asm__ volatile("" ::: "memory");
	__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
	return x + 1;
}

long work(long x);
__asm__(".text\n"
	".globl work\n"
	".type work,@function\n"
	"work:\n"
	"	call helper\n"
	"	ret\n"
	".size work, .-work\n");

static const char *flag;
static volatile int stop;
static time_t deadline;
static int late;

static void *worker(void *arg)
{
	struct timespec ts = { 0, 200000 };
	while (!stop && time(NULL) < deadline) {
		for (int i = 0; i < 10; i++)
			work(i);
		nanosleep(&ts, NULL);
	}
	if (late) {
		/* After an attach: block everything again, through libc. */
		sigset_t all;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, NULL);
		sigprocmask(SIG_BLOCK, &all, NULL);
		for (int i = 0; i < 1000; i++)
			work(i);
	}
	return arg;
}

static void *waiter(void *arg)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	int sig;
	sigwait(&set, &sig);
	return arg;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	late = argc > 4 && !strcmp(argv[4], "late");
	flag = argv[1];
	deadline = time(NULL) + atoi(argv[2]);
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_t w[2], s;
	pthread_create(&s, NULL, waiter, NULL);
	pthread_create(&w[0], NULL, worker, NULL);
	pthread_create(&w[1], NULL, worker, NULL);
	/* main itself handles signals again (ptap -x calls into it). */
	pthread_sigmask(SIG_UNBLOCK, &all, NULL);
	printf("ready\n");
	fflush(stdout);
	while (access(flag, F_OK) != 0 && time(NULL) < deadline)
		usleep(1000);
	int late = time(NULL) >= deadline;
	stop = 1;
	pthread_join(w[0], NULL);
	pthread_join(w[1], NULL);
	pthread_kill(s, SIGUSR1);
	pthread_join(s, NULL);
	printf("done calls>=1000: %d\n", calls >= 1000);
	return late ? 3 : atoi(argv[3]);
}
