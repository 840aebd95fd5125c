/* kretprobe on bench_target (seed section 6: "r"). */
#include <ptap/kprobes.h>
static int ret(struct kretprobe_instance *ri, struct pt_regs *regs) { (void)ri; (void)regs; return 0; }
static struct kretprobe rp = { .kp = { .symbol_name = "bench_target" }, .handler = ret, .maxactive = 20 };
int init_module(void) { return register_kretprobe(&rp); }
void cleanup_module(void) { unregister_kretprobe(&rp); }
