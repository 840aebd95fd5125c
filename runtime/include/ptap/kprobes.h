/*
 * ptap/kprobes.h - the Kprobes API for user-space processes (ptap runtime).
 *
 * Modelled on Linux's <linux/kprobes.h> as documented in kprobes.txt (2005).
 * A probe module is a shared object with `int init_module(void)` and
 * `void cleanup_module(void)`; `ptap load MODULE.so -c CMD` runs it inside
 * CMD. Build a module with:  cc -shared -fPIC -O2 -I runtime/include m.c -o m.so
 *
 * Differences from the kernel:
 *  - regs->ip in a pre_handler is the probed address itself (not addr+1).
 *  - kretprobe_instance.task is the thread id (gettid), not a task_struct.
 *  - printk: integer conversions only (%d %i %u %x %X %o %p %s %c %%, flags,
 *    width, precision, l/ll/z/h/hh); %p prints bare hex; no floating point.
 *  - A pre_handler returning non-zero means "I changed regs->ip, resume
 *    there": the probed instruction and post_handler are skipped.
 */
#ifndef PTAP_KPROBES_H
#define PTAP_KPROBES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Linux x86-64 struct pt_regs, field for field. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx;
	unsigned long r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp, ss;
};

typedef unsigned char kprobe_opcode_t;
struct kprobe;
struct kretprobe_instance;

typedef int (*kprobe_pre_handler_t)(struct kprobe *, struct pt_regs *);
typedef void (*kprobe_post_handler_t)(struct kprobe *, struct pt_regs *, unsigned long flags);
typedef int (*kprobe_fault_handler_t)(struct kprobe *, struct pt_regs *, int trapnr);
typedef int (*kretprobe_handler_t)(struct kretprobe_instance *, struct pt_regs *);

#define KPROBE_FLAG_GONE 1
#define KPROBE_FLAG_DISABLED 2
/* ptap extension: a failed registration is not explained on stderr. */
#define KPROBE_FLAG_QUIET 0x100

struct kprobe {
	kprobe_opcode_t *addr;     /* where to probe (or NULL and symbol_name) */
	const char *symbol_name;   /* "func", "lib:func" (lib: libc, libc.so.6 or a path) */
	unsigned int offset;       /* added to the symbol's address */
	kprobe_pre_handler_t pre_handler;
	kprobe_post_handler_t post_handler;
	kprobe_fault_handler_t fault_handler;
	unsigned long nmissed;     /* hits that ran no handler (reentrancy) */
	unsigned int flags;        /* KPROBE_FLAG_DISABLED */
	void *__ptap_private[4];   /* runtime use */
};

struct jprobe {
	struct kprobe kp;
	void *entry;               /* same signature as the probed function; ends with jprobe_return() */
};

struct kretprobe {
	struct kprobe kp;
	kretprobe_handler_t handler;       /* at function return; regs->ax = return value */
	kretprobe_handler_t entry_handler; /* at entry; non-zero return = do not track this call */
	size_t data_size;                  /* bytes of ri->data per instance */
	int maxactive;                     /* <= 0: max(10, 2 * CPUs) */
	int nmissed;                       /* entries that found no free instance */
	void *__ptap_private[4];
};

struct kretprobe_instance {
	struct kretprobe *rp;
	kprobe_opcode_t *ret_addr;  /* the real return address */
	unsigned long task;         /* thread id (gettid) */
	char data[];                /* data_size bytes, for entry_handler -> handler */
};

/* The register_* calls return 0 or a negative errno; -EBUSY (-16) when
 * called from inside a probe handler (register from init_module() or from
 * a thread of your own). */
int register_kprobe(struct kprobe *p);
void unregister_kprobe(struct kprobe *p);
int register_kprobes(struct kprobe **kps, int num);
void unregister_kprobes(struct kprobe **kps, int num);
int enable_kprobe(struct kprobe *p);
int disable_kprobe(struct kprobe *p);

int register_jprobe(struct jprobe *jp);
void unregister_jprobe(struct jprobe *jp);
void jprobe_return(void);

int register_kretprobe(struct kretprobe *rp);
void unregister_kretprobe(struct kretprobe *rp);
/* kretprobed frames of this process left by unwinding (C++ exceptions,
 * thread cancellation, longjmp): their instances were reclaimed and no
 * return handler ran. Not counted in nmissed. (ptap extension) */
unsigned long ptap_kretprobe_unwound(void);

/* Address of a symbol anywhere in the process ("func" or "lib:func"), 0 if unknown. */
unsigned long kallsyms_lookup_name(const char *name);

/* Write to ptap's output (one call = one record: lines never interleave). */
int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Symbolized backtrace of the current (probed) context to ptap's output. */
void dump_stack(void);

#define MODULE_LICENSE(x)

#ifdef __cplusplus
}
#endif

#endif
