/* dump_stack inside a kprobe on work(), called from outer() which is
 * kretprobed: the trace must show the real return address (main), never
 * the trampoline. */
#include <ptap/kprobes.h>

static struct kprobe kp;
static struct kretprobe rp;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	dump_stack();
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *r)
{
	printk("outer returned %ld\n", (long)r->ax);
	return 0;
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	rp.kp.symbol_name = "outer";
	rp.handler = ret;
	return register_kretprobe(&rp) || register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	unregister_kretprobe(&rp);
}
