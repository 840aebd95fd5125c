/* opens: a few open() calls, some failing. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	const char *paths[] = { "/etc/hostname", "/nonexistent/a", "/proc/self/status", "/nonexistent/b" };
	int ok = 0;
	for (int i = 0; i < 4; i++) {
		int fd = open(paths[i], O_RDONLY);
		if (fd >= 0) {
			ok++;
			close(fd);
		}
	}
	printf("opened %d of 4\n", ok);
	return 0;
}
