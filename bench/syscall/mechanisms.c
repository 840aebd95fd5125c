/* mechanisms.c: the measurements behind docs/syscalls.md, without ptap.
 *   cc -O2 -pthread bench/syscall/mechanisms.c -o /tmp/mech && /tmp/mech
 * Prints ns per call of getppid/getpid: plain; under Syscall User Dispatch
 * (armed but ALLOW; BLOCK, i.e. every call trapped and performed by a SIGSYS
 * handler from the exempt range); under a seccomp filter that traps getppid
 * only (RET_TRAP, instruction-pointer exemption). Then checks the facts the
 * design relies on: dispatch is not inherited by fork or pthread_create and
 * is cleared by execve; a seccomp filter survives execve and kills a program
 * that has no SIGSYS handler. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

extern long gadget(long nr, long a1, long a2, long a3, long a4);
extern char gadget_end[];
extern void restorer(void);
__asm__(".text\n.globl gadget\ngadget:\n mov %rdi,%rax\n mov %rsi,%rdi\n mov %rdx,%rsi\n mov %rcx,%rdx\n"
	" mov %r8,%r10\n syscall\n ret\n.globl restorer\nrestorer:\n mov $15,%eax\n syscall\n ud2\n"
	".globl gadget_end\ngadget_end:\n nop\n nop\n");
struct ksa { void *h; unsigned long flags; void *restorer; unsigned long mask; };
static volatile char sel;
static long traps;

static void h(int sig, siginfo_t *si, void *ucv)
{
	greg_t *g = ((ucontext_t *)ucv)->uc_mcontext.gregs;
	traps++;
	g[REG_RAX] = gadget(si->si_syscall, g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10]);
}

static inline long sys0(long nr)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(nr) : "rcx", "r11", "memory");
	return r;
}

static double now(void)
{
	struct timespec t;
	gadget(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&t, 0, 0);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static double bench(long nr, int n)
{
	double t0 = now();
	for (int i = 0; i < n; i++)
		sys0(nr);
	return (now() - t0) / n;
}

static void arm(void)
{
	if (prctl(59 /* PR_SET_SYSCALL_USER_DISPATCH */, 1, (unsigned long)gadget,
		  gadget_end + 2 - (char *)gadget, &sel))
		perror("prctl");
}

static void *thread_probe(void *a)
{
	(void)a;
	sel = 1;
	long t0 = traps;
	sys0(SYS_getppid);
	long d = traps - t0;
	sel = 0;
	return (void *)d;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 1 && !strcmp(argv[1], "exec-sud")) {
		sys0(SYS_getppid);
		printf("  execve clears dispatch: yes (the exec'ed image ran)\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "exec-seccomp")) {
		sys0(SYS_getppid);
		printf("  seccomp filter gone after execve (unexpected)\n");
		return 0;
	}
	int n = argc > 1 ? atoi(argv[1]) : 200000;
	struct ksa k = { h, SA_SIGINFO | SA_NODEFER | 0x04000000 /* SA_RESTORER */, restorer, 0 };
	gadget(SYS_rt_sigaction, SIGSYS, (long)&k, 0, 8);
	printf("ns per call            getppid   getpid\n");
	printf("plain                 %8.1f %8.1f\n", bench(SYS_getppid, n * 5), bench(SYS_getpid, n * 5));
	arm();
	printf("dispatch ALLOW        %8.1f %8.1f\n", bench(SYS_getppid, n * 5), bench(SYS_getpid, n * 5));
	sel = 1;
	double a = bench(SYS_getppid, n), b = bench(SYS_getpid, n);
	sel = 0;
	printf("dispatch BLOCK (trap) %8.1f %8.1f\n", a, b);

	pthread_t t;
	void *r;
	pthread_create(&t, NULL, thread_probe, NULL);
	pthread_join(t, &r);
	printf("facts:\n  pthread_create inherits dispatch: %s\n", r ? "yes" : "no");
	pid_t p = fork();
	if (p == 0) {
		sel = 1;
		long t0 = traps;
		sys0(SYS_getppid);
		printf("  fork inherits dispatch: %s\n", traps != t0 ? "yes" : "no");
		_exit(0);
	}
	waitpid(p, NULL, 0);
	p = fork();
	if (p == 0) {
		arm();
		sel = 1;
		gadget(SYS_execve, (long)"/proc/self/exe", (long)(char *[]){ argv[0], "exec-sud", NULL },
		       (long)environ, 0);
		_exit(9);
	}
	waitpid(p, NULL, 0);

	p = fork();
	if (p == 0) {
		unsigned long lo = (unsigned long)gadget, hi = (unsigned long)gadget_end;
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 5),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer)),
			BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (unsigned)lo, 0, 2),
			BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (unsigned)hi + 2, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { sizeof f / sizeof f[0], f };
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			perror("seccomp");
		double a = bench(SYS_getppid, n), b = bench(SYS_getpid, n * 5);
		printf("seccomp (getppid only)%8.1f %8.1f\n", a, b);
		pid_t q = fork();
		if (q == 0) {
			execl("/proc/self/exe", argv[0], "exec-seccomp", (char *)0);
			_exit(9);
		}
		int st;
		waitpid(q, &st, 0);
		printf("  a seccomp-filtered child that execs a program without a SIGSYS handler: %s\n",
		       WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS ? "killed by SIGSYS" : "survived");
		_exit(0);
	}
	waitpid(p, NULL, 0);
	return 0;
}
