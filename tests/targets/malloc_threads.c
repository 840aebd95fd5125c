/* malloc_threads T N: T threads each do N malloc/free pairs (plus printf). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n;
static void *run(void *arg)
{
	long ok = 0;
	for (long i = 0; i < n; i++) {
		char *p = malloc(16 + (i & 255));
		if (p) {
			memset(p, 1, 16);
			ok++;
		}
		free(p);
	}
	return (void *)ok;
}

int main(int argc, char **argv)
{
	int t = argc > 1 ? atoi(argv[1]) : 8;
	n = argc > 2 ? atol(argv[2]) : 10000;
	pthread_t th[64];
	for (int i = 0; i < t && i < 64; i++)
		pthread_create(&th[i], NULL, run, NULL);
	long total = 0;
	for (int i = 0; i < t && i < 64; i++) {
		void *r;
		pthread_join(th[i], &r);
		total += (long)r;
	}
	printf("allocs=%ld\n", total);
	return 0;
}
