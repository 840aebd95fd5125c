/* serve_work STOPFILE SECS: calls setup(1, 10) 3 times, setup(2, 100) 5 times
 * and setup(3, 1000) 7 times, then work() about 1,000 times a second until
 * STOPFILE exists (exit 0) or SECS seconds pass (exit 3). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long setup(long key, long size)
{
	__asm__ volatile("" ::: "memory");
	return key + size;
}

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: serve_work STOPFILE SECS\n");
		return 2;
	}
	long s = 0;
	for (int i = 0; i < 3; i++)
		s += setup(1, 10);
	for (int i = 0; i < 5; i++)
		s += setup(2, 100);
	for (int i = 0; i < 7; i++)
		s += setup(3, 1000);
	time_t end = time(NULL) + atol(argv[2]);
	struct timespec ms = { 0, 1000000 };
	while (access(argv[1], F_OK) != 0) {
		if (time(NULL) > end)
			return 3;
		s += work(s);
		nanosleep(&ms, NULL);
	}
	printf("serve_work done\n");
	return 0;
}
