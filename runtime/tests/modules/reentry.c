/* Reentrancy: the pre_handler on bump() calls work(), which is probed too.
 * That nested hit must run no handler and count work's nmissed. */
#include <ptap/kprobes.h>

static struct kprobe kw, kb;
static long work_hits, bump_hits;
static long (*work_fn)(long);

static int pw(struct kprobe *p, struct pt_regs *r) { work_hits++; return 0; }
static int pb(struct kprobe *p, struct pt_regs *r)
{
	bump_hits++;
	work_fn(1000);
	return 0;
}

int init_module(void)
{
	work_fn = (long (*)(long))kallsyms_lookup_name("work");
	kw.symbol_name = "work";
	kw.pre_handler = pw;
	kb.symbol_name = "bump";
	kb.pre_handler = pb;
	if (!work_fn || register_kprobe(&kw) || register_kprobe(&kb))
		return -1;
	return 0;
}

void cleanup_module(void)
{
	unregister_kprobe(&kb);
	unregister_kprobe(&kw);
	printk("work_hits=%ld work_missed=%lu bump_hits=%ld\n", work_hits, kw.nmissed, bump_hits);
}
