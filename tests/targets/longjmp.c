/* longjmp: jumper() is left by longjmp 100 times, then returns normally 10 times. */
#include <setjmp.h>
#include <stdio.h>

static jmp_buf env;

__attribute__((noinline)) long jumper(long x)
{
	__asm__ volatile("" ::: "memory");
	if (x & 1)
		longjmp(env, 1);
	return x;
}

int main(void)
{
	int jumps = 0;
	for (int i = 0; i < 100; i++)
		if (!setjmp(env))
			jumper(1);
		else
			jumps++;
	long s = 0;
	for (int i = 0; i < 10; i++)
		s += jumper(2 * i);
	printf("jumps=%d sum=%ld\n", jumps, s);
	return 0;
}
