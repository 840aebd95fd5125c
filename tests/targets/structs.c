/* structs: target-variable expressions on structs, arrays and strings.
 * `structs N` calls visit() N times on a two-node list; `structs N bad`
 * then calls visit() with an unmapped pointer (a probe reading $p->x must
 * get an error, and the target must go on). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct inner {
	short a;
	unsigned char b;
};

struct pt {
	int x;
	int y;
	const char *name;
	struct inner in;
	int arr[4];
	char label[8];
	struct pt *next;
};

__attribute__((noinline)) int visit(struct pt *p, int scale, const char *tag)
{
	__asm__ volatile("" ::: "memory");
	if (!p || (unsigned long)p < 4096)
		return -1;
	return p->x * scale + (int)strlen(tag);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	struct pt second = { .x = -5, .y = 6, .name = NULL, .in = { -2, 200 }, .arr = { 9, 8, 7, 6 }, .label = "two", .next = NULL };
	struct pt first = { .x = 1, .y = 2, .name = "first \"one\"", .in = { 3, 4 }, .arr = { 10, 20, 30, 40 }, .label = "one", .next = &second };
	long sum = 0;
	for (int i = 0; i < n; i++) {
		first.x = i + 1;
		sum += visit(&first, i, "tag");
	}
	if (argc > 2 && strcmp(argv[2], "bad") == 0)
		sum += visit((struct pt *)16, 1, "bad");
	printf("sum=%ld\n", sum);
	return 0;
}

/* Globals for `@var`: a struct with a string, and a file-static array. */
struct pt origin = { .x = 7, .y = -8, .name = "origin", .in = { 1, 2 }, .arr = { 4, 3, 2, 1 }, .label = "org", .next = NULL };
static __attribute__((used)) int table[3] = { 11, 22, 33 };
