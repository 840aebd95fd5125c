/* kprobe + kretprobe on the same function (seed section 6: "kr"). */
#include <ptap/kprobes.h>
static int pre(struct kprobe *p, struct pt_regs *regs) { (void)p; (void)regs; return 0; }
static int ret(struct kretprobe_instance *ri, struct pt_regs *regs) { (void)ri; (void)regs; return 0; }
static struct kprobe kp = { .symbol_name = "bench_target" };
static struct kretprobe rp = { .kp = { .symbol_name = "bench_target" }, .handler = ret, .maxactive = 20 };
int init_module(void) {
    kp.pre_handler = pre;
    int r = register_kprobe(&kp);
    return r ? r : register_kretprobe(&rp);
}
void cleanup_module(void) { unregister_kretprobe(&rp); unregister_kprobe(&kp); }
