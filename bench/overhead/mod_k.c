/* kprobe with an empty pre_handler on bench_target (seed section 6: "k"). */
#include <ptap/kprobes.h>
static struct kprobe kp = { .symbol_name = "bench_target" };
static int pre(struct kprobe *p, struct pt_regs *regs) { (void)p; (void)regs; return 0; }
int init_module(void) { kp.pre_handler = pre; return register_kprobe(&kp); }
void cleanup_module(void) { unregister_kprobe(&kp); }
