/* A pre_handler that unregisters its own probe (and a sibling at the same
 * address) on the third hit: later hits run nothing, the target goes on. */
#include <ptap/kprobes.h>

static struct kprobe a, b;
static long hits_a, hits_b;

static int pa(struct kprobe *p, struct pt_regs *r)
{
	if (++hits_a == 3) {
		unregister_kprobe(&b);
		unregister_kprobe(&a);
	}
	return 0;
}

static int pb(struct kprobe *p, struct pt_regs *r)
{
	hits_b++;
	return 0;
}

int init_module(void)
{
	a.symbol_name = b.symbol_name = "work";
	a.pre_handler = pa;
	b.pre_handler = pb;
	return register_kprobe(&a) || register_kprobe(&b);
}

void cleanup_module(void)
{
	unregister_kprobe(&a);
	unregister_kprobe(&b);
	printk("hits_a=%ld hits_b=%ld\n", hits_a, hits_b);
}
