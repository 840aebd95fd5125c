/* altstack: a thread's work(1) raises SIGUSR1, whose handler runs on an
 * alternate stack mapped above the thread's stack and calls work(2):
 * two kretprobe instances live on two stacks of one thread at once. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static void *alt;
static long inner;

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	if (x == 1)
		raise(SIGUSR1);
	return x * 10 + inner;
}

static void on_usr1(int sig)
{
	inner = work(2);
}

static void *run(void *arg)
{
	stack_t ss = { .ss_sp = alt, .ss_size = 1 << 16 };
	sigaltstack(&ss, NULL);
	return (void *)work(1);
}

int main(void)
{
	alt = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t t;
	void *r;
	pthread_create(&t, NULL, run, NULL);
	pthread_join(t, &r);
	printf("result=%ld inner=%ld\n", (long)r, inner);
	return 0;
}
