/* exit: leave_now() calls exit(3) from inside (a kretprobed function never returns). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

__attribute__((noinline)) void leave_now(int code)
{
	printf("leaving with %d\n", code);
	fflush(stdout);
	exit(code);
}

int main(void)
{
	work(1);
	leave_now(3);
	return 0;
}
