/* mod_none.c: the runtime loaded, no probe (syscall dispatch never armed). */
#include <ptap/syscalls.h>

int init_module(void)
{
	return 0;
}

void cleanup_module(void)
{
}
