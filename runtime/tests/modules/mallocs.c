/* kprobe + kretprobe on libc's malloc, kprobes on free, memcpy (an IFUNC:
 * the selected implementation is probed) and fprintf, in a threaded target:
 * no deadlock, no recursion, exact counts. Handlers printk now and then. */
#include <ptap/kprobes.h>

static struct kprobe km, kf, kc, kp;
static struct kretprobe rm;
static long m_hits, f_hits, m_rets, nulls, c_hits, p_hits;

static int pm(struct kprobe *p, struct pt_regs *r) { __atomic_fetch_add(&m_hits, 1, __ATOMIC_RELAXED); return 0; }
static int pf(struct kprobe *p, struct pt_regs *r) { __atomic_fetch_add(&f_hits, 1, __ATOMIC_RELAXED); return 0; }
static int pc(struct kprobe *p, struct pt_regs *r)
{
	if (__atomic_fetch_add(&c_hits, 1, __ATOMIC_RELAXED) == 1000)
		printk("memcpy hit, n=%lu\n", r->dx); /* printk copies with its own memcpy */
	return 0;
}
static int pp(struct kprobe *p, struct pt_regs *r)
{
	if (__atomic_fetch_add(&p_hits, 1, __ATOMIC_RELAXED) % 50 == 0)
		printk("fprintf hit, fmt=%s\n", (const char *)r->si);
	return 0;
}
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
	kc.symbol_name = "libc:memcpy";
	kc.pre_handler = pc;
	kp.symbol_name = "libc:fprintf";
	kp.pre_handler = pp;
	int a = register_kprobe(&km), b = register_kprobe(&kf), c = register_kretprobe(&rm);
	int d = register_kprobe(&kc), e = register_kprobe(&kp);
	printk("register=%d,%d,%d,%d,%d\n", a, b, c, d, e);
	return a || b || c || d || e;
}

void cleanup_module(void)
{
	unregister_kprobe(&km);
	unregister_kprobe(&kf);
	unregister_kretprobe(&rm);
	unregister_kprobe(&kc);
	unregister_kprobe(&kp);
	printk("malloc_hits=%ld free_hits=%ld malloc_returns=%ld kret_missed=%d nulls=%ld memcpy_hits=%ld fprintf_hits=%ld\n",
	       m_hits, f_hits, m_rets, rm.nmissed, nulls, c_hits, p_hits);
}
