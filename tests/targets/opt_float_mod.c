/* A jprobe on fmix whose entry uses its float arguments (and so the xmm
 * registers): the probed function must still see the originals. */
#include <ptap/kprobes.h>

static double seen;
static long nb;

static double jf(double a, long b, double c)
{
	seen += a + c;
	nb += b;
	jprobe_return();
	return 0;
}

static struct jprobe jp = { .kp = { .symbol_name = "fmix" }, .entry = (void *)jf };

int init_module(void)
{
	return register_jprobe(&jp);
}

void cleanup_module(void)
{
	unregister_jprobe(&jp);
	printk("seen_x100=%ld nb=%ld\n", (long)(seen * 100), nb);
}
