/* A buggy jprobe entry that returns instead of calling jprobe_return():
 * the runtime must notice at the thread's next hit and keep working. */
#include <ptap/kprobes.h>

static struct jprobe jp;
static struct kprobe kp;
static long entries, hits;

long jwork(long x)
{
	entries++;
	return 1000; /* BUG: no jprobe_return() */
}

static int pre(struct kprobe *p, struct pt_regs *r)
{
	hits++;
	return 0;
}

int init_module(void)
{
	jp.kp.symbol_name = "work";
	jp.entry = (void *)jwork;
	kp.symbol_name = "bump";
	kp.pre_handler = pre;
	return register_jprobe(&jp) || register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_jprobe(&jp);
	unregister_kprobe(&kp);
	printk("entries=%ld hits=%ld bump_missed=%lu\n", entries, hits, kp.nmissed);
}
