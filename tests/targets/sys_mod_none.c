/* sys_mod_none.c: a module that registers nothing (the target registers
 * its own syscall probe later, through dlsym; see sys_opens "late"). */
int init_module(void)
{
	return 0;
}

void cleanup_module(void)
{
}
