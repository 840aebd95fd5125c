/* vm_child MS: a child made by clone(CLONE_VM) without CLONE_THREAD (as
 * posix_spawn makes its child: another process sharing this memory, with
 * no TLS of its own) calls slow(MS), which sleeps MS milliseconds with raw
 * system calls and returns MS; the child then _exits with slow's value
 * modulo 256. The parent prints "child exit: N", then calls slow(MS) itself
 * and prints "parent: MS". */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline, used)) long slow(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	syscall(SYS_nanosleep, &ts, NULL);
	__asm__ volatile("" ::: "memory");
	return ms;
}

static long ms;

static int child(void *arg)
{
	(void)arg;
	syscall(SYS_exit, (int)(slow(ms) & 255));
	return 0;
}

int main(int argc, char **argv)
{
	ms = argc > 1 ? atol(argv[1]) : 1500;
	size_t size = 1 << 20;
	char *stack = malloc(size);
	if (!stack)
		return 2;
	pid_t pid = clone(child, stack + size, CLONE_VM | SIGCHLD, NULL);
	if (pid < 0)
		return 3;
	int st = 0;
	if (waitpid(pid, &st, 0) != pid)
		return 4;
	if (WIFEXITED(st))
		printf("child exit: %d\n", WEXITSTATUS(st));
	else
		printf("child killed by signal %d\n", WTERMSIG(st));
	fflush(stdout);
	printf("parent: %ld\n", slow(ms));
	return 0;
}
