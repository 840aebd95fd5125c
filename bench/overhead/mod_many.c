/* Arms one kprobe on each of many functions with one register_kprobes() call
 * and reports how long that took: PT_LIST=file of symbol names (one a line),
 * PT_N=how many of them. Prints arm_ns, unarm_ns and how many probes went on
 * the jump path. */
#include <ptap/kprobes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ptap_rt_opt_stats(unsigned long *optimized, unsigned long *trap);

static struct kprobe *kps;
static struct kprobe **ptrs;
static long nprobes;
static long hits;

static int pre(struct kprobe *p, struct pt_regs *regs) {
    (void)p; (void)regs;
    __atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
    return 0;
}

static long long clock_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* CPU time of this thread: the arming cost on a machine busy with other work. */
static long long cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

int init_module(void) {
    const char *list = getenv("PT_LIST");
    long want = getenv("PT_N") ? atol(getenv("PT_N")) : 1000;
    FILE *f = list ? fopen(list, "r") : NULL;
    if (!f)
        return -1;
    kps = calloc(want, sizeof *kps);
    ptrs = calloc(want, sizeof *ptrs);
    char line[256];
    while (nprobes < want && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        kps[nprobes].symbol_name = strdup(line);
        kps[nprobes].pre_handler = pre;
        kps[nprobes].flags = KPROBE_FLAG_QUIET;
        ptrs[nprobes] = &kps[nprobes];
        nprobes++;
    }
    fclose(f);
    long long t = now_ns(), c = cpu_ns();
    int r = register_kprobes(ptrs, (int)nprobes);
    long long dt = now_ns() - t, dc = cpu_ns() - c;
    unsigned long opt = 0, trap = 0;
    ptap_rt_opt_stats(&opt, &trap);
    printk("armed=%ld ret=%d arm_ns=%lld arm_cpu_ns=%lld optimized=%lu trap=%lu\n", nprobes, r, dt,
           dc, opt, trap);
    return r;
}

void cleanup_module(void) {
    long long t = now_ns();
    unregister_kprobes(ptrs, (int)nprobes);
    printk("unarm_ns=%lld hits=%ld\n", now_ns() - t, hits);
}
