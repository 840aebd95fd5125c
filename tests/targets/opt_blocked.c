/* opt_blocked: a reader thread blocks in a read() system call issued from
 * inside the first 5 bytes of slow_read (xor; syscall; nop; ret), so its
 * saved ip is inside the bytes a jump would replace. A probe module
 * registers a kprobe on slow_read meanwhile (it must stay on the trap
 * path), releases the reader, registers again (now it may be optimized),
 * then lets main call slow_read three times. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__asm__(".text\n"
	".globl slow_read\n"
	".type slow_read,@function\n"
	"slow_read:\n"
	"  xor %eax, %eax\n"
	"  syscall\n"
	"  nop\n"
	"  ret\n"
	".size slow_read, .-slow_read\n");
long slow_read(int fd, void *buf, long n);

static int p1[2], p2[2];
static volatile int ready, reader_done, phase2;

__attribute__((noinline, used)) int opt_blocked_ready(void) { return ready; }
__attribute__((noinline, used)) int opt_blocked_reader_done(void) { return reader_done; }
__attribute__((noinline, used)) void opt_blocked_release(void)
{
	if (write(p1[1], "ab", 2) != 2)
		perror("write");
}
__attribute__((noinline, used)) void opt_blocked_phase2(void) { phase2 = 1; }

static void *reader(void *arg)
{
	(void)arg;
	char c;
	ready = 1;
	long a = slow_read(p1[0], &c, 1); /* blocks until released */
	long b = slow_read(p1[0], &c, 1); /* data is there */
	printf("reader a=%ld b=%ld\n", a, b);
	reader_done = 1;
	return NULL;
}

int main(void)
{
	if (pipe(p1) || pipe(p2))
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, reader, NULL);
	pthread_join(t, NULL);
	while (!phase2)
		usleep(1000);
	if (write(p2[1], "xyz", 3) != 3)
		return 1;
	char c;
	long n = 0;
	for (int i = 0; i < 3; i++)
		n += slow_read(p2[0], &c, 1);
	printf("main read=%ld\n", n);
	return 0;
}
