/*
 * jprobe_example.c - the jprobe example of the 2005 Kprobes document, ported to user space.
 * Prints the arguments of sum6() in tests/targets/args (mirror principle).
 */
#include <ptap/kprobes.h>

/* Proxy routine having the same arguments as the actual sum6() */
long jsum6(long a, long b, long c, long d, long e, long f)
{
	printk("jprobe: a=%ld, b=%ld, c=%ld, d=%ld, e=%ld, f=%ld\n", a, b, c, d, e, f);
	/* Always end with a call to jprobe_return(). */
	jprobe_return();
	/*NOTREACHED*/
	return 0;
}

static struct jprobe my_jprobe = {
	.entry = (void *)jsum6
};

int init_module(void)
{
	int ret;
	my_jprobe.kp.addr = (kprobe_opcode_t *)kallsyms_lookup_name("sum6");
	if (!my_jprobe.kp.addr) {
		printk("Couldn't find %s to plant jprobe\n", "sum6");
		return -1;
	}
	if ((ret = register_jprobe(&my_jprobe)) < 0) {
		printk("register_jprobe failed, returned %d\n", ret);
		return -1;
	}
	printk("Planted jprobe at %p, handler addr %p\n", my_jprobe.kp.addr, my_jprobe.entry);
	return 0;
}

void cleanup_module(void)
{
	unregister_jprobe(&my_jprobe);
	printk("jprobe unregistered\n");
}

MODULE_LICENSE("GPL");
