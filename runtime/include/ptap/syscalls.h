/*
 * ptap/syscalls.h - system call probes for user-space processes (ptap runtime).
 *
 * A syscall probe watches a set of system call numbers of the target
 * process, whoever issues them (libc wrappers, libc internals, inline
 * `syscall` instructions, every thread, forked and exec'ed children that
 * load the runtime). In the Kprobes style:
 *
 *   entry(p, regs)  runs before the call: regs->di, si, dx, r10, r8, r9 are
 *                   the arguments (syscall ABI: r10, not cx, is the 4th),
 *                   regs->orig_ax is the number, regs->ax is -ENOSYS.
 *                   Changing an argument register changes the call made.
 *   ret(p, regs)    runs after it: regs->ax is the raw kernel return value
 *                   (-errno on failure, e.g. -2 for ENOENT); the argument
 *                   registers are those the call was made with. Changing
 *                   regs->ax changes what the target sees.
 *
 * Handlers run in the target thread, in signal context: they may call the
 * functions of ptap/kprobes.h (printk, dump_stack); their own system calls
 * are not seen by syscall probes. Their return value must be 0 (reserved).
 * A handler that faults is aborted and counted, the target goes on.
 * A probe hit while a handler already runs on that thread runs no handler
 * and increments nmissed.
 *
 * Mechanism: Syscall User Dispatch (docs/syscalls.md). While any syscall
 * probe is registered, every system call of the process traps (about 1.6 us
 * each, 2 us with handlers), probed or not; after unregister or detach none
 * does. A registration after start-up arms the threads that already exist.
 *
 * Build a module with:  cc -shared -fPIC -O2 -I runtime/include m.c -o m.so
 */
#ifndef PTAP_SYSCALLS_H
#define PTAP_SYSCALLS_H

#include <ptap/kprobes.h>

#ifdef __cplusplus
extern "C" {
#endif

struct syscall_probe;
typedef int (*syscall_handler_t)(struct syscall_probe *, struct pt_regs *);

#define SYSCALL_PROBE_DISABLED 1

struct syscall_probe {
	const int *nrs;            /* system call numbers (x86-64 __NR_*), each < 512 */
	int n;                     /* how many */
	syscall_handler_t entry;   /* before the call, or NULL */
	syscall_handler_t ret;     /* after the call, or NULL */
	unsigned long nmissed;     /* hits that ran no handler (reentrancy) */
	unsigned int flags;        /* SYSCALL_PROBE_DISABLED: registered, handlers skipped */
	void *data;                /* for the module */
	void *__ptap_private[2];   /* runtime use */
};

#ifdef __cplusplus
static_assert(sizeof(struct syscall_probe) == 72, "struct syscall_probe layout (x86-64)");
#else
_Static_assert(sizeof(struct syscall_probe) == 72, "struct syscall_probe layout (x86-64)");
#endif

/* The open family (what ptap's language calls sys_open). The path is
 * regs->di for open and creat, regs->si for openat and openat2. */
#define SYSCALL_OPEN_FAMILY 2 /* open */, 257 /* openat */, 437 /* openat2 */, 85 /* creat */

/* 0, or -EINVAL (bad numbers, no handler), -EEXIST (already registered),
 * -ENOSPC (64 probes registered), -ENOSYS (no Syscall User Dispatch). */
int register_syscall_probe(struct syscall_probe *p);
/* After it returns, no handler of p runs again (safe from any thread). */
void unregister_syscall_probe(struct syscall_probe *p);

/* Inside a handler: SYSCALL_PROBE_DATA_SIZE bytes of scratch for this call
 * and this probe, zeroed when the call traps, the same at entry and at
 * return (what ri->data is to a kretprobe). NULL outside a handler, or for
 * a ninth probe watching the same call. */
#define SYSCALL_PROBE_DATA_SIZE 64
void *syscall_probe_data(void);

/* SIGSYS traps taken and handler calls so far in this process (NULL ok). */
void ptap_syscall_stats(unsigned long *traps, unsigned long *hits);
/* Threads of this process whose dispatch is on. */
int ptap_syscall_armed_threads(void);
/* libc sites moved out of libc right now (a jump over their `mov`, or an
 * int3 on their `syscall`), and calls that ran handlers through the direct
 * path (no trap) so far (NULL ok). See docs/syscalls.md. */
void ptap_syscall_sites(unsigned long *patched, unsigned long *int3, unsigned long *direct);

/* The path argument of an open-family call. */
static inline const char *syscall_open_path(const struct pt_regs *regs)
{
	return (const char *)((regs->orig_ax == 257 || regs->orig_ax == 437) ? regs->si : regs->di);
}

#ifdef __cplusplus
}
#endif

#endif
