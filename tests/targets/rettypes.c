/* rettypes: functions returning int, short, unsigned, char *, a pointer to
 * a struct and void, for kretprobes that read the return value by its
 * DWARF type (`ret`, `$return`). */
#include <stdio.h>
#include <stdlib.h>

struct pt {
	int x, y;
};

static struct pt origin = {3, 4};
static const char *names[] = {"zero", "one", "two"};

__attribute__((noinline)) int neg(int x)
{
	asm volatile("" ::: "memory");
	return -x;
}

__attribute__((noinline)) short small(int x)
{
	asm volatile("" ::: "memory");
	return (short)(x - 2);
}

__attribute__((noinline)) unsigned big(int x)
{
	asm volatile("" ::: "memory");
	return 0xfffffff0u + (unsigned)x;
}

__attribute__((noinline)) const char *name_of(int x)
{
	asm volatile("" ::: "memory");
	return names[x % 3];
}

__attribute__((noinline)) struct pt *where(int x)
{
	asm volatile("" ::: "memory");
	origin.x += x;
	return &origin;
}

__attribute__((noinline)) void nothing(int x)
{
	asm volatile("" : : "r"(x) : "memory");
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 3;
	long sum = 0;
	for (int i = 1; i <= n; i++) {
		sum += neg(i) + small(i) + (long)big(i);
		sum += name_of(i)[0] + where(i)->y;
		nothing(i);
	}
	printf("sum=%ld\n", sum);
	return 0;
}
