/* errno_keep: getppid() never fails, so errno must stay as the program left it. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	errno = 0;
	getppid();
	int a = errno;
	errno = 42;
	getppid();
	int b = errno;
	printf("errno_a=%d errno_b=%d\n", a, b);
	return 0;
}
