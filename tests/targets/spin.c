/* spin T MS: T threads call work() in a loop for MS milliseconds. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long ms;
__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *run(void *arg)
{
	double end = now() + ms;
	long calls = 0;
	while (now() < end)
		for (int i = 0; i < 100; i++)
			calls += work(i) > 0;
	return (void *)calls;
}

int main(int argc, char **argv)
{
	int t = argc > 1 ? atoi(argv[1]) : 4;
	ms = argc > 2 ? atol(argv[2]) : 500;
	pthread_t th[64];
	for (int i = 0; i < t && i < 64; i++)
		pthread_create(&th[i], NULL, run, NULL);
	long total = 0;
	for (int i = 0; i < t && i < 64; i++) {
		void *r;
		pthread_join(th[i], &r);
		total += (long)r;
	}
	printf("spin_calls=%ld\n", total);
	return 0;
}
