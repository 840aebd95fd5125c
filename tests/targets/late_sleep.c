/* late_sleep: two threads block in calls that any signal handler would
 * end with EINTR (nanosleep, poll) when the program registers its own
 * syscall probe (dlsym'ed register_syscall_probe, on openat). The calls
 * must complete as without probes (no EINTR); after waking, each thread
 * runs for a while in user space, then opens /nonexistent/sleepI, which
 * the probe must see (the thread was armed after it woke). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct late_probe {
	const int *nrs;
	int n;
	int (*entry)(void *, unsigned long *);
	int (*ret)(void *, unsigned long *);
	unsigned long nmissed;
	unsigned int flags;
	void *data;
	void *priv[2];
};
static volatile int seen;
static int rc[2], err[2];

static int on_ret(void *p, unsigned long *regs)
{
	(void)p;
	const char *path = (const char *)regs[13]; /* si */
	if (path && !strncmp(path, "/nonexistent/sleep", 18))
		__atomic_fetch_add(&seen, 1, __ATOMIC_RELAXED);
	return 0;
}

static void spin_ms(int ms)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < ms);
}

static void *sleeper(void *arg)
{
	long i = (long)arg;
	errno = 0;
	if (i == 0) {
		struct timespec ts = { 0, 400 * 1000 * 1000 };
		rc[i] = nanosleep(&ts, NULL);
	} else {
		rc[i] = poll(NULL, 0, 400);
	}
	err[i] = errno;
	spin_ms(200);
	char path[64];
	snprintf(path, sizeof path, "/nonexistent/sleep%ld", i);
	open(path, O_RDONLY);
	return NULL;
}

int main(void)
{
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, sleeper, (void *)i);
	usleep(100 * 1000);
	static const int nrs[] = { 257 };
	static struct late_probe p = { .nrs = nrs, .n = 1, .ret = on_ret };
	int (*reg)(struct late_probe *) = (int (*)(struct late_probe *))dlsym(RTLD_DEFAULT, "register_syscall_probe");
	int r = reg ? reg(&p) : -1;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("registered=%d nanosleep_rc=%d nanosleep_errno=%d poll_rc=%d poll_errno=%d seen=%d\n", r, rc[0],
	       err[0], rc[1], err[1], seen);
	return 0;
}
