/* Generic counting kprobe, configured by the environment:
 * PT_SYM (default "work"), PT_OFF, PT_POST=1 (add a post_handler),
 * PT_SETDI=N (pre_handler sets regs->di), PT_PRINT=1 (print each hit),
 * PT_DUMP=1 (dump_stack in the pre_handler), PT_SKIP=V (the pre_handler
 * makes the function return V at once: ip = return address, returns 1),
 * PT_DISABLE=N (disable_kprobe after N hits). Prints totals at cleanup. */
#include <ptap/kprobes.h>
#include <stdlib.h>
#include <unistd.h>

void ptap_rt_stats(unsigned long *hits, unsigned long *traps);

static struct kprobe kp;
static long hits, posts, setdi, print, dump, skip, disable_after;
static int have_setdi, have_skip;

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	__atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
	if (print)
		printk("pre ip=%lx di=%ld\n", regs->ip - (unsigned long)p->addr, (long)regs->di);
	if (dump)
		dump_stack();
	if (have_setdi)
		regs->di = setdi;
	if (disable_after && hits == disable_after)
		disable_kprobe(p);
	if (have_skip) {
		regs->ax = skip;
		regs->ip = *(unsigned long *)regs->sp;
		regs->sp += 8;
		return 1;
	}
	return 0;
}

static void post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	__atomic_fetch_add(&posts, 1, __ATOMIC_RELAXED);
	if (print)
		printk("post ip=%lx flags=%lu\n", regs->ip - (unsigned long)p->addr, flags);
}

int init_module(void)
{
	const char *s = getenv("PT_SYM");
	kp.symbol_name = s ? s : "work";
	kp.offset = getenv("PT_OFF") ? atoi(getenv("PT_OFF")) : 0;
	kp.pre_handler = pre;
	if (getenv("PT_POST"))
		kp.post_handler = post;
	if (getenv("PT_SETDI")) {
		have_setdi = 1;
		setdi = atol(getenv("PT_SETDI"));
	}
	if (getenv("PT_SKIP")) {
		have_skip = 1;
		skip = atol(getenv("PT_SKIP"));
	}
	if (getenv("PT_DISABLE"))
		disable_after = atol(getenv("PT_DISABLE"));
	print = getenv("PT_PRINT") != NULL;
	dump = getenv("PT_DUMP") != NULL;
	int r = register_kprobe(&kp);
	printk("register=%d pid=%d\n", r, getpid());
	return r;
}

void cleanup_module(void)
{
	unsigned long h, t;
	unregister_kprobe(&kp);
	ptap_rt_stats(&h, &t);
	printk("hits=%ld posts=%ld nmissed=%lu traps=%lu\n", hits, posts, kp.nmissed, t);
}
