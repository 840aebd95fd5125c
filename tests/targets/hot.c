/* hot N: calls work(i) N times (a function worth probing), prints the sum. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2 + 1;
}

/* A function whose first instruction is a rip-relative load. */
long counter;
__attribute__((noinline)) long bump(long x)
{
	counter += x;
	return counter;
}

/* A LOCAL symbol (only in .symtab): kallsyms_lookup_name must find it. */
static __attribute__((noinline, used)) int local_helper(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 7;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10, sum = 0;
	for (long i = 0; i < n; i++)
		sum += work(i);
	for (long i = 0; i < n; i++)
		bump(i);
	if (argc > 2)
		sum += local_helper(argc);
	printf("sum=%ld counter=%ld\n", sum, counter);
	return 0;
}
