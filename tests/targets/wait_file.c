/* wait_file PATH SECS [CODE [remap]]: calls work() (10 calls about every millisecond,
 * at least once) until PATH exists, then exits with CODE (default 0); gives up after SECS seconds
 * (exit 3). Prints work()'s first code bytes before the loop and after it,
 * so a test can see that a detached ptap left the code as it found it.
 * With `remap`, it first maps its own executable and libc a second time,
 * read-only and below where they are loaded, as a program that reads ELF
 * files (a backtrace symbolizer) does. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Map PATH whole, read-only, at HINT (exactly there, or fail). */
static void map_again(const char *path, unsigned long hint)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		exit(4);
	}
	off_t size = lseek(fd, 0, SEEK_END);
	void *p = mmap((void *)hint, size, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
	if (p == MAP_FAILED || p != (void *)hint) {
		perror("mmap");
		exit(4);
	}
	close(fd);
}

static void remap(void)
{
	char line[4096], libc[4096] = "";
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof line, f)) {
		char *path = strchr(line, '/');
		if (path && strstr(path, "/libc.so")) {
			path[strcspn(path, "\n")] = 0;
			strcpy(libc, path);
			break;
		}
	}
	if (f)
		fclose(f);
	if (!libc[0]) {
		fprintf(stderr, "no libc mapped\n");
		exit(4);
	}
	map_again("/proc/self/exe", 0x10000000UL);
	map_again(libc, 0x20000000UL);
}

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 3 + 1;
}

static void code_bytes(const char *tag)
{
	const unsigned char *p = (const unsigned char *)work;
	printf("%s=", tag);
	for (int i = 0; i < 8; i++)
		printf("%02x", p[i]);
	printf("\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: wait_file PATH SECS [CODE]\n");
		return 2;
	}
	const char *path = argv[1];
	time_t end = time(NULL) + atol(argv[2]);
	int code = argc > 3 ? atoi(argv[3]) : 0;
	if (argc > 4 && !strcmp(argv[4], "remap"))
		remap();
	long calls = 0, sum = 0;
	code_bytes("before");
	for (;;) {
		for (int i = 0; i < 10; i++, calls++)
			sum += work(i);
		if (access(path, F_OK) == 0)
			break;
		if (time(NULL) > end) {
			printf("timed out\n");
			return 3;
		}
		usleep(1000);
	}
	code_bytes("after");
	printf("done calls>=10: %d sum=%ld\n", calls >= 10, sum);
	return code;
}
