/* The hit-path helpers of ptap/runtime.h, used from a handler. */
#include <ptap/kprobes.h>
#include <ptap/runtime.h>
#include <string.h>

static struct kprobe kp;
static const char *msg = "hello from the target";

static int pre(struct kprobe *p, struct pt_regs *r)
{
	char buf[64];
	long v = 0;
	int bad = ptap_probe_read(&v, 0, 8);
	int good = ptap_probe_read(&v, (uint64_t)&r->di, 8);
	int64_t n = ptap_probe_read_str(buf, (uint64_t)msg, sizeof buf);
	int64_t tiny = ptap_probe_read_str(buf + 40, (uint64_t)msg, 6);
	int64_t nul = ptap_probe_read_str(buf + 50, 8, 8);
	char name[16];
	ptap_execname(name, sizeof name);
	printk("bad=%d good=%d v=%ld str=%s n=%ld tiny=%s/%ld nul=%ld name=%s tid_ok=%d\n", bad, good, v, buf, (long)n,
	       buf + 40, (long)tiny, (long)nul, name, ptap_tid() > 0 && ptap_pid() > 0);
	uint64_t args[2] = { 7, 8 };
	ptap_emit(3, args, 2);
	ptap_write("raw\n", 4);
	return 0;
}

int init_module(void)
{
	kp.symbol_name = "work";
	kp.pre_handler = pre;
	return register_kprobe(&kp);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
}
