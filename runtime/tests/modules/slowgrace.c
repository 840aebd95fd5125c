/* unregister_kprobe gives up its grace period after 3 s (a handler that
 * blocks longer): from then on, the runtime must not touch the user's
 * struct. The first pre_handler hit on work() sleeps 9 s (the bound is 3 s of
 * wall time); another thread
 * unregisters meanwhile and, once unregister has returned, reuses the
 * struct (as freed memory would be) with handlers that count violations. */
#include <ptap/kprobes.h>
#include <pthread.h>
#include <time.h>

static struct kprobe kp;
static volatile int violations, posts, unregistered, in_pre;

static void nap(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&t, 0);
}

static int poison_pre(struct kprobe *p, struct pt_regs *regs)
{
	violations++;
	return 0;
}

static void poison_post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	violations++;
}

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	static int first = 1;
	if (first) {
		first = 0;
		in_pre = 1;
		nap(9000);
	}
	return 0;
}

static void post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	posts++;
}

static void *remover(void *arg)
{
	while (!in_pre) /* the handler is inside its nap (however slow the machine) */
		nap(10);
	nap(100);
	unregister_kprobe(&kp);
	unregistered = 1;
	kp.pre_handler = poison_pre;
	kp.post_handler = poison_post;
	kp.flags = 0;
	return 0;
}

int init_module(void)
{
	pthread_t t;
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	kp.post_handler = post;
	int r = register_kprobe(&kp);
	printk("register=%d\n", r);
	if (r == 0)
		pthread_create(&t, 0, remover, 0);
	return r;
}

void cleanup_module(void)
{
	printk("unregistered=%d violations=%d posts=%d\n", unregistered, violations, posts);
}
