/* Registration error codes. Prints one NAME=RESULT line per case. */
#include <ptap/kprobes.h>
#include <string.h>

static int pre(struct kprobe *p, struct pt_regs *r) { return 0; }
static struct kprobe k[12];
static int data_word;

static int try(int i, const char *name, void *addr, const char *sym, unsigned off)
{
	memset(&k[i], 0, sizeof k[i]);
	k[i].addr = addr;
	k[i].symbol_name = sym;
	k[i].offset = off;
	k[i].pre_handler = pre;
	int r = register_kprobe(&k[i]);
	printk("%s=%d\n", name, r);
	return r;
}

int init_module(void)
{
	try(0, "unknown", 0, "no_such_function_xyz", 0);
	try(1, "not_boundary", 0, "work", 1);
	try(2, "runtime", (void *)register_kprobe, 0, 0);
	try(3, "data", &data_word, 0, 0);
	unsigned char before = *(unsigned char *)kallsyms_lookup_name("work");
	try(4, "ok", 0, "work", 0);
	printk("byte_before_is_int3=%d byte_during_is_int3=%d\n", before == 0xcc, *(unsigned char *)k[4].addr == 0xcc);
	try(9, "second_on_same_addr", 0, "work", 0);
	unregister_kprobe(&k[9]);
	printk("still_int3_with_one_left=%d\n", *(unsigned char *)k[4].addr == 0xcc);
	unregister_kprobe(&k[4]);
	printk("restored=%d\n", *(unsigned char *)k[4].addr == before);
	try(4, "ok_again", 0, "work", 0);
	printk("again=%d\n", register_kprobe(&k[4]));
	try(5, "qualified", 0, "libc:getpid", 0);
	try(6, "qualified_path_lib", 0, "libc.so.6:getppid", 0);
	try(7, "unknown_lib", 0, "libnope:getpid", 0);
	try(8, "both_addr_and_symbol", (void *)kallsyms_lookup_name("work"), "work", 0);
	printk("lookup_local=%d\n", kallsyms_lookup_name("local_helper") != 0);
	printk("lookup_missing=%lu\n", kallsyms_lookup_name("no_such_function_xyz"));
	unsigned long w = kallsyms_lookup_name("work");
	printk("addr_matches=%d\n", w == (unsigned long)k[4].addr);
	unsigned char *code = (unsigned char *)k[4].addr;
	int d = disable_kprobe(&k[4]);
	int disarmed = *code != 0xcc;
	int e = enable_kprobe(&k[4]);
	int rearmed = *code == 0xcc;
	printk("disable=%d enable=%d disable_unregistered=%d\n", d, e, disable_kprobe(&k[0]));
	printk("disarmed=%d rearmed=%d\n", disarmed, rearmed);
	return 0;
}

void cleanup_module(void)
{
	unregister_kprobe(&k[4]);
	unregister_kprobe(&k[5]);
	unregister_kprobe(&k[6]);
	printk("cleanup\n");
}
