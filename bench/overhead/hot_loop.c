/* bench/overhead/hot_loop.c: calls a tiny function N times and times itself.
 * Prints "ns_per_call=<float>" so a driver can compare probe overheads.
 * Usage: hot_loop N */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long bench_target(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    long acc = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        acc += bench_target(i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_call=%.2f calls=%ld acc=%ld\n", ns / n, n, acc);
    return 0;
}
