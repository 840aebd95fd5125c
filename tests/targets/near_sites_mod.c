/* Two kprobes in near_sites' work(): `outer` at work, `inner` at work+4,
 * inside the bytes a jump at work replaces. outer is registered, then
 * inner (which takes outer back to the trap path), then outer is
 * unregistered and registered again: its prepared jump must not come back
 * while inner is there. Prints the counts and the re-registration's result
 * at cleanup. */
#include <ptap/kprobes.h>

static long a, b;

static int pre_a(struct kprobe *p, struct pt_regs *regs)
{
	(void)p;
	(void)regs;
	a++;
	return 0;
}

static int pre_b(struct kprobe *p, struct pt_regs *regs)
{
	(void)p;
	(void)regs;
	b++;
	return 0;
}

static struct kprobe outer = { .symbol_name = "work", .pre_handler = pre_a };
static struct kprobe inner = { .symbol_name = "work", .offset = 4, .pre_handler = pre_b };
static int again;

int init_module(void)
{
	int r = register_kprobe(&outer);
	if (r == 0)
		r = register_kprobe(&inner);
	if (r != 0)
		return r;
	unregister_kprobe(&outer);
	outer.addr = 0;
	outer.flags = 0;
	again = register_kprobe(&outer);
	return 0;
}

void cleanup_module(void)
{
	if (again == 0)
		unregister_kprobe(&outer);
	unregister_kprobe(&inner);
	printk("again=%d a=%ld b=%ld\n", again, a, b);
}
