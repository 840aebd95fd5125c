/* A kretprobe on work() (PT_SYM overrides) whose handler checks the return
 * value against the entry argument (work(x) = 2x + 1 in hot.c); prints the
 * counts and the runtime's trap count at cleanup. */
#include <ptap/kprobes.h>
#include <stdlib.h>

void ptap_rt_stats(unsigned long *hits, unsigned long *traps);

static struct kretprobe rp;
static long returns, wrong;

static int entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	*(long *)ri->data = (long)regs->di;
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	returns++;
	if ((long)regs->ax != 2 * *(long *)ri->data + 1)
		wrong++;
	return 0;
}

int init_module(void)
{
	rp.kp.symbol_name = getenv("PT_SYM") ? getenv("PT_SYM") : "work";
	rp.handler = ret;
	rp.entry_handler = entry;
	rp.data_size = sizeof(long);
	return register_kretprobe(&rp);
}

void cleanup_module(void)
{
	unsigned long t = 0;
	unregister_kretprobe(&rp);
	ptap_rt_stats(NULL, &t);
	printk("returns=%ld wrong=%ld nmissed=%ld traps=%lu\n", returns, wrong, (long)rp.nmissed, t);
}
