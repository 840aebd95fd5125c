/* Handlers on different threads run concurrently: each pre_handler waits
 * (bounded) until another thread is inside the handler too. */
#include <ptap/kprobes.h>
#include <time.h>

static struct kprobe kp;
static int inside, overlapped;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int pre(struct kprobe *p, struct pt_regs *r)
{
	__atomic_fetch_add(&inside, 1, __ATOMIC_SEQ_CST);
	long end = now_ms() + 200;
	while (!__atomic_load_n(&overlapped, __ATOMIC_SEQ_CST) && now_ms() < end)
		if (__atomic_load_n(&inside, __ATOMIC_SEQ_CST) >= 2)
			__atomic_store_n(&overlapped, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_sub(&inside, 1, __ATOMIC_SEQ_CST);
	return 0;
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	return register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	printk("overlapped=%d\n", overlapped);
}
