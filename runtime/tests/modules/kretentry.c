/* register_kretprobe rules, on tests/targets/hot:
 *  - only at a function's entry (work+5, an instruction boundary inside
 *    work, is refused with -EINVAL: a return probe there would hijack a
 *    slot that is not the return address);
 *  - registering a live kretprobe again is -EEXIST and leaves the live
 *    probe alone (its nmissed, its handler counts). */
#include <ptap/kprobes.h>

static struct kretprobe inside, rp;
static int rets;

static int on_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	rets++;
	return 0;
}

int init_module(void)
{
	inside.kp.symbol_name = "work";
	inside.kp.offset = 5;
	inside.kp.flags = KPROBE_FLAG_QUIET;
	inside.handler = on_ret;
	printk("inside=%d\n", register_kretprobe(&inside));

	rp.kp.symbol_name = "work";
	rp.handler = on_ret;
	printk("entry=%d\n", register_kretprobe(&rp));
	rp.nmissed = 5; /* as if 5 entries had found no free instance */
	rp.kp.flags |= KPROBE_FLAG_QUIET;
	printk("again=%d\n", register_kretprobe(&rp));
	printk("nmissed_kept=%d\n", rp.nmissed == 5);
	return 0;
}

void cleanup_module(void)
{
	unregister_kretprobe(&rp);
	printk("rets=%d\n", rets);
}
