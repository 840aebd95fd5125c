/* sites_one_table: the runtime's one site table, from a target's side.
 *
 *   one       (with sites_mod, PTAP_NO_OPTIMIZE=1) N calls of syscall(SYS_getppid)
 *             (an int3 site of libc moved for the syscall probe) and of
 *             sites_probed() (a kprobe's int3), with the runtime counting
 *             its site-table reads: exactly one per int3 trap, and each trap
 *             dispatched to its kind
 *   conflict  (with sys_mod_none) a kprobe on libc's getppid, a moved site
 *             while a syscall probe watches getppid, is refused (-EBUSY);
 *             once the syscall probe is gone the same kprobe registers and
 *             fires
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../runtime/include/ptap/kprobes.h"

__attribute__((noinline)) int sites_probed(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

#define SYM(name) dlsym(RTLD_DEFAULT, name)

/* struct syscall_probe (runtime/include/ptap/syscalls.h). */
struct late_probe {
	const int *nrs;
	int n;
	int (*entry)(void *, struct pt_regs *);
	int (*ret)(void *, struct pt_regs *);
	unsigned long nmissed;
	unsigned int flags;
	void *data;
	void *priv[2];
};

static volatile unsigned long kp_hits;

static int on_getppid(struct kprobe *p, struct pt_regs *r)
{
	kp_hits++;
	return 0;
}

static int sys_entry(void *p, struct pt_regs *r)
{
	return 0;
}

static int one(long n)
{
	void (*count)(int) = (void (*)(int))SYM("ptap_rt_site_count");
	void (*site_stats)(unsigned long *, unsigned long *) =
		(void (*)(unsigned long *, unsigned long *))SYM("ptap_rt_site_stats");
	void (*rt_stats)(unsigned long *, unsigned long *) =
		(void (*)(unsigned long *, unsigned long *))SYM("ptap_rt_stats");
	if (!count || !site_stats || !rt_stats) {
		printf("one: no runtime\n");
		return 1;
	}
	unsigned long h0, t0, s0, h1, t1, s1, lookups;
	long sum = 0, want = 0;
	pid_t ppid = getppid();
	site_stats(NULL, &s0);
	rt_stats(&h0, &t0);
	count(1);
	for (long i = 0; i < n; i++) {
		sum += syscall(SYS_getppid);
		sum += sites_probed((int)i);
		want += ppid + i + 1;
	}
	count(0);
	site_stats(&lookups, &s1);
	rt_stats(&h1, &t1);
	printf("one traps=%lu lookups=%lu kprobe_hits=%lu syscall_int3=%lu ok=%d\n", t1 - t0, lookups,
	       h1 - h0, s1 - s0, sum == want);
	return 0;
}

static int conflict(void)
{
	int (*reg_kp)(struct kprobe *) = (int (*)(struct kprobe *))SYM("register_kprobe");
	void (*unreg_kp)(struct kprobe *) = (void (*)(struct kprobe *))SYM("unregister_kprobe");
	int (*reg_sp)(struct late_probe *) = (int (*)(struct late_probe *))SYM("register_syscall_probe");
	void (*unreg_sp)(struct late_probe *) = (void (*)(struct late_probe *))SYM("unregister_syscall_probe");
	void (*sites)(unsigned long *, unsigned long *, unsigned long *) =
		(void (*)(unsigned long *, unsigned long *, unsigned long *))SYM("ptap_syscall_sites");
	if (!reg_kp || !unreg_kp || !reg_sp || !unreg_sp || !sites) {
		printf("conflict: no runtime\n");
		return 1;
	}
	static const int nr[] = { SYS_getppid };
	static struct late_probe sp = { .nrs = nr, .n = 1, .entry = sys_entry };
	int r_sp = reg_sp(&sp);
	unsigned long patched = 0;
	sites(&patched, NULL, NULL);
	struct kprobe kp;
	memset(&kp, 0, sizeof kp);
	kp.symbol_name = "libc:getppid";
	kp.pre_handler = on_getppid;
	int r_busy = reg_kp(&kp);
	unreg_sp(&sp);
	memset(&kp, 0, sizeof kp);
	kp.symbol_name = "libc:getppid";
	kp.pre_handler = on_getppid;
	int r_after = reg_kp(&kp);
	for (int i = 0; i < 10; i++)
		getppid();
	unreg_kp(&kp);
	printf("conflict syscall_probe=%d moved=%d kprobe_while_moved=%d kprobe_after=%d kprobe_hits=%lu\n",
	       r_sp, patched > 0, r_busy, r_after, kp_hits);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "one"))
		return one(argc > 2 ? atol(argv[2]) : 200);
	if (!strcmp(mode, "conflict"))
		return conflict();
	fprintf(stderr, "usage: sites_one_table one [N] | conflict\n");
	return 2;
}
