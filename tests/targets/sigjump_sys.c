/* sigjump_sys N: a SIGALRM handler that siglongjmps; calls getppid()
 * once under sigsetjmp, then N more times; prints how many jumps happened. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile int jumps;

static void on_alrm(int sig)
{
	(void)sig;
	jumps++;
	siglongjmp(env, 1);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5;
	signal(SIGALRM, on_alrm);
	if (sigsetjmp(env, 1) == 0)
		getppid();
	for (int i = 0; i < n; i++)
		getppid();
	printf("jumps=%d\n", jumps);
	fflush(stdout);
	return 0;
}
