/* Write PT_LINES (default 20000) printk records as fast as possible from
 * init_module: with a tiny ring most are lost, and ptap must count them. */
#include <ptap/kprobes.h>
#include <stdlib.h>

int init_module(void)
{
	int n = getenv("PT_LINES") ? atoi(getenv("PT_LINES")) : 20000;
	for (int i = 0; i < n; i++)
		printk("line %d\n", i);
	return 0;
}

void cleanup_module(void)
{
}
