/* fib N: recursive Fibonacci (fib(20) makes 21891 calls). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long fib(long n)
{
	__asm__ volatile("" ::: "memory");
	if (n < 2)
		return n;
	return fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20;
	printf("fib(%ld)=%ld\n", n, fib(n));
	return 0;
}
