/* blockexec PROG ARGS...: runs PROG with every signal blocked, as a parent
 * (a supervisor, a shell in a signal handler) may leave it: the mask is
 * set with the raw system call (no libc function a runtime could
 * interpose), then PROG is exec'ed. */
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	unsigned long all = ~0UL;
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, 8);
	execvp(argv[1], argv + 1);
	perror(argv[1]);
	return 127;
}
