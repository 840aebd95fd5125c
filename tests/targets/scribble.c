/* A hostile target: it maps the ptap session it was started in (the fd
 * named by PTAP_SESSION_FD) and scribbles over it (random bytes,
 * adversarial ring sizes, head/tail, record headers, array headers) while
 * calling a probed function. ptap must survive whatever it finds there.
 * Usage: scribble SEED ITERATIONS (0 iterations: forge one huge ring) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

static uint64_t rng;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

volatile long sink;
__attribute__((noinline)) long poke(long i) { sink += i; return sink; }

static const uint64_t nasty[] = {
    0, 1, 7, 8, 64, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x400000,
    0x40000000, 0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull,
    0xc0000000ffffffffull, 0x80000001fffffff8ull, 0x40000000000000ffull,
};
#define NNASTY (sizeof nasty / sizeof nasty[0])

int main(int argc, char **argv) {
    rng = argc > 1 ? strtoull(argv[1], 0, 0) * 0x9e3779b97f4a7c15ull + 1 : 1;
    long iters = argc > 2 ? atol(argv[2]) : 10000;
    const char *fds = getenv("PTAP_SESSION_FD");
    struct stat st;
    if (!fds || fstat(atoi(fds), &st) != 0) {
        fprintf(stderr, "scribble: no session\n");
        return 2;
    }
    size_t len = st.st_size;
    unsigned char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED, atoi(fds), 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "scribble: mmap failed\n");
        return 2;
    }
    uint32_t ring = *(uint32_t *)(m + 12);
    size_t gl = 4096 + (ring <= len ? ring : 0); /* the globals area */
    if (iters == 0) { /* the forged ring of a known crash: 2 GiB, head = tail = 1 GiB */
        *(uint32_t *)(m + 12) = 0x80000000u;
        *(uint64_t *)(m + 16) = 0x40000000;
        *(uint64_t *)(m + 24) = 0x40000000;
    }
    for (long i = 0; i < iters; i++) {
        poke(i);
        uint64_t r = next(), v = nasty[next() % NNASTY];
        if (next() % 2)
            v = next();
        switch (r % 10) {
        case 0: /* any word anywhere */
            ((uint64_t *)m)[next() % (len / 8)] = v;
            break;
        case 1: /* the ring size */
            *(uint32_t *)(m + 12) = (uint32_t)v;
            break;
        case 2: /* head / tail / dropped */
            ((uint64_t *)m)[2 + next() % 3] = v;
            break;
        case 3: { /* a burst of random bytes in the ring */
            size_t at = 4096 + next() % (len - 4096 - 64);
            for (int k = 0; k < 64; k++)
                m[at + k] = (unsigned char)next();
            break;
        }
        case 4: /* a fake published record header at tail */
            if (ring >= 64 && ring <= len) {
                uint64_t t = *(uint64_t *)(m + 24);
                *(uint64_t *)(m + 4096 + (t & (ring - 1) & ~7ull)) =
                    (1ull << 63) | ((next() % 4) << 32) | (v & 0xffffffff);
            }
            break;
        case 5: /* an array / globals header word */
            if (gl + 64 * 8 < len)
                ((uint64_t *)(m + gl))[next() % 64] = v;
            break;
        case 6: /* restore a sane ring so output flows again */
            if (ring >= 64 && ring <= len) {
                *(uint32_t *)(m + 12) = ring;
                *(uint64_t *)(m + 16) = *(uint64_t *)(m + 24);
            }
            break;
        default:
            break;
        }
    }
    printf("scribbled %ld\n", iters);
    return 0;
}
