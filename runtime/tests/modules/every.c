/* A kprobe at each offset of PT_OFFS (comma-separated) in PT_SYM, with a
 * pre_handler, and a post_handler unless PT_NOPOST. Counts per kind. */
#include <ptap/kprobes.h>
#include <stdlib.h>
#include <string.h>

static struct kprobe kps[64];
static int n;
static long pres, posts;

static int pre(struct kprobe *p, struct pt_regs *r) { __atomic_fetch_add(&pres, 1, __ATOMIC_RELAXED); return 0; }
static void post(struct kprobe *p, struct pt_regs *r, unsigned long f) { __atomic_fetch_add(&posts, 1, __ATOMIC_RELAXED); }

int init_module(void)
{
	char *offs = getenv("PT_OFFS");
	const char *sym = getenv("PT_SYM");
	if (!offs || !sym)
		return -1;
	offs = strdup(offs);
	for (char *t = strtok(offs, ","); t && n < 64; t = strtok(0, ","), n++) {
		kps[n].symbol_name = sym;
		kps[n].offset = atoi(t);
		kps[n].pre_handler = pre;
		if (!getenv("PT_NOPOST"))
			kps[n].post_handler = post;
		int r = register_kprobe(&kps[n]);
		if (r) {
			printk("register +%s failed: %d\n", t, r);
			return -1;
		}
	}
	printk("registered=%d\n", n);
	return 0;
}

void cleanup_module(void)
{
	for (int i = 0; i < n; i++)
		unregister_kprobe(&kps[i]);
	printk("pres=%ld posts=%ld\n", pres, posts);
}
