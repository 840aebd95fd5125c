/* sigsys_own N: the program's own SIGSYS handler (installed without
 * SA_NODEFER) makes a system call with an inline `syscall` instruction
 * (outside libc); SIGSYS is raised N times. Under system call probes that
 * call traps with SIGSYS itself, which must not be blocked then.
 * Prints "sigsys=N ppid_ok=1". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile long got, n;

static long raw_getppid(void)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory");
	return r;
}

static void on_sys(int sig)
{
	got = raw_getppid();
	n++;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 10;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sys;
	sigaction(SIGSYS, &sa, NULL);
	for (long i = 0; i < count; i++)
		raise(SIGSYS);
	printf("sigsys=%ld ppid_ok=%d\n", n, got == getppid());
	return 0;
}
