/* jprobes on sum6 (register args) and sum7 (one stack arg). The entries
 * clobber their arguments, including the stack one: the probed functions
 * must still see the originals (mirror principle, stack restored). */
#include <ptap/kprobes.h>

static struct jprobe j6, j7;

long jsum6(long a, long b, long c, long d, long e, long f)
{
	printk("jsum6 a=%ld b=%ld c=%ld d=%ld e=%ld f=%ld\n", a, b, c, d, e, f);
	jprobe_return();
	return 0;
}

long jsum7(long a, long b, long c, long d, long e, long f, long g)
{
	volatile long *pg = &g;
	printk("jsum7 a=%ld f=%ld g=%ld\n", a, f, g);
	*pg = 12345;
	__asm__ volatile("xor %%edi, %%edi; xor %%esi, %%esi" ::: "rdi", "rsi", "memory");
	jprobe_return();
	return 0;
}

int init_module(void)
{
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
	printk("jprobes unregistered\n");
}
