/* thread_starts [N]: starts N threads (default 3) one after the other, each
 * joined before the next, and prints "threads: N". Every start and end of a
 * thread runs glibc code with every signal blocked. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *run(void *a) { return a; }

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 3, done = 0;
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, 0, run, 0) == 0 && pthread_join(t, 0) == 0)
			done++;
	}
	printf("threads: %d\n", done);
	return 0;
}
