/* sleepy_opens FLAG SECS: a thread that sleeps most of the time, as a
 * server loop around usleep does: every 100 ms it calls work() and opens a
 * file that does not exist, until FLAG exists (exit 0) or SECS seconds
 * passed (exit 3). Prints "ready" first. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	long secs = atol(argv[2]);
	printf("ready\n");
	fflush(stdout);
	for (long i = 0; i < secs * 10; i++) {
		if (access(argv[1], F_OK) == 0)
			return 0;
		int fd = open("/nonexistent/sleepy", O_RDONLY);
		if (fd >= 0)
			close(fd);
		work(i);
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, 0);
	}
	return 3;
}
