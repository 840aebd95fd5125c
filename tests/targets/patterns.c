/* patterns N: calls pat_one() and pat_two() N times each. pat_trap() (never
 * called) starts with an instruction the probe layer refuses to displace
 * (int3), so a wildcard over pat_* has a site that cannot be probed. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long pat_one(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

__attribute__((noinline)) long pat_two(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 2;
}

__asm__(".text\n"
	".globl pat_trap\n"
	".type pat_trap, @function\n"
	"pat_trap:\n"
	"\tint3\n"
	"\tret\n"
	".size pat_trap, .-pat_trap\n");

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 3, sum = 0;
	for (long i = 0; i < n; i++)
		sum += pat_one(i) + pat_two(i);
	printf("sum=%ld\n", sum);
	return 0;
}
