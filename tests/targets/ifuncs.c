/* ifuncs: calls glibc's strrchr (an IFUNC: the symbol's code is a
 * resolver, the calls go to the implementation it selected) n times. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	const char *path = argc > 2 ? argv[2] : "/usr/lib/x86_64-linux-gnu/libc.so.6";
	long sum = 0;
	for (int i = 0; i < n; i++) {
		const char *volatile p = path;
		sum += strrchr(p, '/') - p;
	}
	printf("sum=%ld\n", sum);
	return 0;
}
