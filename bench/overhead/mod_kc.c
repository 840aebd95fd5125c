/* kprobe with a counting pre_handler (an atomic increment of a global). */
#include <ptap/kprobes.h>
static long n;
static struct kprobe kp = { .symbol_name = "bench_target" };
static int pre(struct kprobe *p, struct pt_regs *regs) {
    (void)p; (void)regs;
    __atomic_fetch_add(&n, 1, __ATOMIC_RELAXED);
    return 0;
}
int init_module(void) { kp.pre_handler = pre; return register_kprobe(&kp); }
void cleanup_module(void) { unregister_kprobe(&kp); printk("count=%ld\n", n); }
