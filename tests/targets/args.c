/* args: calls sum6(1..6) and a 7-argument function (one stack argument). */
#include <stdio.h>

__attribute__((noinline)) long sum6(long a, long b, long c, long d, long e, long f)
{
	__asm__ volatile("" ::: "memory");
	return a + b + c + d + e + f;
}

__attribute__((noinline)) long sum7(long a, long b, long c, long d, long e, long f, long g)
{
	__asm__ volatile("" ::: "memory");
	return a + b + c + d + e + f + g;
}

int main(void)
{
	long r = sum6(1, 2, 3, 4, 5, 6);
	long s = sum7(10, 20, 30, 40, 50, 60, 70);
	printf("sum6=%ld sum7=%ld\n", r, s);
	return 0;
}
