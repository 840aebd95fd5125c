/* mallocs N [MS]: calls malloc(32) and free() N times (MS milliseconds
 * apart, default 0), then writes "mallocs: N" with write(2): no stdio, so
 * the program itself calls malloc exactly N times. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10, ms = argc > 2 ? atoi(argv[2]) : 0;
	for (int i = 0; i < n; i++) {
		void *volatile p = malloc(32);
		free(p);
		if (ms > 0) {
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
			nanosleep(&ts, 0);
		}
	}
	char buf[32] = "mallocs: ";
	int len = strlen(buf), k = n, d = 1;
	while (k / d >= 10)
		d *= 10;
	for (; d > 0; d /= 10)
		buf[len++] = '0' + (k / d) % 10;
	buf[len++] = '\n';
	return write(1, buf, len) == len ? 0 : 1;
}
