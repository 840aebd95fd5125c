//! Raw Linux x86-64 system calls for the hit path.
//!
//! Code that runs inside a probe hit must not call libc functions a user
//! might probe (write, getpid, ...), so these wrappers issue `syscall`
//! directly. Every wrapper returns the raw kernel result (-errno on failure).

use core::arch::asm;

pub const SYS_READ: usize = 0;
pub const SYS_WRITE: usize = 1;
pub const SYS_OPEN: usize = 2;
pub const SYS_CLOSE: usize = 3;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_RT_SIGACTION: usize = 13;
pub const SYS_RT_SIGPROCMASK: usize = 14;
pub const SYS_PREAD64: usize = 17;
pub const SYS_PWRITE64: usize = 18;
pub const SYS_SCHED_YIELD: usize = 24;
pub const SYS_NANOSLEEP: usize = 35;
pub const SYS_GETPID: usize = 39;
pub const SYS_EXIT: usize = 60;
pub const SYS_GETTID: usize = 186;
pub const SYS_FUTEX: usize = 202;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_TGKILL: usize = 234;
pub const SYS_MEMBARRIER: usize = 324;
pub const SYS_OPENAT: usize = 257;
pub const SYS_RENAMEAT: usize = 264;

/// # Safety
/// The caller must pass arguments valid for syscall `n`.
#[inline(always)]
pub unsafe fn syscall6(
    n: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    let g = gadget();
    // SAFETY: the caller guarantees the arguments are valid for this syscall;
    // the gadget is `syscall; ret`, which clobbers only rcx and r11 besides
    // rax (the call uses the stack below rsp: no `nostack`, so no red zone).
    unsafe {
        asm!("call {g}",
            g = in(reg) g,
            inlateout("rax") n as isize => ret,
            in("rdi") a1, in("rsi") a2, in("rdx") a3,
            in("r10") a4, in("r8") a5, in("r9") a6,
            lateout("rcx") _, lateout("r11") _);
    }
    ret
}

core::arch::global_asm!(
    ".text",
    ".globl ptap_rt_syscall_gadget",
    ".hidden ptap_rt_syscall_gadget",
    ".type ptap_rt_syscall_gadget,@function",
    "ptap_rt_syscall_gadget:",
    "syscall",
    "ret",
    ".size ptap_rt_syscall_gadget, .-ptap_rt_syscall_gadget",
);

extern "C" {
    fn ptap_rt_syscall_gadget();
}

/// Where the runtime's raw system calls are made: a `syscall; ret` inside
/// the Syscall User Dispatch exempt range. libc's (see
/// `crate::syscall::sites`), or the runtime's own one (0 here) when the exempt
/// range is the runtime's text.
static GADGET: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The restorer of the runtime's signal handlers (0 = its own stub).
static RESTORER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The `syscall` of the gadget the runtime's system calls go through.
#[inline(always)]
pub fn gadget() -> u64 {
    let g = GADGET.load(core::sync::atomic::Ordering::Relaxed);
    if g != 0 {
        g
    } else {
        ptap_rt_syscall_gadget as *const () as u64
    }
}

/// Make the runtime's system calls through the `syscall; ret` at `addr`.
pub fn set_gadget(addr: u64) {
    GADGET.store(addr, core::sync::atomic::Ordering::Release);
}

/// Return from the runtime's signal handlers through the `mov rax, 15;
/// syscall` at `addr` (handlers installed from now on).
pub fn set_restorer(addr: u64) {
    RESTORER.store(addr, core::sync::atomic::Ordering::Release);
}

fn restorer() -> usize {
    match RESTORER.load(core::sync::atomic::Ordering::Acquire) {
        0 => ptap_rt_sigreturn as *const () as usize,
        r => r as usize,
    }
}

/// # Safety
/// See [`syscall6`].
#[inline(always)]
pub unsafe fn syscall3(n: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall6(n, a1, a2, a3, 0, 0, 0) }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { syscall3(SYS_GETTID, 0, 0, 0) as i32 }
}

/// This thread's signal alternate stack, if one is set and enabled: [lo, hi).
pub fn altstack() -> Option<(u64, u64)> {
    #[repr(C)]
    struct StackT {
        sp: u64,
        flags: i32,
        size: u64,
    }
    let mut old = StackT {
        sp: 0,
        flags: 0,
        size: 0,
    };
    // SAFETY: sigaltstack(NULL, &old) only writes `old`.
    let r = unsafe { syscall3(131, 0, &mut old as *mut StackT as usize, 0) };
    if r != 0 || old.flags & 2 != 0 || old.size == 0 {
        return None; // SS_DISABLE
    }
    Some((old.sp, old.sp + old.size))
}

pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { syscall3(SYS_GETPID, 0, 0, 0) as i32 }
}

/// Write all of `buf` to `fd` (best effort, no libc).
pub fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice.
        let r = unsafe { syscall3(SYS_WRITE, fd as usize, buf.as_ptr() as usize, buf.len()) };
        if r == -4 {
            continue; // EINTR
        }
        if r <= 0 {
            return;
        }
        buf = &buf[r as usize..];
    }
}

pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> isize {
    // SAFETY: tgkill takes plain integers.
    unsafe { syscall3(SYS_TGKILL, tgid as usize, tid as usize, sig as usize) }
}

/// Is thread `tid` of this process still alive?
pub fn thread_alive(tid: i32) -> bool {
    tgkill(getpid(), tid, 0) != -ESRCH
}

/// Does task `tid` still run in this address space: a thread of this
/// process, or a child made by `clone(CLONE_VM)` without `CLONE_THREAD`
/// (`posix_spawn`'s child, `vfork`) that has not exec'ed or exited? Such a
/// child is another process, so [`thread_alive`] calls it dead, yet it
/// runs the probed code with a thread slot of this table. Without kcmp (a
/// kernel built without it, or refused) the child counts as dead, as
/// before.
///
/// Once kcmp has answered in this process ([`kcmp_answers`]), an error
/// other than "no such task" (a seccomp filter installed later, EPERM for
/// a child that made itself undumpable) counts the task as alive: taking a
/// live task's thread slot is what must never happen (the runtime then
/// lets threads release their kretprobe instances without atomics).
pub fn runs_in_our_memory(tid: i32) -> bool {
    if thread_alive(tid) {
        return true;
    }
    match kcmp_vm(tid) {
        Ok(same) => same,
        // Refused after it answered (a seccomp filter installed later):
        // a task that still exists may be a live child sharing our memory.
        Err(e) if e != ESRCH && kcmp_answered() => !task_dead(tid),
        Err(_) => false,
    }
}

const ESRCH: isize = 3;

static KCMP_ANSWERS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Ask whether kcmp answers here (at start-up, and again in a forked
/// child), on the calling thread; [`kcmp_answered`] remembers it.
pub fn kcmp_answers() {
    let ok = same_memory(gettid()) == Some(true);
    KCMP_ANSWERS.store(ok, core::sync::atomic::Ordering::Relaxed);
}

/// What [`kcmp_answers`] found last (false before it was asked).
#[inline(always)]
pub fn kcmp_answered() -> bool {
    KCMP_ANSWERS.load(core::sync::atomic::Ordering::Relaxed)
}

/// kcmp(KCMP_VM) of the calling thread and `tid`: Ok(same memory), or the
/// errno.
fn kcmp_vm(tid: i32) -> Result<bool, isize> {
    const SYS_KCMP: usize = 312;
    const KCMP_VM: usize = 1;
    // SAFETY: kcmp takes plain integers.
    let r = unsafe { syscall6(SYS_KCMP, gettid() as usize, tid as usize, KCMP_VM, 0, 0, 0) };
    if r < 0 {
        Err(-r)
    } else {
        Ok(r == 0)
    }
}

/// Does task `tid` share the calling task's memory? kcmp(KCMP_VM) against
/// the calling thread itself (not the process's first thread, which may
/// have exited and then has no memory to compare). None when kcmp fails
/// (no such task, or kcmp unavailable).
pub fn same_memory(tid: i32) -> Option<bool> {
    kcmp_vm(tid).ok()
}

/// Has thread `tid` (of any process) exited: no /proc/TID, or a zombie/dead
/// task? Raw syscalls and a stack buffer only (hit-path safe, but costs an
/// open/read/close: call it only after spinning on a lock for long).
pub fn task_dead(tid: i32) -> bool {
    if tid <= 0 {
        return true;
    }
    let mut path = [0u8; 32];
    let prefix = b"/proc/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut v, mut n) = (tid as u32, 0);
    while v > 0 {
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    let mut at = prefix.len();
    for k in (0..n).rev() {
        path[at] = digits[k];
        at += 1;
    }
    path[at..at + 5].copy_from_slice(b"/stat");
    // path[at + 5] stays 0 (NUL).
    // SAFETY: NUL-terminated path on our stack; O_RDONLY|O_CLOEXEC.
    let fd = unsafe { syscall3(SYS_OPEN, path.as_ptr() as usize, 0o2_000_000, 0) };
    if fd < 0 {
        return fd == -2 || fd == -3; // ENOENT / ESRCH: gone
    }
    let mut buf = [0u8; 256];
    // SAFETY: reading into our stack buffer.
    let r = unsafe { syscall3(SYS_READ, fd as usize, buf.as_mut_ptr() as usize, buf.len()) };
    // SAFETY: closing the fd we opened.
    unsafe { syscall3(SYS_CLOSE, fd as usize, 0, 0) };
    if r <= 0 {
        return false;
    }
    let b = &buf[..r as usize];
    // "pid (comm) S ...": the state follows the last ')'.
    match b.iter().rposition(|&c| c == b')') {
        Some(c) => matches!(b.get(c + 2), Some(b'Z') | Some(b'X') | Some(b'x')),
        None => false,
    }
}

/// CLOCK_MONOTONIC in nanoseconds (raw syscall).
pub fn monotonic_ns() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC (1) always exists.
    unsafe { syscall3(228, 1, ts.as_mut_ptr() as usize, 0) };
    (ts[0] as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts[1] as u64)
}

/// Offset of libc's `errno` from the thread pointer (`%fs:0`), the same in
/// every thread (libc's errno is initial-exec TLS). 0 = unknown.
static ERRNO_OFF: core::sync::atomic::AtomicI64 = core::sync::atomic::AtomicI64::new(0);

fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: on x86-64 glibc, %fs:0 holds the thread control block's own
    // address (the thread pointer); reading it has no side effect.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// Learn where errno lives relative to the thread pointer (once, at init,
/// outside any hit path: calls libc's `__errno_location`).
pub fn init_errno() {
    // SAFETY: __errno_location has no preconditions.
    let e = unsafe { libc::__errno_location() } as u64;
    let tp = thread_pointer();
    if e != 0 && tp != 0 {
        ERRNO_OFF.store(
            e.wrapping_sub(tp) as i64,
            core::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// The calling thread's errno, without calling libc (hit-path safe).
fn errno_ptr() -> Option<*mut i32> {
    let off = ERRNO_OFF.load(core::sync::atomic::Ordering::Relaxed);
    if off == 0 {
        return None;
    }
    let tp = thread_pointer();
    (tp != 0).then(|| tp.wrapping_add(off as u64) as *mut i32)
}

/// Save the interrupted context's errno before running handlers that may
/// call libc (which may set it). Pairs with [`errno_restore`].
#[inline]
pub fn errno_save() -> Option<i32> {
    // SAFETY: errno_ptr is this thread's errno (thread pointer + libc's
    // fixed TLS offset, learnt from __errno_location at init).
    errno_ptr().map(|p| unsafe { core::ptr::read_volatile(p) })
}

/// Put back what [`errno_save`] read. Inlined: the hit path calls it on
/// every handler run, mostly with None.
#[inline(always)]
pub fn errno_restore(saved: Option<i32>) {
    let Some(v) = saved else { return };
    if let Some(p) = errno_ptr() {
        // SAFETY: as in errno_save.
        unsafe { core::ptr::write_volatile(p, v) };
    }
}

pub fn sched_yield() {
    // SAFETY: no arguments.
    unsafe {
        syscall3(SYS_SCHED_YIELD, 0, 0, 0);
    }
}

pub fn sleep_us(us: u64) {
    let ts = [(us / 1_000_000) as i64, ((us % 1_000_000) * 1000) as i64];
    // SAFETY: ts is a valid timespec; rem may be NULL.
    unsafe {
        syscall3(SYS_NANOSLEEP, ts.as_ptr() as usize, 0, 0);
    }
}

/// fstat through the runtime's own system call path (libc's `fstat` may be
/// probed: `kprobe(sys_newfstatat)` must not see the runtime's calls).
pub fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: `st` is a plain struct the kernel fills; zeroed is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes at most size_of::<stat>() bytes into `st`.
    let r = unsafe {
        syscall3(
            libc::SYS_fstat as usize,
            fd as usize,
            &mut st as *mut _ as usize,
            0,
        )
    };
    (r == 0).then_some(st)
}

pub const AT_FDCWD: isize = -100;

/// `openat(AT_FDCWD, p, flags, mode)` by a raw system call (a system call
/// probe on `openat` does not see the runtime's own files).
pub fn openat_raw(p: &std::ffi::CStr, flags: usize, mode: usize) -> Option<isize> {
    // SAFETY: a NUL-terminated path; the kernel checks the rest.
    let fd = unsafe {
        syscall6(
            SYS_OPENAT,
            AT_FDCWD as usize,
            p.as_ptr() as usize,
            flags,
            mode,
            0,
            0,
        )
    };
    (fd >= 0).then_some(fd)
}

/// A whole file (at most 8 MiB), opened with `flags` | O_CLOEXEC and read
/// by raw system calls (see [`openat_raw`]).
pub fn read_file_raw(p: &std::ffi::CStr, flags: usize) -> Option<Vec<u8>> {
    let fd = openat_raw(p, flags | 0o2000000, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        // SAFETY: buf is ours, of the length given.
        let n = unsafe { syscall3(SYS_READ, fd as usize, buf.as_mut_ptr() as usize, buf.len()) };
        if n == -4 {
            continue; // EINTR
        }
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > 8 << 20 {
            break;
        }
    }
    // SAFETY: our descriptor.
    unsafe { syscall3(SYS_CLOSE, fd as usize, 0, 0) };
    Some(out)
}

/// pwrite through an fd (used with /proc/self/mem to patch r-x text).
/// # Safety
/// Writing to /proc/self/mem changes this process's memory at `off`.
pub unsafe fn pwrite(fd: i32, buf: &[u8], off: u64) -> isize {
    // SAFETY: buf is valid; the caller owns the consequences of the write.
    unsafe {
        syscall6(
            SYS_PWRITE64,
            fd as usize,
            buf.as_ptr() as usize,
            buf.len(),
            off as usize,
            0,
            0,
        )
    }
}

/// # Safety
/// Plain mmap; the caller must treat the result as raw memory.
pub unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, off: usize) -> isize {
    // SAFETY: forwarded contract.
    unsafe {
        syscall6(
            SYS_MMAP,
            addr,
            len,
            prot as usize,
            flags as usize,
            fd as usize,
            off,
        )
    }
}

/// # Safety
/// Changes protections of a range this process owns.
pub unsafe fn mprotect(addr: usize, len: usize, prot: i32) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall3(SYS_MPROTECT, addr, len, prot as usize) }
}

/// Kernel `struct sigaction` for rt_sigaction on x86-64.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct KSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

pub const SA_SIGINFO: u64 = 4;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;

core::arch::global_asm!(
    ".text",
    ".globl ptap_rt_sigreturn",
    ".hidden ptap_rt_sigreturn",
    ".type ptap_rt_sigreturn,@function",
    "ptap_rt_sigreturn:",
    "mov eax, 15",
    "syscall",
    "ud2",
    ".size ptap_rt_sigreturn, .-ptap_rt_sigreturn",
);

extern "C" {
    fn ptap_rt_sigreturn();
}

/// rt_sigaction(2) without libc. When installing a handler, SA_RESTORER is
/// set to our own sigreturn stub.
///
/// # Safety
/// Changes the process's signal disposition.
pub unsafe fn rt_sigaction(
    sig: i32,
    act: Option<&KSigaction>,
    old: Option<&mut KSigaction>,
) -> isize {
    let mut a;
    let ap = match act {
        Some(x) => {
            a = *x;
            if a.handler > 1 && a.flags & SA_RESTORER == 0 {
                a.flags |= SA_RESTORER;
                a.restorer = restorer();
            }
            &a as *const KSigaction as usize
        }
        None => 0,
    };
    let op = match old {
        Some(o) => o as *mut KSigaction as usize,
        None => 0,
    };
    // SAFETY: pointers are valid or NULL; sigsetsize is 8 on x86-64.
    unsafe { syscall6(SYS_RT_SIGACTION, sig as usize, ap, op, 8, 0, 0) }
}

/// rt_sigprocmask(2) without libc.
/// # Safety
/// Changes this thread's signal mask.
pub unsafe fn rt_sigprocmask(how: i32, set: Option<&u64>, old: Option<&mut u64>) -> isize {
    let sp = set.map_or(0, |s| s as *const u64 as usize);
    let op = old.map_or(0, |o| o as *mut u64 as usize);
    // SAFETY: pointers valid or NULL.
    unsafe { syscall6(SYS_RT_SIGPROCMASK, how as usize, sp, op, 8, 0, 0) }
}

pub fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// FUTEX_WAIT on a (shared, not private) futex word with a timeout in ms.
/// # Safety
/// `word` must point to a valid u32.
pub unsafe fn futex_wait(word: *const u32, val: u32, timeout_ms: u64) -> isize {
    let ts = [
        (timeout_ms / 1000) as i64,
        ((timeout_ms % 1000) * 1_000_000) as i64,
    ];
    // SAFETY: forwarded contract; ts valid.
    unsafe {
        syscall6(
            SYS_FUTEX,
            word as usize,
            0,
            val as usize,
            ts.as_ptr() as usize,
            0,
            0,
        )
    }
}

/// FUTEX_WAKE all waiters (shared futex).
/// # Safety
/// `word` must point to a valid u32.
pub unsafe fn futex_wake(word: *const u32) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall6(SYS_FUTEX, word as usize, 1, i32::MAX as usize, 0, 0, 0) }
}

/// Full serializing barrier for every thread of the process after code
/// patching (no-op if the kernel refuses).
pub fn membarrier_sync_core() {
    // SAFETY: plain integer arguments.
    unsafe {
        syscall3(SYS_MEMBARRIER, 32, 0, 0); // MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE
    }
}

pub fn membarrier_register() {
    // SAFETY: plain integer arguments.
    unsafe {
        syscall3(SYS_MEMBARRIER, 64, 0, 0); // REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errno_is_found_from_the_thread_pointer_in_every_thread() {
        super::init_errno();
        std::thread::spawn(|| {
            // SAFETY: this thread's errno.
            unsafe { *libc::__errno_location() = 1234 };
            assert_eq!(super::errno_save(), Some(1234));
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = 5 };
            super::errno_restore(Some(1234));
            // SAFETY: as above.
            assert_eq!(unsafe { *libc::__errno_location() }, 1234);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn task_dead_tells_live_from_gone_threads() {
        assert!(!super::task_dead(super::gettid()));
        assert!(!super::task_dead(1));
        let h = std::thread::spawn(super::gettid);
        let t = h.join().unwrap();
        // A joined thread is gone (it may still be finishing its exit in
        // the kernel for a moment after the join returns).
        let t0 = std::time::Instant::now();
        while !super::task_dead(t) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(2),
                "thread {t} never seen dead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(super::task_dead(0x3fff_fff0));
    }
}
