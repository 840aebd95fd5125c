/* maps_count: prints how many lines of /proc/self/maps name this program's
 * file and libc's ("exe=N libc=M"), after calling work() once. A probed run
 * must show the same numbers as a plain one: nothing ptap does may leave
 * another mapping of a loaded object behind (tools that read the maps, ptap
 * itself when it attaches again, take such a mapping for the object). */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	long r = work(1);
	const char *self = strrchr(argv[0], '/');
	self = self ? self + 1 : argv[0];
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	int exe = 0, libc = 0;
	while (f && fgets(line, sizeof line, f)) {
		const char *path = strchr(line, '/');
		if (!path)
			continue;
		const char *base = strrchr(path, '/') + 1;
		size_t n = strlen(self);
		if (!strncmp(base, self, n) && (base[n] == '\n' || base[n] == ' '))
			exe++;
		if (strstr(base, "libc.so"))
			libc++;
	}
	if (f)
		fclose(f);
	printf("exe=%d libc=%d work=%ld\n", exe, libc, r);
	return 0;
}
