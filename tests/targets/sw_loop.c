/* sw_loop: a long-running process for system-wide probes. Each stdin line
 * "w N" calls work(i) for i < N; "s N" makes N getppid() system calls;
 * then it prints "done". It exits at end of input. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2 + 1;
}

int main(void)
{
	char line[64];
	long sum = 0;
	while (fgets(line, sizeof line, stdin)) {
		long n = atol(line + 1);
		for (long i = 0; i < n; i++) {
			if (line[0] == 'w')
				sum += work(i);
			else
				syscall(SYS_getppid);
		}
		printf("done %ld\n", sum);
		fflush(stdout);
	}
	return 0;
}
