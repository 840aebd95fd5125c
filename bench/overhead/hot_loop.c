/* bench/overhead/hot_loop.c: calls a tiny function N times and times itself.
 * Prints "ns_per_call=<float>" so a driver can compare probe overheads, the
 * CLOCK_REALTIME at main's start (t_main_ns: probes of a preloaded module
 * are armed by then) and the process's resident set at the end (rss_kb).
 * Usage: hot_loop N. With HOT_LOOP_HANDLER=1 in the environment it first
 * installs a SIGUSR1 handler, as many real programs do for some signal (the
 * runtime must then keep such handlers from interrupting its hit path). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__attribute__((noinline)) long bench_target(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

static volatile long usr1;
static void on_usr1(int sig) { usr1++; }

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *h = getenv("HOT_LOOP_HANDLER");
    if (h && !strcmp(h, "1")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigaction(SIGUSR1, &sa, NULL);
    }
    struct timespec a, b;
    long acc = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        acc += bench_target(i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_call=%.2f calls=%ld acc=%ld t_main_ns=%lld rss_kb=%ld\n", ns / n, n, acc,
           (long long)t0.tv_sec * 1000000000LL + t0.tv_nsec, rss_kb());
    return 0;
}
