/* bench/overhead/mid_loop.c: like hot_loop.c, but the called function has a
 * body, so that a probe can sit inside it (`kprobe(bench_mid+OFF)`, OFF = the
 * second instruction; bench/run finds it with objdump). Prints
 * "ns_per_call=<float>". Usage: mid_loop N. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long bench_mid(long x) {
    long y = x * 3;
    __asm__ volatile("" : "+r"(y)::"memory");
    y ^= x >> 3;
    __asm__ volatile("" : "+r"(y)::"memory");
    return y + 7;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    long acc = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        acc += bench_mid(i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_call=%.2f calls=%ld acc=%ld\n", ns / n, n, acc);
    return 0;
}
