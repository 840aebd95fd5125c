/* Probe module for opt_stress: a kprobe (PT_KIND=k, default) or kretprobe
 * (PT_KIND=r) "A" on work() is registered and unregistered PT_CYCLES times
 * (default 1000) by a driver thread while the target's threads hammer it;
 * each cycle waits until A has been hit at least once. A kprobe "B" on
 * tick() stays registered throughout: it must count every call exactly.
 * The driver then sets the target's `stop`. Totals are printed at cleanup. */
#include <ptap/kprobes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long hits_a, hits_b, rets_bad, cycles_done, no_hit_cycles;
static int failed, use_ret, cycles = 1000, nthreads = 8;
static struct kprobe ka, kb;
static struct kretprobe ra;
static pthread_t driver_thread;

struct rdata {
	long di;
};

static int pre_a(struct kprobe *p, struct pt_regs *r)
{
	(void)p;
	(void)r;
	__atomic_fetch_add(&hits_a, 1, __ATOMIC_RELAXED);
	return 0;
}

static int pre_b(struct kprobe *p, struct pt_regs *r)
{
	(void)p;
	(void)r;
	__atomic_fetch_add(&hits_b, 1, __ATOMIC_RELAXED);
	return 0;
}

static int entry_a(struct kretprobe_instance *ri, struct pt_regs *r)
{
	((struct rdata *)ri->data)->di = (long)r->di;
	return 0;
}

static int ret_a(struct kretprobe_instance *ri, struct pt_regs *r)
{
	__atomic_fetch_add(&hits_a, 1, __ATOMIC_RELAXED);
	if ((long)r->ax != 2 * ((struct rdata *)ri->data)->di + 1)
		__atomic_fetch_add(&rets_bad, 1, __ATOMIC_RELAXED);
	return 0;
}

static void pause_us(long us)
{
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
}

static void *driver(void *arg)
{
	(void)arg;
	int (*nstarted)(void) = (int (*)(void))kallsyms_lookup_name("opt_stress_nstarted");
	void (*finish)(void) = (void (*)(void))kallsyms_lookup_name("opt_stress_finish");
	if (!nstarted || !finish) {
		failed = -1;
		return NULL;
	}
	while (nstarted() < nthreads)
		pause_us(100);
	for (int i = 0; i < cycles; i++) {
		long before = __atomic_load_n(&hits_a, __ATOMIC_RELAXED);
		int r;
		if (use_ret) {
			memset(&ra, 0, sizeof ra);
			ra.kp.symbol_name = "work";
			ra.handler = ret_a;
			ra.entry_handler = entry_a;
			ra.data_size = sizeof(struct rdata);
			ra.maxactive = 32;
			r = register_kretprobe(&ra);
		} else {
			memset(&ka, 0, sizeof ka);
			ka.symbol_name = "work";
			ka.pre_handler = pre_a;
			r = register_kprobe(&ka);
		}
		if (r) {
			failed++;
			continue;
		}
		int waited = 0;
		while (__atomic_load_n(&hits_a, __ATOMIC_RELAXED) == before && waited < 100000) {
			sched_yield();
			waited++;
		}
		if (__atomic_load_n(&hits_a, __ATOMIC_RELAXED) == before)
			no_hit_cycles++;
		if (use_ret)
			unregister_kretprobe(&ra);
		else
			unregister_kprobe(&ka);
		cycles_done++;
	}
	finish();
	return NULL;
}

int init_module(void)
{
	const char *k = getenv("PT_KIND"), *c = getenv("PT_CYCLES"), *t = getenv("PT_THREADS");
	use_ret = k && !strcmp(k, "r");
	if (c)
		cycles = atoi(c);
	if (t)
		nthreads = atoi(t);
	kb.symbol_name = "tick";
	kb.pre_handler = pre_b;
	int r = register_kprobe(&kb);
	if (r)
		return r;
	return pthread_create(&driver_thread, NULL, driver, NULL);
}

void cleanup_module(void)
{
	pthread_join(driver_thread, NULL);
	unregister_kprobe(&kb);
	printk("hits_a=%ld hits_b=%ld missed_a=%ld missed_b=%ld rets_bad=%ld failed=%d cycles=%ld no_hit_cycles=%ld\n",
	       hits_a, hits_b, use_ret ? (long)ra.nmissed : (long)ka.nmissed, (long)kb.nmissed,
	       rets_bad, failed, cycles_done, no_hit_cycles);
}
