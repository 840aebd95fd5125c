/* jprobe + kretprobe on the same function (seed section 6: "jr"). */
#include <ptap/kprobes.h>
static long jbench(long x) { (void)x; jprobe_return(); return 0; }
static int ret(struct kretprobe_instance *ri, struct pt_regs *regs) { (void)ri; (void)regs; return 0; }
static struct jprobe jp = { .kp = { .symbol_name = "bench_target" }, .entry = (void *)jbench };
static struct kretprobe rp = { .kp = { .symbol_name = "bench_target" }, .handler = ret, .maxactive = 20 };
int init_module(void) {
    int r = register_jprobe(&jp);
    return r ? r : register_kretprobe(&rp);
}
void cleanup_module(void) { unregister_kretprobe(&rp); unregister_jprobe(&jp); }
