/* sys_mod_kmix.c: a kprobe with a post_handler on the `syscall` instruction
 * of libc's getppid (so that instruction is single-stepped out of line)
 * together with a syscall probe on getppid: both must see every call. */
#include <ptap/syscalls.h>
static unsigned long pre, post, sys_e, sys_r;
static int k_pre(struct kprobe *p, struct pt_regs *r) { pre++; return 0; }
static void k_post(struct kprobe *p, struct pt_regs *r, unsigned long f) { post++; }
static int s_e(struct syscall_probe *p, struct pt_regs *r) { sys_e++; return 0; }
static int s_r(struct syscall_probe *p, struct pt_regs *r) { sys_r++; return 0; }
static struct kprobe kp = { .pre_handler = k_pre, .post_handler = k_post };
static const int nr[] = { 110 };
static struct syscall_probe sp = { .nrs = nr, .n = 1, .entry = s_e, .ret = s_r };
int init_module(void) {
	unsigned long a = kallsyms_lookup_name("libc:getppid");
	kp.addr = (void *)(a + 5);
	int r1 = register_kprobe(&kp);
	int r2 = register_syscall_probe(&sp);
	printk("reg %d %d\n", r1, r2);
	return 0;
}
void cleanup_module(void) {
	unregister_kprobe(&kp);
	unregister_syscall_probe(&sp);
	printk("pre=%lu post=%lu sys_entry=%lu sys_ret=%lu missed=%lu\n", pre, post, sys_e, sys_r, sp.nmissed);
}
