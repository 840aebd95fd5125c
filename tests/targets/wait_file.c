/* wait_file PATH SECS [CODE]: calls work() (10 calls about every millisecond,
 * at least once) until PATH exists, then exits with CODE (default 0); gives up after SECS seconds
 * (exit 3). Prints work()'s first code bytes before the loop and after it,
 * so a test can see that a detached ptap left the code as it found it. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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
