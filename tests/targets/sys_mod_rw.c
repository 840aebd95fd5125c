/* sys_mod_rw.c: counts entries and returns of read, write and getpid. */
#include <ptap/syscalls.h>
static const int nrs[] = { 0, 1, 39 };
static unsigned long e, r;
static int en(struct syscall_probe *p, struct pt_regs *regs) { __atomic_fetch_add(&e, 1, 0); return 0; }
static int re(struct syscall_probe *p, struct pt_regs *regs) { __atomic_fetch_add(&r, 1, 0); return 0; }
static struct syscall_probe sp = { .nrs = nrs, .n = 3, .entry = en, .ret = re };
int init_module(void) { return register_syscall_probe(&sp); }
void cleanup_module(void) { unregister_syscall_probe(&sp); printk("rw entries=%lu returns=%lu nmissed=%lu\n", e, r, sp.nmissed); }
