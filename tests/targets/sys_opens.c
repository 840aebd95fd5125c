/* sys_opens MODE: system calls for the syscall-probe tests.
 *   basic       open(), fopen(), syscall(SYS_openat) and an inline `syscall`
 *               instruction, each on its own missing path
 *   args        getppid through syscall() with six marker arguments
 *   threads N   N threads made after start-up, each opens /nonexistent/tI
 *   fork        a forked child opens /nonexistent/forkchild
 *   exec        a forked child execs this program ("leaf", runtime kept)
 *   execclean   a forked child execs this program with LD_PRELOAD removed
 *   ppid        prints what getppid returns
 *   leaf        opens /nonexistent/leaf
 *   quiet       sleeps 1.5 s, then opens /nonexistent/quiet
 *   signals     a blocking read interrupted by SIGALRM, without then with
 *               SA_RESTART; the handler opens /nonexistent/inhandler
 *   detach      calls getpid (inline `syscall`: libc's calls never trap)
 *               until the runtime's trap counter stops (ptap detached), then
 *               checks that no call traps any more and that a thread asleep
 *               in read() across the detach disarms too
 *   spin N      N getppid + N getpid calls, ns per call of each
 *   spawn       posix_spawn, system() and vfork+exec of this program ("leaf"),
 *               then a raw clone(CLONE_VM) thread on its own stack
 *   masks       blocks every signal through the raw rt_sigprocmask system
 *               call, changes the alternate signal stack, then makes calls
 *   late        three threads block in read(); then the program registers its
 *               own syscall probe (dlsym'ed register_syscall_probe) and
 *               releases them; each opens /nonexistent/lateI
 *   spawnsegv   installs a SIGSEGV handler, posix_spawns a child with SIGSEGV
 *               in its default set (POSIX_SPAWN_SETSIGDEF), then faults:
 *               the handler still runs (the child's resets stay its own)
 *   ppidloop N  N calls of libc's getppid(), then one more to check them
 *   int80       a 32-bit getpid (int 0x80, number 20: writev in 64-bit numbering)
 *   hammer      4 threads open in a loop; the program registers its own probe,
 *               then unregisters it while they run: no handler may run
 *               after unregister returns
 *   sigstress   a 500 us SIGALRM timer (SA_RESTART; the handler makes calls)
 *               while two threads pass 20000 bytes through a pipe one byte
 *               at a time
 *   efault      bad pointers to the calls whose arguments the runtime reads
 *   churn N     N rounds of: make 4 threads that each open, join them
 *   fast        (with sys_fast_mod) counts the traps and direct-path calls of
 *               libc and inline getpid/getppid, checks libc's text is
 *               patched, then readv from libc and inline, and a blocked readv
 *               interrupted by SIGALRM without and with SA_RESTART
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <sys/time.h>
#include <spawn.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static long inline_openat(const char *path)
{
	long r;
	register long r10 __asm__("r10") = 0;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "0"((long)SYS_openat), "D"((long)AT_FDCWD), "S"(path), "d"((long)O_RDONLY), "r"(r10)
			 : "rcx", "r11", "memory");
	return r;
}

static void *thread_main(void *arg)
{
	char path[64];
	snprintf(path, sizeof path, "/nonexistent/t%ld", (long)arg);
	int fd = open(path, O_RDONLY);
	return (void *)(long)fd;
}

static int run_child(char **argv, int clean)
{
	pid_t p = fork();
	if (p == 0) {
		if (clean)
			unsetenv("LD_PRELOAD");
		execl("/proc/self/exe", argv[0], "leaf", (char *)0);
		_exit(127);
	}
	int st = 0;
	waitpid(p, &st, 0);
	printf("child %d status=%d signaled=%d\n", (int)p, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
	       WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

static int pfd[2];
static volatile int handled, write_in_handler;

static void on_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	handled++;
	int fd = open("/nonexistent/inhandler", O_RDONLY);
	(void)fd;
	if (write_in_handler)
		write(pfd[1], "x", 1);
	errno = saved;
}

static void arm_alarm(int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = flags;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 0 }, { 0, 200000 } };
	setitimer(ITIMER_REAL, &it, NULL);
}

extern char **environ;
static sigjmp_buf segv_jb;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(segv_jb, 1);
}

/* The runtime's C API, reached through dlsym (struct syscall_probe layout). */
struct late_probe {
	const int *nrs;
	int n;
	int (*entry)(void *, unsigned long *);
	int (*ret)(void *, unsigned long *);
	unsigned long nmissed;
	unsigned int flags;
	void *data;
	void *priv[2];
};
static int late_pipe[2];
static volatile int late_seen, late_reads_ok;

static int late_ret(void *p, unsigned long *regs)
{
	(void)p;
	const char *path = (const char *)regs[13]; /* si */
	if (path && !strncmp(path, "/nonexistent/late", 17) && (long)regs[10] == -2) /* ax */
		__atomic_fetch_add(&late_seen, 1, __ATOMIC_RELAXED);
	return 0;
}

static volatile int hammer_stop, hammer_in;
static volatile long hammer_hits;

static int hammer_ret(void *p, unsigned long *regs)
{
	(void)p;
	(void)regs;
	__atomic_fetch_add(&hammer_in, 1, __ATOMIC_SEQ_CST);
	for (volatile int i = 0; i < 2000; i++)
		;
	__atomic_fetch_add(&hammer_hits, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_sub(&hammer_in, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static void *hammer_thread(void *arg)
{
	(void)arg;
	while (!hammer_stop)
		open("/nonexistent/hammer", O_RDONLY);
	return NULL;
}

static int ss_pipe[2];
static volatile long ss_ticks;

static void ss_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	ss_ticks++;
	syscall(SYS_getpid);
	errno = saved;
}

static void *ss_writer(void *arg)
{
	(void)arg;
	long bad = 0;
	for (int i = 0; i < 20000; i++) {
		char c = (char)i;
		if (write(ss_pipe[1], &c, 1) != 1)
			bad++;
	}
	return (void *)bad;
}

static void *ss_reader(void *arg)
{
	(void)arg;
	long bad = 0;
	for (int i = 0; i < 20000; i++) {
		char c;
		ssize_t r = read(ss_pipe[0], &c, 1);
		if (r != 1 || c != (char)i)
			bad++;
	}
	return (void *)bad;
}

static void *late_thread(void *arg)
{
	char c, path[64];
	if (read(late_pipe[0], &c, 1) == 1)
		__atomic_fetch_add(&late_reads_ok, 1, __ATOMIC_RELAXED);
	snprintf(path, sizeof path, "/nonexistent/late%ld", (long)arg);
	open(path, O_RDONLY);
	return NULL;
}

static int raw_child(void *arg)
{
	/* Raw syscalls only: this thread has no TLS of its own. */
	long r;
	register long r10 __asm__("r10") = 0;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "0"((long)SYS_openat), "D"((long)AT_FDCWD), "S"("/nonexistent/rawclone"), "d"(0L), "r"(r10)
			 : "rcx", "r11", "memory");
	*(volatile long *)arg = r;
	return 0;
}

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static int det_a[2], det_b[2];
static volatile int det_done;

/* getpid by an inline `syscall` of this executable: outside libc, it traps
 * whenever the thread is armed (libc's own getpid never does). */
static long inline_getpid(void)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_getpid) : "rcx", "r11", "memory");
	return r;
}

/* Sleeps in read() across the detach, then makes libc calls: the detach
 * turns its dispatch off (armed_after=0). */
static void *detach_thread(void *arg)
{
	char c;
	(void)arg;
	read(det_a[0], &c, 1);
	/* libc calls only: they never trap, so the dispatch must have been
	 * turned off for this thread by the detach itself. */
	for (int i = 0; i < 10; i++)
		getpid();
	det_done = 1;
	read(det_b[0], &c, 1);
	return NULL;
}

/* Is libc's text in memory byte for byte its file (no site moved out)? */
static int libc_pristine(void)
{
	FILE *m = fopen("/proc/self/maps", "r");
	char line[512], path[400];
	unsigned long lo, hi, off;
	int res = -1;
	while (m && fgets(line, sizeof line, m)) {
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %399s", &lo, &hi, perms, &off, path) != 5)
			continue;
		if (strcmp(perms, "r-xp") || !strstr(path, "/libc.so.6"))
			continue;
		int fd = open(path, O_RDONLY);
		char *buf = malloc(hi - lo);
		res = fd >= 0 && buf && pread(fd, buf, hi - lo, off) == (ssize_t)(hi - lo) &&
		      !memcmp(buf, (void *)lo, hi - lo);
		free(buf);
		close(fd);
		break;
	}
	if (m)
		fclose(m);
	return res;
}

static unsigned long sites_now(int which)
{
	static void (*f)(unsigned long *, unsigned long *, unsigned long *);
	if (!f)
		f = (void (*)(unsigned long *, unsigned long *, unsigned long *))dlsym(RTLD_DEFAULT,
											"ptap_syscall_sites");
	unsigned long v[3] = { 0, 0, 0 };
	if (f)
		f(&v[0], &v[1], &v[2]);
	return v[which];
}

static long inline_sys3(long nr, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

static int armed_threads(void)
{
	int (*f)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ptap_syscall_armed_threads");
	return f ? f() : -1;
}

static unsigned long traps_now(void)
{
	static void (*stats)(unsigned long *, unsigned long *);
	if (!stats)
		stats = (void (*)(unsigned long *, unsigned long *))dlsym(RTLD_DEFAULT, "ptap_syscall_stats");
	unsigned long t = 0;
	if (stats)
		stats(&t, NULL);
	return t;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "basic";
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(mode, "basic")) {
		int a = open("/nonexistent/open", O_RDONLY);
		FILE *f = fopen("/nonexistent/fopen", "r");
		long b = syscall(SYS_openat, AT_FDCWD, "/nonexistent/syscall", O_RDONLY);
		long c = inline_openat("/nonexistent/inline");
		int ok = open("/etc/hostname", O_RDONLY);
		printf("open=%d fopen=%s syscall=%ld inline=%ld ok=%d\n", a, f ? "ok" : "NULL", b, c, ok >= 0);
	} else if (!strcmp(mode, "args")) {
		long r = syscall(SYS_getppid, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66);
		printf("getppid_ok=%d\n", r == getppid());
	} else if (!strcmp(mode, "threads")) {
		long n = argc > 2 ? atol(argv[2]) : 4;
		pthread_t t[64];
		if (n > 64)
			n = 64;
		for (long i = 0; i < n; i++)
			pthread_create(&t[i], NULL, thread_main, (void *)i);
		long bad = 0;
		for (long i = 0; i < n; i++) {
			void *r;
			pthread_join(t[i], &r);
			bad += (long)r == -1;
		}
		printf("threads=%ld failed_opens=%ld\n", n, bad);
	} else if (!strcmp(mode, "fork")) {
		pid_t p = fork();
		if (p == 0) {
			open("/nonexistent/forkchild", O_RDONLY);
			_exit(0);
		}
		waitpid(p, NULL, 0);
		open("/nonexistent/forkparent", O_RDONLY);
		printf("parent=%d child=%d\n", (int)getpid(), (int)p);
	} else if (!strcmp(mode, "exec") || !strcmp(mode, "execclean")) {
		printf("parent=%d\n", (int)getpid());
		return run_child(argv, !strcmp(mode, "execclean"));
	} else if (!strcmp(mode, "ppid")) {
		printf("ppid=%ld\n", syscall(SYS_getppid));
	} else if (!strcmp(mode, "leaf")) {
		int fd = open("/nonexistent/leaf", O_RDONLY);
		const char *pre = getenv("LD_PRELOAD");
		printf("leaf pid=%d fd=%d preload=%s\n", (int)getpid(), fd, pre && *pre ? "yes" : "no");
	} else if (!strcmp(mode, "quiet")) {
		struct timespec ts = { 1, 500000000 };
		nanosleep(&ts, NULL);
		open("/nonexistent/quiet", O_RDONLY);
		printf("quiet done\n");
	} else if (!strcmp(mode, "signals")) {
		char c;
		pipe(pfd);
		arm_alarm(0);
		errno = 0;
		long r = read(pfd[0], &c, 1);
		printf("norestart r=%ld errno=%d handled=%d\n", r, errno, handled);
		write_in_handler = 1;
		arm_alarm(SA_RESTART);
		errno = 0;
		r = read(pfd[0], &c, 1);
		printf("restart r=%ld errno=%d handled=%d c=%c\n", r, errno, handled, r == 1 ? c : '?');
	} else if (!strcmp(mode, "fast")) {
		/* Which calls trap: counted exactly (sys_fast_mod probes getppid
		 * and readv; getpid is not probed). */
		unsigned long t0 = traps_now(), d0 = sites_now(2);
		for (int i = 0; i < 1000; i++)
			getpid();
		unsigned long t1 = traps_now(), d1 = sites_now(2);
		for (int i = 0; i < 1000; i++)
			inline_getpid();
		unsigned long t2 = traps_now(), d2 = sites_now(2);
		for (int i = 0; i < 1000; i++)
			getppid();
		unsigned long t3 = traps_now(), d3 = sites_now(2);
		for (int i = 0; i < 1000; i++)
			inline_sys3(SYS_getppid, 0, 0, 0);
		unsigned long t4 = traps_now(), d4 = sites_now(2);
		/* syscall(): the number is in a register, an int3 site: an
		 * unprobed number runs from libc, a probed one takes the site's
		 * direct stub (no SIGSYS in either case). */
		for (int i = 0; i < 100; i++)
			syscall(SYS_getpid);
		unsigned long t5 = traps_now(), d5 = sites_now(2);
		for (int i = 0; i < 100; i++)
			syscall(SYS_getppid);
		unsigned long t6 = traps_now(), d6 = sites_now(2);
		printf("libc_getpid traps=%lu direct=%lu\n", t1 - t0, d1 - d0);
		printf("inline_getpid traps=%lu direct=%lu\n", t2 - t1, d2 - d1);
		printf("libc_getppid traps=%lu direct=%lu\n", t3 - t2, d3 - d2);
		printf("inline_getppid traps=%lu direct=%lu\n", t4 - t3, d4 - d3);
		printf("syscall_getpid traps=%lu direct=%lu\n", t5 - t4, d5 - d4);
		printf("syscall_getppid traps=%lu direct=%lu int3_sites=%d\n", t6 - t5, d6 - d5, sites_now(1) > 0);
		printf("patched=%d pristine=%d\n", sites_now(0) > 0, libc_pristine());
		/* readv from libc (a patched site: the direct path) and inline,
		 * with data, then blocked and interrupted by SIGALRM without and
		 * with SA_RESTART. */
		char c = '?';
		struct iovec iov = { &c, 1 };
		pipe(pfd);
		printf("pipe_fd=%d\n", pfd[0]);
		write(pfd[1], "a", 1);
		long r = readv(pfd[0], &iov, 1);
		printf("libc_readv r=%ld c=%c\n", r, c);
		write(pfd[1], "b", 1);
		r = inline_sys3(SYS_readv, pfd[0], (long)&iov, 1);
		printf("inline_readv r=%ld c=%c\n", r, c);
		arm_alarm(0);
		errno = 0;
		r = readv(pfd[0], &iov, 1);
		printf("norestart r=%ld errno=%d handled=%d\n", r, errno, handled);
		write_in_handler = 1;
		arm_alarm(SA_RESTART);
		errno = 0;
		r = readv(pfd[0], &iov, 1);
		printf("restart r=%ld errno=%d handled=%d c=%c\n", r, errno, handled, r == 1 ? c : '?');
	} else if (!strcmp(mode, "detach")) {
		pthread_t th;
		pipe(det_a);
		pipe(det_b);
		pthread_create(&th, NULL, detach_thread, NULL);
		usleep(100000);
		open("/nonexistent/beforedetach", O_RDONLY);
		int pristine_before = libc_pristine();
		unsigned long start = traps_now(), last = start;
		double t0 = now_ns(), still = t0;
		printf("armed=%d armed_threads=%d\n", start > 0, armed_threads());
		fflush(stdout); /* the test detaches once it sees this line */
		while (now_ns() - t0 < 20e9) {
			for (int i = 0; i < 1000; i++)
				inline_getpid();
			unsigned long t = traps_now();
			if (t != last) {
				last = t;
				still = now_ns();
			} else if (now_ns() - still > 300e6) {
				break;
			}
		}
		unsigned long before = traps_now();
		for (int i = 0; i < 100000; i++)
			inline_getpid();
		open("/nonexistent/afterdetach", O_RDONLY);
		unsigned long after = traps_now() - before;
		write(det_a[1], "x", 1);
		while (!det_done)
			usleep(1000);
		printf("detached=%d traps_during_run=%d traps_after=%lu armed_after=%d\n", now_ns() - t0 < 20e9,
		       last > start, after, armed_threads());
		printf("pristine_before=%d pristine_after=%d\n", pristine_before, libc_pristine());
	} else if (!strcmp(mode, "spawn")) {
		char *args[] = { argv[0], "leaf", NULL };
		pid_t p;
		int st = -1;
		int e = posix_spawn(&p, "/proc/self/exe", NULL, NULL, args, environ);
		if (e == 0)
			waitpid(p, &st, 0);
		printf("posix_spawn=%d status=%d\n", e, st);
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "%s leaf", argv[0]);
		printf("system=%d\n", system(cmd));
		p = vfork();
		if (p == 0) {
			execl("/proc/self/exe", argv[0], "leaf", (char *)0);
			_exit(127);
		}
		waitpid(p, &st, 0);
		printf("vfork status=%d\n", st);
		size_t sz = 1 << 16;
		char *stk = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		volatile long res = 1;
		int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
		int tid = clone(raw_child, stk + sz, flags, (void *)&res);
		for (int i = 0; i < 2000 && res == 1; i++)
			usleep(1000);
		printf("rawclone tid>0=%d res=%ld\n", tid > 0, res);
	} else if (!strcmp(mode, "masks")) {
		unsigned long all = ~0UL, old = 0;
		long r = syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
		stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0 }, cur;
		long r2 = sigaltstack(&ss, NULL);
		sigaltstack(NULL, &cur);
		int fd = open("/nonexistent/masked", O_RDONLY);
		unsigned long now = 0;
		syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &now, 8);
		printf("sigprocmask=%ld blocked_int=%d sigaltstack=%ld same=%d fd=%d\n", r, (now >> (SIGINT - 1)) & 1,
		       r2, cur.ss_sp == ss.ss_sp && cur.ss_size == ss.ss_size, fd);
	} else if (!strcmp(mode, "late")) {
		pthread_t t[3];
		pipe(late_pipe);
		for (long i = 0; i < 3; i++)
			pthread_create(&t[i], NULL, late_thread, (void *)i);
		usleep(200000); /* the threads now sleep in read() */
		int (*reg)(struct late_probe *) = (int (*)(struct late_probe *))dlsym(RTLD_DEFAULT, "register_syscall_probe");
		static const int nr[] = { SYS_openat };
		static struct late_probe probe = { .nrs = nr, .n = 1, .ret = late_ret };
		int r = reg ? reg(&probe) : -1;
		write(late_pipe[1], "abc", 3);
		for (int i = 0; i < 3; i++)
			pthread_join(t[i], NULL);
		printf("late registered=%d seen=%d reads_ok=%d\n", r, late_seen, late_reads_ok);
	} else if (!strcmp(mode, "spawnsegv")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_segv;
		sigaction(SIGSEGV, &sa, NULL);
		char *args[] = { argv[0], "leaf", NULL };
		pid_t p;
		int st = -1;
		posix_spawnattr_t at;
		sigset_t def;
		posix_spawnattr_init(&at);
		sigemptyset(&def);
		sigaddset(&def, SIGSEGV);
		posix_spawnattr_setsigdefault(&at, &def);
		posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
		if (posix_spawn(&p, "/proc/self/exe", NULL, &at, args, environ) == 0)
			waitpid(p, &st, 0);
		if (sigsetjmp(segv_jb, 1) == 0) {
			*(volatile int *)8 = 1;
			printf("no fault?\n");
		} else {
			printf("segv handled after spawn status=%d\n", st);
		}
	} else if (!strcmp(mode, "ppidloop")) {
		long n = argc > 2 ? atol(argv[2]) : 1000, sum = 0;
		for (long i = 0; i < n; i++)
			sum += getppid();
		printf("ppidloop ok=%d\n", sum == n * getppid());
	} else if (!strcmp(mode, "int80")) {
		long r;
		__asm__ volatile("int $0x80" : "=a"(r) : "0"(20L) : "memory");
		printf("int80 getpid ok=%d\n", r == getpid());
	} else if (!strcmp(mode, "hammer")) {
		pthread_t t[4];
		int (*reg)(struct late_probe *) = (int (*)(struct late_probe *))dlsym(RTLD_DEFAULT, "register_syscall_probe");
		void (*unreg)(struct late_probe *) = (void (*)(struct late_probe *))dlsym(RTLD_DEFAULT, "unregister_syscall_probe");
		static const int nr[] = { SYS_openat };
		static struct late_probe probe = { .nrs = nr, .n = 1, .ret = hammer_ret };
		int r = reg ? reg(&probe) : -1;
		for (long i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, hammer_thread, NULL);
		usleep(300000);
		long before = hammer_hits;
		if (unreg)
			unreg(&probe);
		int inside = hammer_in;
		long at_unreg = hammer_hits;
		usleep(200000);
		hammer_stop = 1;
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		printf("hammer registered=%d hits_before=%d inside_after_unregister=%d more_after=%ld\n", r, before > 0,
		       inside, hammer_hits - at_unreg);
	} else if (!strcmp(mode, "sigstress")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = ss_alarm;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGALRM, &sa, NULL);
		pipe(ss_pipe);
		struct itimerval it = { { 0, 500 }, { 0, 500 } };
		setitimer(ITIMER_REAL, &it, NULL);
		pthread_t w, r;
		void *bw, *br;
		pthread_create(&r, NULL, ss_reader, NULL);
		pthread_create(&w, NULL, ss_writer, NULL);
		pthread_join(w, &bw);
		pthread_join(r, &br);
		struct itimerval off = { { 0, 0 }, { 0, 0 } };
		setitimer(ITIMER_REAL, &off, NULL);
		printf("sigstress bad_writes=%ld bad_reads=%ld ticked=%d\n", (long)bw, (long)br, ss_ticks > 0);
	} else if (!strcmp(mode, "efault")) {
		void *bad = (void *)8;
		long r1 = syscall(SYS_rt_sigprocmask, SIG_SETMASK, bad, NULL, 8);
		int e1 = errno;
		long r2 = syscall(SYS_rt_sigaction, SIGSEGV, bad, NULL, 8);
		int e2 = errno;
		long r3 = syscall(SYS_rt_sigaction, SIGINT, bad, NULL, 8);
		int e3 = errno;
		long r4 = syscall(SYS_rt_sigaction, SIGINT, NULL, bad, 8);
		int e4 = errno;
		long r5 = syscall(SYS_pselect6, 0, NULL, NULL, NULL, NULL, bad);
		int e5 = errno;
		long r6 = syscall(SYS_clone3, bad, 88);
		int e6 = errno;
		printf("efault %ld/%d %ld/%d %ld/%d %ld/%d %ld/%d %ld/%d\n", r1, e1, r2, e2, r3, e3, r4, e4, r5, e5, r6,
		       e6);
	} else if (!strcmp(mode, "churn")) {
		long n = argc > 2 ? atol(argv[2]) : 50, bad = 0;
		for (long k = 0; k < n; k++) {
			pthread_t t[4];
			for (long i = 0; i < 4; i++)
				pthread_create(&t[i], NULL, thread_main, (void *)(100 + i));
			for (long i = 0; i < 4; i++) {
				void *r;
				pthread_join(t[i], &r);
				bad += (long)r == -1;
			}
		}
		printf("churn rounds=%ld failed_opens=%ld\n", n, bad);
	} else if (!strcmp(mode, "spin")) {
		long n = argc > 2 ? atol(argv[2]) : 100000;
		double a = now_ns();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		double b = now_ns();
		for (long i = 0; i < n; i++)
			syscall(SYS_getpid);
		double c = now_ns();
		printf("getppid_ns=%.1f getpid_ns=%.1f\n", (b - a) / n, (c - b) / n);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
