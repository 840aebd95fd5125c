/* sigwrap N: what a target sees of its own signal handlers must not change
 * under ptap, which runs them through a wrapper (deferred while a jump-path
 * probe handler runs). Prints what it observes; a test compares the output
 * with and without ptap. work() is called N times while a 100 us interval
 * timer interrupts it with SIGALRM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile long alarms, usr1, usr2_value = -1, usr2_code = 99;

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2 + 1;
}

static void on_alarm(int sig) { alarms++; }
static void on_usr1(int sig) { usr1++; }
static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	usr2_value = si->si_value.sival_int;
	usr2_code = si->si_code;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;

	/* signal(): returns the previous handler; BSD semantics. */
	void (*prev)(int) = signal(SIGUSR1, on_usr1);
	printf("signal prev=%s\n", prev == SIG_DFL ? "SIG_DFL" : "other");
	prev = signal(SIGUSR1, on_usr1);
	printf("signal again prev=%s\n", prev == on_usr1 ? "on_usr1" : "other");
	raise(SIGUSR1);
	printf("usr1=%ld\n", usr1);

	/* SA_SIGINFO: the handler gets the sender's siginfo. */
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr2;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaddset(&sa.sa_mask, SIGUSR1);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGUSR2, NULL, &old);
	printf("query handler=%s siginfo=%d restart=%d mask_usr1=%d\n",
	       old.sa_sigaction == on_usr2 ? "on_usr2" : "other", !!(old.sa_flags & SA_SIGINFO),
	       !!(old.sa_flags & SA_RESTART), sigismember(&old.sa_mask, SIGUSR1));
	union sigval v = { .sival_int = 42 };
	sigqueue(getpid(), SIGUSR2, v);
	printf("usr2 value=%ld queued=%d\n", usr2_value, usr2_code == SI_QUEUE);

	/* SA_RESETHAND: one delivery, then the default action. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGUSR1, &sa, NULL);
	raise(SIGUSR1);
	sigaction(SIGUSR1, NULL, &old);
	printf("resethand usr1=%ld now=%s\n", usr1, old.sa_handler == SIG_DFL ? "SIG_DFL" : "other");

	/* SIG_IGN through sigaction reads back as SIG_IGN; the new and the old
	 * action in one struct (act == oldact). */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGUSR2, &sa, &sa);
	printf("replaced=%s\n", sa.sa_sigaction == on_usr2 ? "on_usr2" : "other");
	sigaction(SIGUSR2, NULL, &old);
	printf("ignored=%d\n", old.sa_handler == SIG_IGN);

	/* Timer signals while work() runs: every one reaches the handler. */
	signal(SIGALRM, on_alarm);
	struct itimerval it = { { 0, 100 }, { 0, 100 } };
	setitimer(ITIMER_REAL, &it, NULL);
	long sum = 0;
	for (long i = 0; i < n; i++)
		sum += work(i);
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	printf("sum=%ld alarms>0=%d\n", sum, alarms > 0);
	return 0;
}
