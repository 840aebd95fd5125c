/* jprobe on bench_target (seed section 6: "j"). */
#include <ptap/kprobes.h>
static long jbench(long x) { (void)x; jprobe_return(); return 0; }
static struct jprobe jp = { .kp = { .symbol_name = "bench_target" }, .entry = (void *)jbench };
int init_module(void) { return register_jprobe(&jp); }
void cleanup_module(void) { unregister_jprobe(&jp); }
