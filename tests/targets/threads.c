/* threads T N: T threads each call work() N times; prints the total calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long n;
__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static void *run(void *arg)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += work(i);
	return (void *)s;
}

int main(int argc, char **argv)
{
	int t = argc > 1 ? atoi(argv[1]) : 8;
	n = argc > 2 ? atol(argv[2]) : 1000;
	pthread_t th[64];
	if (t > 64)
		t = 64;
	for (int i = 0; i < t; i++)
		pthread_create(&th[i], NULL, run, NULL);
	long total = 0;
	for (int i = 0; i < t; i++) {
		void *r;
		pthread_join(th[i], &r);
		total += (long)r;
	}
	printf("calls=%ld total=%ld\n", (long)t * n, total);
	return 0;
}
