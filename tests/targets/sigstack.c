/* sigstack: the target's handlers installed with SA_ONSTACK run on its
 * alternate signal stack: SIGTRAP (raise and int3), SIGSEGV (a stack
 * overflow) and SIGUSR1; those without SA_ONSTACK (SIGTRAP, SIGSEGV) run
 * on the thread stack.
 * work() is called in between (probe it: an unrelated function).
 * Prints one "NAME onstack=0|1" line per case. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static char *alt;
static const size_t ALT = 1 << 16;
static volatile int on;
static sigjmp_buf back;

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

static int here_on_alt(void)
{
	char c;
	uintptr_t p = (uintptr_t)&c;
	return p >= (uintptr_t)alt && p < (uintptr_t)alt + ALT;
}

static void on_sig(int sig)
{
	on = here_on_alt();
	work(sig);
}

static void on_segv(int sig)
{
	on = here_on_alt();
	siglongjmp(back, 1);
}

static void install(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigaction(sig, &sa, NULL);
}

__attribute__((noinline)) static long recurse(long d)
{
	volatile char pad[4096];
	pad[0] = (char)d;
	return recurse(d + 1) + pad[0];
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	alt = mmap(NULL, ALT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stack_t ss = { .ss_sp = alt, .ss_size = ALT };
	sigaltstack(&ss, NULL);
	work(0);

	install(SIGTRAP, on_sig, SA_ONSTACK);
	on = -1;
	raise(SIGTRAP);
	printf("sigtrap-raise onstack=%d\n", on);
	on = -1;
	__asm__ volatile("int3");
	printf("sigtrap-int3 onstack=%d\n", on);

	install(SIGTRAP, on_sig, 0);
	on = -1;
	raise(SIGTRAP);
	printf("sigtrap-no-onstack onstack=%d\n", on);

	install(SIGUSR1, on_sig, SA_ONSTACK);
	on = -1;
	raise(SIGUSR1);
	printf("sigusr1 onstack=%d\n", on);

	install(SIGSEGV, on_segv, SA_ONSTACK);
	on = -1;
	if (!sigsetjmp(back, 1))
		recurse(0);
	printf("sigsegv-overflow onstack=%d\n", on);

	install(SIGSEGV, on_segv, 0);
	on = -1;
	if (!sigsetjmp(back, 1))
		*(volatile int *)8 = 1;
	printf("sigsegv-no-onstack onstack=%d\n", on);
	work(1);
	return 0;
}
