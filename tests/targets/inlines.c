/* inlines: a static function GCC inlines into two callers (no copy of its
 * own), for `kprobe("square@inlines.c")` and its lines. `inlines N` calls
 * both callers N times. */
#include <stdio.h>
#include <stdlib.h>

static inline int square(int v)
{
	int r = v * v;
	__asm__ volatile("" : "+r"(r));
	return r + 1;
}

__attribute__((noinline)) int first(int x)
{
	return square(x) + 1;
}

__attribute__((noinline)) int second(int x)
{
	return square(x + 3) * 2;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	long sum = 0;
	for (int i = 0; i < n; i++)
		sum += first(i) + second(i);
	printf("sum=%ld\n", sum);
	return 0;
}
