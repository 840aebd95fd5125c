/* A buggy pre_handler that siglongjmps out of itself (from init_module's own
 * call of work()): the runtime's hit path is abandoned with the thread's
 * fault guard still active. A later, unrelated SIGSEGV of the target
 * (tests/targets/sigprobe's last step) must reach the target's own handler,
 * not be "recovered" to the abandoned handler's stale stack. */
#include <ptap/kprobes.h>
#include <setjmp.h>

static struct kprobe kw;
static sigjmp_buf mj;
static int jumped;

static int pre_w(struct kprobe *p, struct pt_regs *regs)
{
	if (!jumped) {
		jumped = 1;
		siglongjmp(mj, 1);
	}
	return 0;
}

int init_module(void)
{
	kw.symbol_name = "work";
	kw.pre_handler = pre_w;
	int r = register_kprobe(&kw);
	long (*w)(long) = (long (*)(long))kallsyms_lookup_name("work");
	if (!sigsetjmp(mj, 1) && w)
		w(1);
	printk("register=%d jumped=%d\n", r, jumped);
	return r;
}

void cleanup_module(void)
{
	unregister_kprobe(&kw);
}
