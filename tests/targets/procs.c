/* procs P T N: P processes (forks, no exec) of T threads each; thread t of
 * process p calls work(k) for the N keys k = (p*T + t)*N .. +N-1, so every
 * call in the whole run has a distinct argument. Prints the total calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static long n;
static long first;

static void *run(void *arg)
{
	long base = first + (long)arg * n, s = 0;
	for (long i = 0; i < n; i++)
		s += work(base + i);
	return (void *)s;
}

static void process(long p, int t)
{
	pthread_t th[64];
	first = p * t * n;
	for (long i = 0; i < t; i++)
		pthread_create(&th[i], NULL, run, (void *)i);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
}

int main(int argc, char **argv)
{
	int p = argc > 1 ? atoi(argv[1]) : 2;
	int t = argc > 2 ? atoi(argv[2]) : 4;
	n = argc > 3 ? atol(argv[3]) : 1000;
	if (t > 64)
		t = 64;
	fflush(stdout);
	for (long i = 1; i < p; i++)
		if (fork() == 0) {
			process(i, t);
			return 0;
		}
	process(0, t);
	for (long i = 1; i < p; i++)
		wait(NULL);
	printf("calls=%ld\n", (long)p * t * n);
	return 0;
}
