/* thread_starts [N] [affinity]: starts N threads (default 3) one after the
 * other, each joined before the next, and prints "threads: N". Every start
 * and end of a thread runs glibc code with every signal blocked; with
 * "affinity" the threads are made with a CPU affinity attribute, so that
 * each new thread also waits on glibc's private lock in that window while
 * its creator sets the affinity. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *run(void *a) { return a; }

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 3, done = 0;
	int affinity = argc > 2 && strcmp(argv[2], "affinity") == 0;
	pthread_attr_t at;
	pthread_attr_init(&at);
	if (affinity) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		pthread_attr_setaffinity_np(&at, sizeof set, &set);
	}
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, &at, run, 0) == 0 && pthread_join(t, 0) == 0)
			done++;
	}
	printf("threads: %d\n", done);
	return 0;
}
