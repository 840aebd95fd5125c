/* opt_stress NTHREADS: threads call work(i) and tick(i) in a loop until a
 * probe module sets `stop`; each checks work's result (the displaced
 * instructions must run correctly while the probe is patched in and out).
 * Prints calls=<total work calls> bad=<wrong results>. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

volatile int opt_stress_stop;
volatile int opt_stress_started;
static long totals[64], bads[64];

/* For the probe module (kallsyms_lookup_name finds functions). */
__attribute__((noinline, used)) int opt_stress_nstarted(void)
{
	return __atomic_load_n(&opt_stress_started, __ATOMIC_ACQUIRE);
}

__attribute__((noinline, used)) void opt_stress_finish(void)
{
	__atomic_store_n(&opt_stress_stop, 1, __ATOMIC_RELEASE);
}

__attribute__((noinline)) long work(long x)
{
	return x * 2 + 1;
}

__attribute__((noinline)) long tick(long x)
{
	__asm__ volatile("" ::: "memory");
	return x - 1;
}

static void *run(void *arg)
{
	long id = (long)arg, n = 0, bad = 0;
	__atomic_fetch_add(&opt_stress_started, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&opt_stress_stop, __ATOMIC_ACQUIRE)) {
		if (work(n) != 2 * n + 1)
			bad++;
		if (tick(n) != n - 1)
			bad++;
		n++;
	}
	totals[id] = n;
	bads[id] = bad;
	return NULL;
}

int main(int argc, char **argv)
{
	int nt = argc > 1 ? atoi(argv[1]) : 8;
	if (nt < 1 || nt > 64)
		nt = 8;
	pthread_t t[64];
	for (long i = 0; i < nt; i++)
		pthread_create(&t[i], NULL, run, (void *)i);
	long calls = 0, bad = 0;
	for (int i = 0; i < nt; i++) {
		pthread_join(t[i], NULL);
		calls += totals[i];
		bad += bads[i];
	}
	printf("calls=%ld bad=%ld\n", calls, bad);
	return 0;
}
