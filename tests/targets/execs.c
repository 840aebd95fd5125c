/* execs: a forked child execs `/bin/true x`; the parent then tries
 * /nonexistent/prog (ENOENT) and finally execs `/bin/echo hi`. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	char *t[] = { "/bin/true", "x", NULL };
	if (fork() == 0) {
		execv(t[0], t);
		_exit(127);
	}
	wait(NULL);
	char *bad[] = { "/nonexistent/prog", NULL };
	execv(bad[0], bad);
	char *e[] = { "/bin/echo", "hi", NULL };
	execv(e[0], e);
	return 1;
}
