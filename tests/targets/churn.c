/* churn N: N short-lived threads, one after the other, each calling work()
 * once (more threads than the runtime's thread table has slots). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static void *run(void *arg)
{
	return (void *)work((long)arg);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100, sum = 0;
	for (long i = 0; i < n; i++) {
		pthread_t t;
		void *r;
		if (pthread_create(&t, NULL, run, (void *)i))
			return 1;
		pthread_join(t, &r);
		sum += (long)r;
	}
	printf("threads=%ld sum=%ld\n", n, sum);
	return 0;
}
