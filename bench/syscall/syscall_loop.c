/* syscall_loop N: times N getppid calls, then N getpid calls, each through
 * an inline `syscall` instruction (no libc wrapper, no vDSO), then the same
 * through libc's getppid() and getpid() wrappers, and prints ns per call of
 * each. Under bench/syscall/run, getppid is the probed call and getpid the
 * unprobed one. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline long sys0(long nr)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(nr) : "rcx", "r11", "memory");
	return r;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200000, s = 0;
	double a = now();
	for (long i = 0; i < n; i++)
		s += sys0(110); /* getppid */
	double b = now();
	for (long i = 0; i < n; i++)
		s += sys0(39); /* getpid */
	double c = now();
	for (long i = 0; i < n; i++)
		s += getppid();
	double d = now();
	for (long i = 0; i < n; i++)
		s += getpid();
	double e = now();
	printf("getppid_ns=%.1f getpid_ns=%.1f libc_getppid_ns=%.1f libc_getpid_ns=%.1f check=%ld\n", (b - a) / n,
	       (c - b) / n, (d - c) / n, (e - d) / n, s & 1);
	return 0;
}
