/* Probe module for opt_blocked (see there). */
#include <ptap/kprobes.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

void ptap_rt_opt_stats(unsigned long *optimized, unsigned long *trap);

static struct kprobe kp;
static long hits;
static pthread_t th;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	(void)p;
	(void)r;
	__atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
	return 0;
}

static void ms(long n)
{
	struct timespec t = { 0, n * 1000000 };
	nanosleep(&t, NULL);
}

static void *driver(void *arg)
{
	(void)arg;
	int (*ready)(void) = (void *)kallsyms_lookup_name("opt_blocked_ready");
	int (*done)(void) = (void *)kallsyms_lookup_name("opt_blocked_reader_done");
	void (*release)(void) = (void *)kallsyms_lookup_name("opt_blocked_release");
	void (*phase2)(void) = (void *)kallsyms_lookup_name("opt_blocked_phase2");
	if (!ready || !done || !release || !phase2)
		return NULL;
	while (!ready())
		ms(1);
	ms(50); /* the reader is now blocked inside slow_read's first 5 bytes */
	unsigned long opt1 = 9, opt2 = 9, trap1 = 9;
	kp.symbol_name = "slow_read";
	kp.pre_handler = pre;
	int r1 = register_kprobe(&kp);
	ptap_rt_opt_stats(&opt1, &trap1);
	unregister_kprobe(&kp);
	release();
	while (!done())
		ms(1);
	memset(&kp, 0, sizeof kp);
	kp.symbol_name = "slow_read";
	kp.pre_handler = pre;
	int r2 = register_kprobe(&kp);
	ptap_rt_opt_stats(&opt2, NULL);
	printk("r1=%d opt1=%lu trap1=%lu r2=%d opt2=%lu\n", r1, opt1, trap1, r2, opt2);
	phase2();
	return NULL;
}

int init_module(void)
{
	return pthread_create(&th, NULL, driver, NULL);
}

void cleanup_module(void)
{
	pthread_join(th, NULL);
	unregister_kprobe(&kp);
	printk("hits=%ld\n", hits);
}
