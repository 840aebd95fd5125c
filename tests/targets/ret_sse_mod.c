/* Like ret_vec_mod.c, but its handlers use only legacy SSE (they overwrite
 * the low 128 bits of xmm0-15, never an upper half) and it imports only
 * the runtime's functions: ptap counts such a module's handlers as known
 * code and gives them the lighter vector saves. The callers must still get
 * the returned values and keep what they hold in registers. The kprobe's
 * handler also tries to register a probe from inside the handler, which
 * the runtime refuses (printed as nested=). */
#include <ptap/kprobes.h>

static long hits, entries, nested = 1;

static void clobber_low_halves(void)
{
	__asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tpcmpeqd %%xmm1, %%xmm1\n\t"
			 "pcmpeqd %%xmm2, %%xmm2\n\tpcmpeqd %%xmm3, %%xmm3\n\t"
			 "pcmpeqd %%xmm4, %%xmm4\n\tpcmpeqd %%xmm5, %%xmm5\n\t"
			 "pcmpeqd %%xmm6, %%xmm6\n\tpcmpeqd %%xmm7, %%xmm7\n\t"
			 "pcmpeqd %%xmm8, %%xmm8\n\tpcmpeqd %%xmm9, %%xmm9\n\t"
			 "pcmpeqd %%xmm10, %%xmm10\n\tpcmpeqd %%xmm11, %%xmm11\n\t"
			 "pcmpeqd %%xmm12, %%xmm12\n\tpcmpeqd %%xmm13, %%xmm13\n\t"
			 "pcmpeqd %%xmm14, %%xmm14\n\tpcmpeqd %%xmm15, %%xmm15" ::
				 : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
				   "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
				   "xmm15");
}

static struct kprobe late = { .symbol_name = "wide_of" };

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	(void)p;
	(void)regs;
	if (entries++ == 0)
		nested = register_kprobe(&late);
	clobber_low_halves();
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	(void)ri;
	(void)regs;
	hits++;
	clobber_low_halves();
	return 0;
}

static struct kprobe kp = { .symbol_name = "pair_of", .pre_handler = pre };
static struct kretprobe rp1 = { .kp = { .symbol_name = "pair_of" }, .handler = ret, .maxactive = 4 };
static struct kretprobe rp2 = { .kp = { .symbol_name = "wide_of" }, .handler = ret, .maxactive = 4 };

int init_module(void)
{
	int r = register_kprobe(&kp);
	if (!r)
		r = register_kretprobe(&rp1);
	return r ? r : register_kretprobe(&rp2);
}

void cleanup_module(void)
{
	unregister_kprobe(&kp);
	unregister_kretprobe(&rp1);
	unregister_kretprobe(&rp2);
	printk("entries=%ld ret_hits=%ld nested=%ld\n", entries, hits, nested);
}
