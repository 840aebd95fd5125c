/* sigjump N: N times, kill(getpid(), SIGUSR1) whose handler siglongjmps back
 * (leaving kill() between its syscall and its return). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static sigjmp_buf env;
static void on_usr1(int sig) { siglongjmp(env, 1); }

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5, jumps = 0;
	signal(SIGUSR1, on_usr1);
	for (int i = 0; i < n; i++)
		if (!sigsetjmp(env, 1))
			kill(getpid(), SIGUSR1);
		else
			jumps++;
	printf("jumps=%d\n", jumps);
	return 0;
}
