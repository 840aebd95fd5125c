/* Three kprobes on one address (plus a post_handler on the second): they
 * must run in registration order. */
#include <ptap/kprobes.h>

static struct kprobe a, b, c;
static int nb;

static int pa(struct kprobe *p, struct pt_regs *r) { printk("A di=%ld\n", (long)r->di); return 0; }
static int pb(struct kprobe *p, struct pt_regs *r) { printk("B di=%ld\n", (long)r->di); nb++; return 0; }
static void qb(struct kprobe *p, struct pt_regs *r, unsigned long f) { printk("B-post\n"); }
static int pc(struct kprobe *p, struct pt_regs *r)
{
	printk("C di=%ld\n", (long)r->di);
	return 0;
}

int init_module(void)
{
	a.symbol_name = b.symbol_name = c.symbol_name = "work";
	a.pre_handler = pa;
	b.pre_handler = pb;
	b.post_handler = qb;
	c.pre_handler = pc;
	if (register_kprobe(&a) || register_kprobe(&b) || register_kprobe(&c))
		return -1;
	return 0;
}

void cleanup_module(void)
{
	unregister_kprobe(&a);
	unregister_kprobe(&b);
	unregister_kprobe(&c);
	printk("done\n");
}
