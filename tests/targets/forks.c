/* forks: the child (a fork, no exec) calls work() 3 times, the parent 2 times.
 * forks MS: the child calls work() for MS milliseconds instead. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	long ms = argc > 1 ? atol(argv[1]) : 0;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		if (ms) {
			double end = now_ms() + ms;
			while (now_ms() < end)
				work(1);
		}
		for (int i = 0; i < 3; i++)
			work(i);
		return 0;
	}
	int st;
	waitpid(pid, &st, 0);
	for (int i = 0; i < 2; i++)
		work(i);
	printf("child_status=%d\n", WEXITSTATUS(st));
	return 0;
}
