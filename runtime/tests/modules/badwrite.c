/* ptap_write / ptap_emit with unreadable memory at every hit: each call
 * fails (-1) without faulting, and the output ring keeps working (the
 * printk after it is delivered every time). */
#include <ptap/kprobes.h>
#include <ptap/runtime.h>

static struct kprobe kp;
static long hits, wfail, efail;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	hits++;
	if (ptap_write((const void *)8, 64) != 0)
		wfail++;
	if (ptap_emit(1, (const uint64_t *)16, 4) != 0)
		efail++;
	printk("alive %ld\n", hits);
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
	printk("hits=%ld wfail=%ld efail=%ld\n", hits, wfail, efail);
}
