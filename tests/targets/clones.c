/* clones: GCC specialises scale() for its constant argument (scale.constprop.0)
 * and drops the original: the function is only known by its clone's name. */
#include <stdio.h>
#include <stdlib.h>

static __attribute__((noinline)) long scale(long x, long k)
{
	asm volatile("" ::: "memory");
	return x * k + (x >> 3);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	long sum = 0;
	for (int i = 0; i < n; i++)
		sum += scale(i, 7);
	printf("sum=%ld\n", sum);
	return 0;
}
