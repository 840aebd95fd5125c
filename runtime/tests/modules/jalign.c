/* jprobes on sum6 and sum7 of tests/targets/args; GCC calls sum7 (a local
 * leaf) with rsp % 16 == 0 at its entry, not the ABI's 8. Each entry
 * reports whether its own frame is 16-byte aligned as the ABI promises
 * (a compiled entry may use movaps on it), then clobbers its copy of the
 * stack argument. With PT_RETURN=1 the sum7 entry returns without
 * jprobe_return() (a buggy entry). */
#include <ptap/kprobes.h>
#include <stdint.h>
#include <stdlib.h>

static struct jprobe j6, j7;
static int plain_return;

static int aligned(void)
{
	__attribute__((aligned(16))) volatile char buf[16];
	uintptr_t a = (uintptr_t)buf;
	__asm__ volatile("" : "+r"(a));
	buf[0] = 0;
	return a % 16 == 0;
}

long jsum6(long a, long b, long c, long d, long e, long f)
{
	printk("jsum6 aligned=%d a=%ld f=%ld\n", aligned(), a, f);
	jprobe_return();
	return 0;
}

long jsum7(long a, long b, long c, long d, long e, long f, long g)
{
	volatile long *pg = &g;
	printk("jsum7 aligned=%d a=%ld f=%ld g=%ld\n", aligned(), a, f, g);
	*pg = 12345;
	if (plain_return)
		return 0;
	jprobe_return();
	return 0;
}

int init_module(void)
{
	const char *r = getenv("PT_RETURN");
	plain_return = r && *r == '1';
	j6.kp.symbol_name = "sum6";
	j6.entry = (void *)jsum6;
	j7.kp.symbol_name = "sum7";
	j7.entry = (void *)jsum7;
	int r1 = register_jprobe(&j6), r2 = register_jprobe(&j7);
	printk("register=%d,%d\n", r1, r2);
	return r1 || r2;
}

void cleanup_module(void)
{
	unregister_jprobe(&j6);
	unregister_jprobe(&j7);
}
