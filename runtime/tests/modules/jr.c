/* A kretprobe, a jprobe and a kprobe with post_handler on the same function. */
#include <ptap/kprobes.h>
static struct jprobe jp;
static struct kretprobe rp;
static struct kprobe kp;
long jsum6(long a, long b, long c, long d, long e, long f) { printk("j a=%ld f=%ld\n", a, f); jprobe_return(); return 0; }
static int ret(struct kretprobe_instance *ri, struct pt_regs *r) { printk("ret=%ld\n", (long)r->ax); return 0; }
static int pre(struct kprobe *p, struct pt_regs *r) { printk("k di=%ld\n", (long)r->di); return 0; }
static void post(struct kprobe *p, struct pt_regs *r, unsigned long f) { printk("post\n"); }
int init_module(void) {
	rp.kp.symbol_name = "sum6"; rp.handler = ret;
	jp.kp.symbol_name = "sum6"; jp.entry = jsum6;
	kp.symbol_name = "sum6"; kp.pre_handler = pre; kp.post_handler = post;
	return register_kretprobe(&rp) || register_jprobe(&jp) || register_kprobe(&kp);
}
void cleanup_module(void) { unregister_jprobe(&jp); unregister_kretprobe(&rp); unregister_kprobe(&kp); }
