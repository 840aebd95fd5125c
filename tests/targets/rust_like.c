/* rust_like N: like a Rust (or Go) program, every thread runs with a small
 * signal alternate stack (MINSIGSTKSZ-ish, 8 KiB); threads call work(). */
#include <pthread.h>
#include <signal.h>
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
	stack_t ss = { .ss_sp = malloc(8192), .ss_size = 8192 };
	sigaltstack(&ss, NULL);
	long s = 0;
	for (long i = 0; i < n; i++)
		s += work(i);
	return (void *)s;
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atol(argv[1]) : 10;
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, run, NULL);
	long total = 0;
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		total += (long)r;
	}
	run(NULL);
	printf("total=%ld\n", total);
	return 0;
}
