/* tailcall: outer() ends with a tail call (a jmp) into leaf(), so that
 * leaf is entered with outer's caller's return address on the stack. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long leaf(long x)
{
	asm volatile("" ::: "memory");
	return x * 2;
}

__attribute__((noinline)) long outer(long x)
{
	asm volatile("" ::: "memory");
	return leaf(x + 1);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	long sum = 0;
	for (int i = 0; i < n; i++)
		sum += outer(i);
	printf("sum=%ld\n", sum);
	return 0;
}
