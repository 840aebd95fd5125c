/* fib N: recursive Fibonacci (fib(20) makes 21891 calls). */
#include <stdio.h>
#include <stdlib.h>

long calls;

/* The asm barriers keep gcc from turning one of the two recursive calls
 * into a loop: every fib(k) is a real call (fib(20) makes 21891 calls). */
__attribute__((noinline)) long fib(long n)
{
	calls++;
	if (n < 2)
		return n;
	long a = fib(n - 1);
	__asm__ volatile("" : "+r"(a));
	long b = fib(n - 2);
	__asm__ volatile("" : "+r"(b));
	return a + b;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20;
	long r = fib(n);
	printf("fib(%ld)=%ld calls=%ld\n", n, r, calls);
	return 0;
}
