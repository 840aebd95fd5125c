/* malloc_threads T N: T threads each do N malloc/memcpy/free rounds, and
 * every 100th round an snprintf and a printf to /dev/null (fprintf). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n;
static FILE *devnull;
static volatile size_t len16 = 16;
static void *run(void *arg)
{
	long ok = 0;
	char src[64] = "0123456789abcdef", buf[64];
	for (long i = 0; i < n; i++) {
		char *p = malloc(16 + (i & 255));
		if (p) {
			memcpy(p, src, len16);
			ok += p[3] == '3';
		}
		free(p);
		if (i % 100 == 0) {
			snprintf(buf, sizeof buf, "%ld", i);
			fprintf(devnull, "%s\n", buf);
		}
	}
	return (void *)ok;
}

int main(int argc, char **argv)
{
	int t = argc > 1 ? atoi(argv[1]) : 8;
	n = argc > 2 ? atol(argv[2]) : 10000;
	devnull = fopen("/dev/null", "w");
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
