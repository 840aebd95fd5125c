/* kprobe + kretprobe on libc's malloc and a kprobe on free, in a threaded
 * target: no deadlock, no recursion, exact counts. */
#include <ptap/kprobes.h>

static struct kprobe km, kf;
static struct kretprobe rm;
static long m_hits, f_hits, m_rets, nulls;

static int pm(struct kprobe *p, struct pt_regs *r) { __atomic_fetch_add(&m_hits, 1, __ATOMIC_RELAXED); return 0; }
static int pf(struct kprobe *p, struct pt_regs *r) { __atomic_fetch_add(&f_hits, 1, __ATOMIC_RELAXED); return 0; }
static int rmh(struct kretprobe_instance *ri, struct pt_regs *r)
{
	__atomic_fetch_add(&m_rets, 1, __ATOMIC_RELAXED);
	if (!r->ax)
		__atomic_fetch_add(&nulls, 1, __ATOMIC_RELAXED);
	return 0;
}

int init_module(void)
{
	km.symbol_name = "libc:malloc";
	km.pre_handler = pm;
	kf.symbol_name = "libc:free";
	kf.pre_handler = pf;
	rm.kp.symbol_name = "libc:malloc";
	rm.handler = rmh;
	rm.maxactive = 64;
	int a = register_kprobe(&km), b = register_kprobe(&kf), c = register_kretprobe(&rm);
	printk("register=%d,%d,%d\n", a, b, c);
	return a || b || c;
}

void cleanup_module(void)
{
	unregister_kprobe(&km);
	unregister_kprobe(&kf);
	unregister_kretprobe(&rm);
	printk("malloc_hits=%ld free_hits=%ld malloc_returns=%ld kret_missed=%d nulls=%ld\n", m_hits, f_hits, m_rets,
	       rm.nmissed, nulls);
}
