/* small_stack: work() runs on a coroutine stack (makecontext) of 64 KiB,
 * with a guard page below it, called with only ROOM bytes of it left
 * (argv[1], default 2048): enough for the program, not for a probe handler's
 * string temporaries. Probes must not need more of it than the trampoline's
 * frame. Prints work's result and whether the coroutine came back. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <alloca.h>

#define STACK (64 << 10)
#define PAGE 4096

static ucontext_t main_uc, co_uc;
static char *stack_lo;
static long room = 2048;
static long result;

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

/* Use all of the stack but `room` bytes, then call work(). */
__attribute__((noinline)) static void deep(void)
{
	char here;
	long use = (long)(&here - stack_lo) - room;
	volatile char *p = alloca(use > 0 ? use : 1);
	p[0] = 41;
	result = work(p[0]);
}

static void co(void)
{
	deep();
}

int main(int argc, char **argv)
{
	if (argc > 1)
		room = atol(argv[1]);
	char *m = mmap(NULL, STACK + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 1;
	mprotect(m, PAGE, PROT_NONE);
	stack_lo = m + PAGE;
	getcontext(&co_uc);
	co_uc.uc_stack.ss_sp = stack_lo;
	co_uc.uc_stack.ss_size = STACK;
	co_uc.uc_link = &main_uc;
	makecontext(&co_uc, co, 0);
	swapcontext(&main_uc, &co_uc);
	printf("work=%ld back=1\n", result);
	return 0;
}
