/* nested: main -> outer -> work, for backtraces through a kretprobed frame. */
#include <stdio.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 3;
}

__attribute__((noinline)) long outer(long x)
{
	long r = work(x);
	__asm__ volatile("" ::: "memory");
	return r + 1;
}

int main(void)
{
	printf("outer=%ld\n", outer(5));
	return 0;
}
