/* forks: the child (a fork, no exec) calls work() 3 times, the parent 2 times. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(void)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
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
