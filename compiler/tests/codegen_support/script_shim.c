/* A C probe module that hosts a compiled script: the end-to-end test runs
 * a probe module (ELF .o) in a real target through the runtime's existing
 * PTAP_MODULE (dlopen) path, before ptap's driver loads .o files itself. */
#include <stdlib.h>

extern int ptap_script_attach(const char *path);

int init_module(void)
{
	const char *p = getenv("PTAP_SCRIPT");
	return p ? ptap_script_attach(p) : -22;
}

void cleanup_module(void)
{
}
