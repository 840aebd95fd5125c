/* workload: a small, deterministic mix of what the examples/ tools watch.
 * - opens: /etc/hostname (ok), /nonexistent/a and /nonexistent/b (ENOENT),
 *   a directory opened for writing (EISDIR);
 * - file I/O: writes 3 x 100 bytes to /dev/null, reads 4096 bytes from /dev/zero twice;
 * - malloc: 8 blocks of 24 bytes, 4 of 1000, 2 of 70000; the 2 of 1000 made by
 *   leaky() are never freed;
 * - slow(): sleeps 30 ms; fast(): returns at once (each called 3 times);
 * - a mutex held 50 ms by main while a second thread waits for it. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
void *keep[2]; /* global: the leaked blocks stay reachable by name */
static void *volatile sink; /* keeps the compiler from removing malloc/free pairs */

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
}

__attribute__((noinline)) int slow(int x)
{
	sleep_ms(30);
	return x + 1;
}

__attribute__((noinline)) int fast(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 2;
}

__attribute__((noinline)) void leaky(void)
{
	keep[0] = malloc(1000);
	keep[1] = malloc(1000);
	sink = keep[1];
}

static volatile int holder_started;

static void *holder(void *arg)
{
	(void)arg;
	holder_started = 1;
	pthread_mutex_lock(&lock);
	sleep_ms(20);
	pthread_mutex_unlock(&lock);
	return NULL;
}

int main(void)
{
	const char *paths[] = { "/etc/hostname", "/nonexistent/a", "/nonexistent/b" };
	for (int i = 0; i < 3; i++) {
		int fd = open(paths[i], O_RDONLY);
		if (fd >= 0)
			close(fd);
	}
	int d = open("/tmp", O_WRONLY);
	if (d >= 0)
		close(d);

	char buf[4096];
	memset(buf, 'x', sizeof buf);
	int out = open("/dev/null", O_WRONLY);
	for (int i = 0; i < 3; i++)
		if (write(out, buf, 100) != 100)
			return 1;
	close(out);
	int in = open("/dev/zero", O_RDONLY);
	for (int i = 0; i < 2; i++)
		if (read(in, buf, sizeof buf) != (ssize_t)sizeof buf)
			return 1;
	close(in);

	void *p[14];
	int n = 0;
	for (int i = 0; i < 8; i++)
		p[n++] = malloc(24);
	for (int i = 0; i < 2; i++)
		p[n++] = malloc(1000);
	for (int i = 0; i < 2; i++)
		p[n++] = malloc(70000);
	leaky();
	for (int i = 0; i < n; i++) {
		sink = p[i];
		free(sink);
	}

	int s = 0;
	for (int i = 0; i < 3; i++)
		s += slow(i) + fast(i);

	pthread_t t;
	pthread_mutex_lock(&lock);
	pthread_create(&t, NULL, holder, NULL);
	while (!holder_started)
		sleep_ms(1);
	sleep_ms(50);
	pthread_mutex_unlock(&lock);
	pthread_join(t, NULL);
	pthread_mutex_lock(&lock);
	pthread_mutex_unlock(&lock);

	printf("workload done %d\n", s);
	return 0;
}
