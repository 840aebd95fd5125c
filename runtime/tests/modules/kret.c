/* Generic kretprobe: PT_SYM (default "work"), PT_MAXACTIVE, PT_PRINT=1
 * (print "SYM(arg)=ret" using entry_handler data), PT_SYM2 (a second
 * kretprobe with the same settings on another function). */
#include <ptap/kprobes.h>
#include <stdlib.h>

static struct kretprobe rp, rp2;
static long returns, entries;
static int print;

static int entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	__atomic_fetch_add(&entries, 1, __ATOMIC_RELAXED);
	*(long *)ri->data = regs->di;
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	__atomic_fetch_add(&returns, 1, __ATOMIC_RELAXED);
	if (print)
		printk("%s(%ld)=%ld\n", ri->rp->kp.symbol_name, *(long *)ri->data, (long)regs->ax);
	return 0;
}

static int setup(struct kretprobe *p, const char *sym)
{
	p->kp.symbol_name = sym;
	p->handler = ret;
	p->entry_handler = entry;
	p->data_size = sizeof(long);
	p->maxactive = getenv("PT_MAXACTIVE") ? atoi(getenv("PT_MAXACTIVE")) : 0;
	int r = register_kretprobe(p);
	printk("register %s=%d\n", sym, r);
	return r;
}

int init_module(void)
{
	const char *s = getenv("PT_SYM");
	print = getenv("PT_PRINT") != NULL;
	if (setup(&rp, s ? s : "work"))
		return -1;
	if (getenv("PT_SYM2") && setup(&rp2, getenv("PT_SYM2")))
		return -1;
	return 0;
}

void cleanup_module(void)
{
	unregister_kretprobe(&rp);
	if (rp2.kp.symbol_name)
		unregister_kretprobe(&rp2);
	printk("returns=%ld entries=%ld nmissed=%d nmissed2=%d unwound=%lu\n", returns, entries, rp.nmissed,
	       rp2.nmissed, ptap_kretprobe_unwound());
}
