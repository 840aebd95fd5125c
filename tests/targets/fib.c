/* fib N [SECS]: recursive Fibonacci (fib(20) makes 21891 calls). With
 * SECS, computes fib(N) over and over for SECS seconds (a long-running
 * target that keeps hitting its probes). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
	if (argc > 2) {
		time_t end = time(NULL) + atol(argv[2]);
		while (time(NULL) < end)
			r = fib(n);
	}
	printf("fib(%ld)=%ld calls=%ld\n", n, r, calls);
	return 0;
}
