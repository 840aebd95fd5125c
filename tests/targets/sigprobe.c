/* sigprobe N: calls work(i) N times, each under sigsetjmp; a probe handler on
 * work (runtime/tests/modules/sigprobe.c) raises SIGUSR1, whose handler
 * siglongjmps: if the signal were delivered inside the probe handler, the
 * jump would abandon the runtime's hit path. Then after(i) N times, plainly,
 * and one real SIGSEGV that the target's own handler catches (siglongjmp). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static sigjmp_buf env;
static void on_sig(int sig) { siglongjmp(env, sig); }

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2 + 1;
}

__attribute__((noinline)) long after(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5, jumps = 0, segv = 0;
	long sum = 0;
	signal(SIGUSR1, on_sig);
	signal(SIGSEGV, on_sig);
	for (int i = 0; i < n; i++)
		if (!sigsetjmp(env, 1))
			sum += work(i);
		else
			jumps++;
	for (int i = 0; i < n; i++)
		sum += after(i);
	if (sigsetjmp(env, 1) == 0)
		*(volatile int *)(long)(n - n) = 1;
	else
		segv = 1;
	printf("jumps=%d segv_caught=%d sum=%ld\n", jumps, segv, sum);
	return 0;
}
