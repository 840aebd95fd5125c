/* kprobe whose handler printk's one short record per hit (output throughput). */
#include <ptap/kprobes.h>
static struct kprobe kp = { .symbol_name = "bench_target" };
static int pre(struct kprobe *p, struct pt_regs *regs) {
    (void)p;
    printk("hit %ld\n", (long)regs->di);
    return 0;
}
int init_module(void) { kp.pre_handler = pre; return register_kprobe(&kp); }
void cleanup_module(void) { unregister_kprobe(&kp); }
