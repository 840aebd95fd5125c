/* dump_stack() outside any handler: from init_module, through a helper. */
#include <ptap/kprobes.h>

__attribute__((noinline)) static void inner(void)
{
	dump_stack();
	__asm__ volatile("" ::: "memory");
}

int init_module(void)
{
	inner();
	return 0;
}

void cleanup_module(void)
{
}
