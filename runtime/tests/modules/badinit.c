/* A module whose init_module() or cleanup_module() misbehaves, chosen by
 * the environment: PT_INIT=fault (a NULL-page write after registering a
 * kprobe on work), PT_INIT=hang (never returns), PT_CLEANUP=fault.
 * Otherwise an ordinary counting kprobe on work. */
#include <ptap/kprobes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct kprobe kp;
static long hits;

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	__atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
	return 0;
}

static int is(const char *var, const char *v)
{
	const char *s = getenv(var);
	return s && !strcmp(s, v);
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	int r = register_kprobe(&kp);
	printk("register=%d\n", r);
	if (is("PT_INIT", "fault"))
		*(volatile int *)16 = 1;
	if (is("PT_INIT", "hang"))
		for (;;)
			sleep(1);
	return r;
}

void cleanup_module(void)
{
	printk("cleanup hits>0=%d\n", hits > 0);
	if (is("PT_CLEANUP", "fault"))
		*(volatile int *)24 = 1;
	unregister_kprobe(&kp);
	printk("not reached\n");
}
