/* kret_exit N [raw]: N threads, one after the other, each with a cleanup
 * handler pushed, call f(1), which calls pthread_exit (f is the function
 * a kretprobe watches); then the main thread calls f(0) 10 times.
 * Prints how many cleanup handlers ran and the sum of f(0)'s results.
 * raw: f(1) ends the thread with a raw SYS_exit instead (no unwinding, no
 * cleanup handlers), and the main thread waits 2.5 s before its calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile int cleanups, raw;

__attribute__((noinline)) long f(long do_exit)
{
	__asm__ volatile("" ::: "memory");
	if (do_exit && raw)
		for (;;)
			syscall(SYS_exit, 0);
	if (do_exit)
		pthread_exit(NULL);
	return 7;
}

static void cleanup(void *arg)
{
	(void)arg;
	__atomic_fetch_add(&cleanups, 1, __ATOMIC_RELAXED);
}

static void *thread_main(void *arg)
{
	(void)arg;
	pthread_cleanup_push(cleanup, NULL);
	f(1);
	pthread_cleanup_pop(0);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 8;
	raw = argc > 2 && !strcmp(argv[2], "raw");
	for (int i = 0; i < n; i++) {
		pthread_t t;
		pthread_create(&t, NULL, thread_main, NULL);
		pthread_join(t, NULL);
	}
	if (raw)
		usleep(2500 * 1000);
	long sum = 0;
	for (int i = 0; i < 10; i++)
		sum += f(0);
	printf("cleanups=%d sum=%ld\n", cleanups, sum);
	return 0;
}
