/* wait_threads PATH SECS CODE T: T threads call work() (about every half
 * millisecond) until PATH exists; the main thread waits for them in
 * pthread_join, then exits with CODE. Gives up after SECS seconds (exit 3).
 * Prints work()'s first code bytes before and after (see wait_file.c), and
 * how many threads ran. For `ptap -x` tests: the process is attached to
 * while its threads run and its main thread is blocked in a system call. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static time_t end;
static volatile int timed_out;

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

static void *run(void *arg)
{
	long calls = 0, sum = 0;
	(void)arg;
	for (;;) {
		sum += work(calls++);
		if (access(path, F_OK) == 0)
			break;
		if (time(NULL) > end) {
			timed_out = 1;
			break;
		}
		usleep(500);
	}
	return (void *)(sum != 0 ? calls : 0);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: wait_threads PATH SECS CODE T\n");
		return 2;
	}
	path = argv[1];
	end = time(NULL) + atol(argv[2]);
	int code = atoi(argv[3]);
	int t = atoi(argv[4]);
	if (t < 1 || t > 64)
		t = 4;
	pthread_t th[64];
	code_bytes("before");
	for (int i = 0; i < t; i++)
		pthread_create(&th[i], NULL, run, NULL);
	int ran = 0;
	for (int i = 0; i < t; i++) {
		void *r;
		pthread_join(th[i], &r);
		ran += r != NULL;
	}
	if (timed_out) {
		printf("timed out\n");
		return 3;
	}
	code_bytes("after");
	printf("threads ran: %d\n", ran);
	return code;
}
