/* fork_reg: one thread registers and unregisters a kprobe on work() in a
 * loop (dlsym'ed register_kprobe) while the main thread forks 40
 * children; each child calls work() and exits normally (the runtime's
 * cleanup runs in it). A child that inherited a runtime lock held by the
 * registering thread would hang at exit: the parent kills children that
 * take longer than 5 s and counts them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

/* struct kprobe prefix large enough for the runtime (see ptap/kprobes.h). */
struct kp {
	char bytes[512];
};
static volatile int stop;

static void *registrar(void *arg)
{
	(void)arg;
	int (*reg)(void *) = (int (*)(void *))dlsym(RTLD_DEFAULT, "register_kprobe");
	void (*unreg)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "unregister_kprobe");
	if (!reg || !unreg)
		return NULL;
	static struct kp k;
	while (!stop) {
		memset(&k, 0, sizeof k);
		*(void **)k.bytes = (void *)work; /* addr is the first field */
		if (reg(&k) == 0)
			unreg(&k);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, NULL, registrar, NULL);
	int ok = 0, hung = 0;
	for (int i = 0; i < 40; i++) {
		pid_t c = fork();
		if (c == 0) {
			work(i);
			exit(0);
		}
		int st = 0, done = 0;
		for (int ms = 0; ms < 5000 && !done; ms++) {
			if (waitpid(c, &st, WNOHANG) == c)
				done = 1;
			else
				usleep(1000);
		}
		if (!done) {
			kill(c, SIGKILL);
			waitpid(c, &st, 0);
			hung++;
		} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			ok++;
		}
	}
	stop = 1;
	pthread_join(t, NULL);
	printf("children_ok=%d hung=%d\n", ok, hung);
	return 0;
}
