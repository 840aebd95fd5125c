/* Unregister at any time from another thread: a module thread registers
 * and unregisters a kprobe on work() 100 times while the target's threads
 * hammer it. After unregister_kprobe() returns, no handler may run. */
#include <ptap/kprobes.h>
#include <pthread.h>
#include <unistd.h>

static struct kprobe kp;
static volatile int gone = 1;
static long hits, violations, rounds, inflight_max;
static pthread_t th;

static int pre(struct kprobe *p, struct pt_regs *r)
{
	if (gone)
		__atomic_fetch_add(&violations, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
	for (volatile int i = 0; i < 200; i++)
		;
	if (gone)
		__atomic_fetch_add(&violations, 1, __ATOMIC_RELAXED);
	return 0;
}

static void *toggler(void *arg)
{
	usleep(20000);
	for (int i = 0; i < 100; i++) {
		kp.addr = 0;
		kp.symbol_name = "work";
		kp.pre_handler = pre;
		gone = 0;
		if (register_kprobe(&kp) != 0)
			break;
		usleep(1000);
		unregister_kprobe(&kp);
		gone = 1;
		rounds++;
		usleep(300);
	}
	return 0;
}

int init_module(void)
{
	return pthread_create(&th, 0, toggler, 0);
}

void cleanup_module(void)
{
	pthread_join(th, 0);
	printk("rounds=%ld violations=%ld hits_positive=%d\n", rounds, violations, hits > 0);
}
