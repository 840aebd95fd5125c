/* A pre_handler that faults (NULL write): it must be aborted, counted,
 * reported, its fault_handler called with trap 14, and the target go on. */
#include <ptap/kprobes.h>

static struct kprobe kp;
static long hits, after;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	hits++;
	*(volatile int *)0 = 1;
	after++; /* never reached */
	return 0;
}

static int fault(struct kprobe *p, struct pt_regs *r, int trapnr)
{
	printk("fault_handler trap=%d\n", trapnr);
	return 0;
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	kp.fault_handler = fault;
	return register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	printk("hits=%ld after=%ld\n", hits, after);
}
