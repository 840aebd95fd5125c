/* fds MODE N [PATH]: the runtime's descriptors are out of the target's way.
 *   first: prints the number its first open() returns ("first_fd=3"
 *          without ptap), then calls work() N times.
 *   close: calls work() N times, closes every descriptor above 2
 *          (close_range(3, ~0U, 0)), then opens PATH and duplicates it onto
 *          every number from 3 to 1023 (a descriptor the runtime kept and
 *          now uses would write into PATH), calls work() N times more.
 *   exec:  as close, then execs itself as "fds first N" (a child that
 *          needs the session after its parent closed the descriptor).
 * Prints calls=N for the work() calls of this process. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
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
	long n = atol(argv[2]), calls = 0;
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(argv[1], "first")) {
		int fd = open("/dev/null", O_RDONLY);
		printf("first_fd=%d\n", fd);
		for (long i = 0; i < n; i++)
			calls += work(i) > 0;
		printf("calls=%ld\n", calls);
		return 0;
	}
	for (long i = 0; i < n; i++)
		calls += work(i) > 0;
	if (syscall(SYS_close_range, 3, ~0U, 0) != 0) {
		perror("close_range");
		return 1;
	}
	int v = open(argv[3], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (v < 0) {
		perror(argv[3]);
		return 1;
	}
	for (int fd = 3; fd < 1024; fd++)
		if (fd != v)
			dup2(v, fd);
	for (long i = 0; i < n; i++)
		calls += work(i) > 0;
	printf("calls=%ld\n", calls);
	if (strcmp(argv[1], "exec"))
		return 0;
	/* The exec'd child must not inherit the victim descriptors. */
	for (int fd = 3; fd < 1024; fd++)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	execl("/proc/self/exe", argv[0], "first", argv[2], (char *)NULL);
	perror("exec");
	return 1;
}
