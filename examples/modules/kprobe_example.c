/*
 * kprobe_example.c - the kprobe example of the 2005 Kprobes document, ported to user space.
 * Probes work() in tests/targets/hot; dumps registers and a stack.
 */
#include <ptap/kprobes.h>

static const char *probed = "work";
static struct kprobe kp;

/* kprobe pre_handler: called just before the probed instruction is executed */
int handler_pre(struct kprobe *p, struct pt_regs *regs)
{
	printk("pre_handler: p->addr=0x%p, ip=%lx, flags=0x%lx, di=%ld\n",
	       p->addr, regs->ip, regs->flags, regs->di);
	dump_stack();
	return 0;
}

/* kprobe post_handler: called after the probed instruction is executed */
void handler_post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	printk("post_handler: p->addr=0x%p, flags=0x%lx\n", p->addr, regs->flags);
}

/* fault_handler: called if a handler or the single-stepped instruction faults */
int handler_fault(struct kprobe *p, struct pt_regs *regs, int trapnr)
{
	printk("fault_handler: p->addr=0x%p, trap #%d\n", p->addr, trapnr);
	/* Return 0 because we don't handle the fault. */
	return 0;
}

int init_module(void)
{
	int ret;
	kp.pre_handler = handler_pre;
	kp.post_handler = handler_post;
	kp.fault_handler = handler_fault;
	kp.addr = (kprobe_opcode_t *)kallsyms_lookup_name(probed);
	if (!kp.addr) {
		printk("Couldn't find %s to plant kprobe\n", probed);
		return -1;
	}
	if ((ret = register_kprobe(&kp)) < 0) {
		printk("register_kprobe failed, returned %d\n", ret);
		return -1;
	}
	printk("kprobe registered\n");
	return 0;
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	printk("kprobe unregistered\n");
}

MODULE_LICENSE("GPL");
