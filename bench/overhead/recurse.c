/* bench/overhead/recurse.c: recurse D N: calls rec(D) (D nested calls of
 * rec) N/D times and prints "ns_per_call=<float>" per call of rec, for the
 * cost of a kretprobe as a function of recursion depth (every probed frame
 * is live at once down to depth D). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline, noipa)) long rec(long d) {
    __asm__ volatile("" ::: "memory");
    if (d == 0)
        return 0;
    long r = rec(d - 1);
    __asm__ volatile("" : "+r"(r)); /* a real call per level: no loop, no tail call */
    return r + 1;
}

int main(int argc, char **argv) {
    long d = argc > 1 ? atol(argv[1]) : 10;
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    long rounds = n / (d + 1), acc = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < rounds; i++)
        acc += rec(d);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_call=%.2f calls=%ld acc=%ld\n", ns / (rounds * (d + 1)), rounds * (d + 1), acc);
    return 0;
}
