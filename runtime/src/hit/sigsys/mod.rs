//! The SIGSYS handler: every system call of an armed thread arrives here.
//!
//! Runs in signal context: no allocation, no locks, no libc (raw system
//! calls from the runtime's own text, which is the dispatch's exempt range).
//!
//! The handler is installed with an empty sa_mask and SA_NODEFER, so while
//! it runs the thread's signal mask is exactly the target's mask at the
//! trapped call. The call is then performed here, and behaves as if the
//! target had made it: a signal arriving during a blocking call runs the
//! target's handler (nested on this frame), and the kernel restarts our call
//! (SA_RESTART) or returns -EINTR, which is what the target sees.
//!
//! System calls that cannot simply be performed from here:
//! * rt_sigreturn: restores the frame at the target's rsp, so it is re-run
//!   by a stub in the exempt range (rip redirected, registers untouched).
//! * rt_sigprocmask, sigaltstack: their effect would be undone by our own
//!   sigreturn, so the new mask / stack is copied into the saved context.
//! * clone/clone3 with a new stack (threads, posix_spawn): see [`clone`].
//! * fork, vfork, clone without CLONE_VM: performed here; the child resumes
//!   in this handler, re-arms itself and returns 0. vfork becomes
//!   clone(CLONE_VFORK|SIGCHLD): the parent still waits for the child's
//!   exec or exit, but the child gets a copy of memory instead of sharing it
//!   (it would otherwise overwrite this handler's frame on the shared stack).
//! * exit: the thread's slot is released first.
//! * Masks that would block SIGSYS (rt_sigprocmask, rt_sigaction's sa_mask,
//!   rt_sigsuspend, ppoll, pselect6, epoll_pwait[2]) lose the runtime's
//!   managed signals, as the runtime's sigprocmask interposition already does.

use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;

pub mod clone;
pub mod hooks;
pub mod probes;
pub mod table;

use ptap_arch::regs::PtRegs;

use crate::base::signo::managed;
use crate::base::signo::managed_mask;
use crate::base::sys;
use crate::hit::chain::USER_ACT;
use probes::{SyscallProbe, HITS, SYSCALL_PROBE_DISABLED, TRAPS};

pub use crate::base::signo::SIGSYS;
/// si_code of a Syscall User Dispatch SIGSYS.
const SYS_USER_DISPATCH: i32 = 2;

pub const NR_RT_SIGACTION: usize = 13;
pub const NR_RT_SIGPROCMASK: usize = 14;
pub const NR_RT_SIGRETURN: usize = 15;
pub const NR_CLONE: usize = 56;
pub const NR_FORK: usize = 57;
pub const NR_VFORK: usize = 58;
pub const NR_EXIT: usize = 60;
pub const NR_RT_SIGSUSPEND: usize = 130;
pub const NR_SIGALTSTACK: usize = 131;
pub const NR_PSELECT6: usize = 270;
pub const NR_PPOLL: usize = 271;
pub const NR_EPOLL_PWAIT: usize = 281;
pub const NR_CLONE3: usize = 435;
pub const NR_EPOLL_PWAIT2: usize = 441;

const ENOSYS: i64 = 38;

type Uc = libc::ucontext_t;

core::arch::global_asm!(
    ".text",
    // i64 ptap_sud_int80(u64 nr, const u64 args[6]): a 32-bit (int 0x80)
    // call made for the target, from the exempt range.
    ".globl ptap_sud_int80",
    ".hidden ptap_sud_int80",
    ".type ptap_sud_int80,@function",
    "ptap_sud_int80:",
    "push rbx",
    "push rbp",
    "mov rax, rdi",
    "mov rbx, [rsi]",
    "mov rcx, [rsi + 8]",
    "mov rdx, [rsi + 16]",
    "mov rdi, [rsi + 32]",
    "mov rbp, [rsi + 40]",
    "mov rsi, [rsi + 24]",
    "int 0x80",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size ptap_sud_int80, .-ptap_sud_int80",
);

extern "C" {
    fn ptap_sud_int80(nr: u64, args: *const [u64; 6]) -> i64;
}

/// AUDIT_ARCH_X86_64: si_arch of a 64-bit `syscall`.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

#[inline]
fn greg(uc: *mut Uc, r: c_int) -> u64 {
    // SAFETY: uc is the kernel-provided context.
    unsafe { (*uc).uc_mcontext.gregs[r as usize] as u64 }
}

#[inline]
fn set_greg(uc: *mut Uc, r: c_int, v: u64) {
    // SAFETY: uc is the kernel-provided context.
    unsafe { (*uc).uc_mcontext.gregs[r as usize] = v as i64 }
}

/// The six syscall-ABI argument registers of the trapped call.
fn args_of(uc: *mut Uc) -> [u64; 6] {
    use libc::*;
    [
        greg(uc, REG_RDI),
        greg(uc, REG_RSI),
        greg(uc, REG_RDX),
        greg(uc, REG_R10),
        greg(uc, REG_R8),
        greg(uc, REG_R9),
    ]
}

#[inline]
pub(super) fn raw(nr: usize, a: &[u64; 6]) -> i64 {
    // SAFETY: performing the target's own system call with its own arguments
    // (the kernel validates them as it would have).
    unsafe {
        sys::syscall6(
            nr,
            a[0] as usize,
            a[1] as usize,
            a[2] as usize,
            a[3] as usize,
            a[4] as usize,
            a[5] as usize,
        ) as i64
    }
}

/// SIGSYS: a trapped system call (or a SIGSYS that is not ours: chained).
///
/// # Safety
/// Kernel-provided signal arguments.
pub unsafe extern "C" fn on_sigsys(sig: c_int, info: *mut libc::siginfo_t, ucv: *mut c_void) {
    let uc = ucv as *mut Uc;
    // SAFETY: kernel-provided siginfo; _sigsys: call_addr at 16, syscall at 24.
    let (code, nr) = unsafe {
        let b = info as *const u8;
        (
            (*info).si_code,
            core::ptr::read_unaligned(b.add(24) as *const i32),
        )
    };
    if code == -1 {
        // SI_QUEUE: an arming request from arm_all_threads (pid at 16, value at 24)?
        // SAFETY: kernel-provided siginfo of a queued signal.
        let (pid, value) = unsafe {
            let b = info as *const u8;
            (
                core::ptr::read_unaligned(b.add(16) as *const i32),
                core::ptr::read_unaligned(b.add(24) as *const u64),
            )
        };
        if value == probes::ARM_MAGIC && pid == sys::getpid() {
            if probes::SHUT.load(Ordering::Acquire) {
                // After shutdown the same request turns the dispatch off.
                probes::disarm_self(table::find(sys::gettid()));
            } else {
                probes::arm_current();
            }
            return;
        }
    }
    if code != SYS_USER_DISPATCH || nr < 0 {
        // SAFETY: forwarding the kernel's arguments.
        unsafe { crate::hit::chain::chain(sig, info, uc, None) };
        return;
    }
    TRAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: _sigsys.arch at byte 28.
    let arch = unsafe { core::ptr::read_unaligned((info as *const u8).add(28) as *const u32) };
    if arch != AUDIT_ARCH_X86_64 {
        // A 32-bit call (int 0x80): other numbers and registers. Made as
        // is, never probed.
        use libc::*;
        let a = [REG_RBX, REG_RCX, REG_RDX, REG_RSI, REG_RDI, REG_RBP]
            .map(|r| greg(uc, r) & 0xffff_ffff);
        // The runtime's text may be outside the exempt range: the thread's
        // selector is at ALLOW for this one call.
        let _allow = probes::Untraced::new();
        // SAFETY: the target's own 32-bit call and arguments.
        let r = unsafe { ptap_sud_int80(nr as u64, &a) };
        set_greg(uc, REG_RAX, r as u64);
        return;
    }
    let nr = nr as usize;
    let args = args_of(uc);
    if probes::SHUT.load(Ordering::Acquire) {
        // Detached: this is the thread's last trap.
        let slot = table::find(sys::gettid());
        probes::disarm_self(slot);
        if let Some(r) = perform(nr, args, uc, slot) {
            set_greg(uc, libc::REG_RAX, r as u64);
        }
        return;
    }
    let (w_entry, w_ret) = probes::watched(nr);
    if !w_entry && !w_ret {
        let r = perform(nr, args, uc, None);
        if let Some(r) = r {
            set_greg(uc, libc::REG_RAX, r as u64);
        }
        return;
    }
    // A probed number.
    let slot = table::find(sys::gettid());
    let mut regs = {
        let mut r = crate::hit::regs::regs_from(uc);
        r.orig_ax = nr as u64;
        r.ax = (-ENOSYS) as u64;
        r
    };
    // Handlers run unless this thread is already inside probe handlers
    // (syscall probes, or kprobes: their system calls are the runtime's).
    let ts = crate::hit::threads::current();
    if let Some(t) = ts {
        // SAFETY: this thread's slot; uc is the kernel's ucontext.
        unsafe { crate::hit::threads::note_altstack(t, uc as *mut c_void) };
    }
    let active =
        slot.filter(|s| s.in_handler.load(Ordering::Relaxed) == 0 && !in_kprobe_handler(ts));
    let mut args = args;
    let mut data = CallData::new();
    if w_entry {
        match active {
            Some(s) => {
                // SAFETY: s is this thread's slot.
                unsafe { run_handlers(s, ts, nr, false, &mut regs, &mut data) };
                args = [regs.di, regs.si, regs.dx, regs.r10, regs.r8, regs.r9];
            }
            None => missed_unless_own(ts, nr, false),
        }
    }
    let Some(mut r) = perform(nr, args, uc, slot) else {
        return;
    };
    // Return probes of fork/clone fire in the parent only (the child of a
    // fork-like call resumes here with a copy of this frame and a new slot).
    let child = matches!(nr, NR_CLONE | NR_CLONE3 | NR_FORK | NR_VFORK) && r == 0;
    if w_ret && !child {
        match active {
            Some(s) => {
                regs.ax = r as u64;
                // SAFETY: s is this thread's slot.
                unsafe { run_handlers(s, ts, nr, true, &mut regs, &mut data) };
                r = regs.ax as i64;
            }
            None => missed_unless_own(ts, nr, true),
        }
    }
    set_greg(uc, libc::REG_RAX, r as u64);
}

/// Per-call scratch of up to CALL_DATA_PROBES probes, on this frame, so
/// that entry and return of one call share it.
struct CallData {
    bufs: [[u64; probes::CALL_DATA_SIZE / 8]; probes::CALL_DATA_PROBES],
    /// Registry index + 1 of the probe owning each buffer (0 = free).
    owner: [u8; probes::CALL_DATA_PROBES],
}

impl CallData {
    fn new() -> CallData {
        CallData {
            bufs: [[0; probes::CALL_DATA_SIZE / 8]; probes::CALL_DATA_PROBES],
            owner: [0; probes::CALL_DATA_PROBES],
        }
    }

    /// The buffer of registry slot `i`, claiming a free one.
    fn get(&mut self, i: usize) -> u64 {
        let tag = (i + 1) as u8;
        let k = match self.owner.iter().position(|&o| o == tag) {
            Some(k) => k,
            None => match self.owner.iter().position(|&o| o == 0) {
                Some(k) => {
                    self.owner[k] = tag;
                    k
                }
                None => return 0,
            },
        };
        self.bufs[k].as_mut_ptr() as u64
    }
}

/// Is a kprobe handler running on this thread (a system call made by a
/// kprobe handler is the runtime's, not the target's)? Handlers run under
/// the runtime's fault guard; a displaced instruction being single-stepped
/// (the kprobes' `in_handler` is still set then) is the target's own code.
fn in_kprobe_handler(ts: Option<*mut crate::hit::threads::ThreadState>) -> bool {
    match ts {
        // SAFETY: this thread's slot in the runtime's table.
        // The runtime's own work (its attach thread on `-x`, its exit) is
        // not the target's: no handler runs for its calls either.
        Some(ts) => unsafe { (*ts).guard.active != 0 || (*ts).own_work != 0 },
        None => false,
    }
}

/// A call whose handlers did not run: the probes' miss, unless the thread
/// was doing the runtime's own work (not the target's call at all).
fn missed_unless_own(ts: Option<*mut crate::hit::threads::ThreadState>, nr: usize, at_ret: bool) {
    // SAFETY: this thread's slot in the runtime's table.
    if ts.is_none_or(|t| unsafe { (*t).own_work } == 0) {
        missed(nr, at_ret);
    }
}

fn missed(nr: usize, at_ret: bool) {
    probes::for_each_probe(nr, at_ret, |_, p| {
        // SAFETY: p is live (registered); nmissed is an aligned unsigned long.
        unsafe {
            (*(core::ptr::addr_of_mut!((*p).nmissed) as *const core::sync::atomic::AtomicU64))
                .fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Run the entry or return handlers of every probe watching `nr`, with the
/// selector at ALLOW (the handlers' own system calls are not trapped) and
/// under the runtime's fault guard (a faulting handler is aborted and
/// counted, the target goes on).
///
/// # Safety
/// `s` is the calling thread's slot; signal context.
unsafe fn run_handlers(
    s: &table::Slot,
    ts: Option<*mut crate::hit::threads::ThreadState>,
    nr: usize,
    at_ret: bool,
    regs: &mut PtRegs,
    data: &mut CallData,
) {
    // Asynchronous signals wait until the handlers are done: a target
    // handler that longjmps (SIGALRM + siglongjmp) must never abandon this
    // frame between here and the state restore below (selector at ALLOW,
    // in_handler set, `active` raised forever). Synchronous signals (the
    // fault guard's, kprobes' SIGTRAP) and SIGSYS stay deliverable. The
    // exact previous mask is restored afterwards; a signal that arrived
    // meanwhile is delivered then, before the call is made.
    // Without a target handler for an asynchronous signal nothing can
    // interrupt the handlers and jump out: the two calls are skipped.
    let mut old_mask = 0u64;
    let masked = crate::hit::wrap::ASYNC_HANDLERS.load(Ordering::Relaxed)
        // SAFETY: blocking signals in this thread only; old_mask is a local.
        && unsafe { sys::rt_sigprocmask(0, Some(&async_signals()), Some(&mut old_mask)) } == 0;
    // Handlers may call libc, which may set errno: the target must see its own.
    let errno = sys::errno_save();
    table::enter(s);
    s.in_handler.store(1, Ordering::Relaxed);
    s.selector.store(table::ALLOW, Ordering::Relaxed);
    // The Kprobes reentrancy rule across probe types: kprobes hit inside a
    // syscall handler run no handler.
    // One level up from where it was, so that the thread counts as inside
    // a probe handler even during the runtime's own work (`in_handler >
    // own_work`: no registration from a handler).
    let outer = match ts {
        // SAFETY: this thread's slot.
        Some(t) => unsafe {
            let p = core::ptr::addr_of_mut!((*t).in_handler);
            let o = *p;
            *p = o + 1;
            o
        },
        None => 0,
    };
    probes::for_each_probe(nr, at_ret, |i, p| {
        // SAFETY: p is registered; unregister waits for our `leave`.
        let (h, flags) = unsafe {
            (
                if at_ret { (*p).ret } else { (*p).entry },
                core::ptr::read_volatile(core::ptr::addr_of!((*p).flags)),
            )
        };
        let Some(h) = h else { return };
        if flags & SYSCALL_PROBE_DISABLED != 0 {
            return;
        }
        HITS.fetch_add(1, Ordering::Relaxed);
        s.call_data.store(data.get(i), Ordering::Relaxed);
        call_guarded(ts, h, p, regs);
    });
    s.call_data.store(0, Ordering::Relaxed);
    if let Some(t) = ts {
        // SAFETY: this thread's slot.
        unsafe { (*t).in_handler = outer };
    }
    s.selector
        .store(probes::resting_selector(), Ordering::Relaxed);
    s.in_handler.store(0, Ordering::Relaxed);
    table::leave(s);
    sys::errno_restore(errno);
    if masked {
        // SAFETY: restoring this thread's own previous mask (SIG_SETMASK).
        unsafe { sys::rt_sigprocmask(2, Some(&old_mask), None) };
    }
}

/// Every signal but the synchronous ones (SIGILL, SIGTRAP, SIGBUS, SIGFPE,
/// SIGSEGV), SIGSYS, and the unblockable SIGKILL/SIGSTOP.
fn async_signals() -> u64 {
    let keep = [4, 5, 7, 8, 9, 11, 19, SIGSYS]
        .iter()
        .fold(0u64, |m, &sig| m | sys::sigbit(sig));
    !keep
}

fn call_guarded(
    ts: Option<*mut crate::hit::threads::ThreadState>,
    h: probes::Handler,
    p: *mut SyscallProbe,
    regs: &mut PtRegs,
) {
    match ts {
        Some(t) => {
            // SAFETY: h is a C handler (probe, regs) -> int; t is this thread's slot.
            let r = unsafe {
                crate::hit::asm::guarded(t, h as usize, p as usize, regs as *mut PtRegs as usize, 0)
            };
            if r.is_none() {
                crate::session::output::diag(
                    b"ptap: a syscall probe handler faulted; it was aborted\n",
                );
                crate::session::output::count_handler_fault();
            }
        }
        None => {
            // No runtime thread slot: call unguarded.
            // SAFETY: as above.
            unsafe { h(p, regs) };
        }
    }
}

const EFAULT: i64 = 14;

/// Copy a `T` out of the target's memory without ever faulting (the
/// runtime's process_vm_readv helper): None where the native call would
/// have failed with -EFAULT.
fn read_user<T: Copy + Default>(addr: u64) -> Option<T> {
    let mut v = T::default();
    // SAFETY: v is a local of size_of::<T>() writable bytes.
    let r = unsafe {
        crate::base::peek::read(&mut v as *mut T as *mut u8, addr, core::mem::size_of::<T>())
    };
    (r == 0).then_some(v)
}

/// [`read_user`] of one u64 (for `clone`).
pub(crate) fn read_user_u64(addr: u64) -> Option<u64> {
    read_user::<u64>(addr)
}

/// Copy `v` into the target's memory without faulting (process_vm_writev).
fn write_user<T>(addr: u64, v: &T) -> bool {
    let n = core::mem::size_of::<T>();
    let local = [v as *const T as usize, n];
    let remote = [addr as usize, n];
    // SAFETY: the kernel validates `remote`; `local` is our value.
    let r = unsafe {
        sys::syscall6(
            311,
            sys::getpid() as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    r == n as isize
}

/// Strip the runtime's managed signals from a user sigset (first word),
/// into `buf`; Err(-EFAULT) for an unreadable set.
fn strip(ptr: u64, size: u64, buf: &mut u64) -> Result<u64, i64> {
    if ptr == 0 || size != 8 {
        return Ok(ptr); // the kernel answers for these
    }
    *buf = read_user::<u64>(ptr).ok_or(-EFAULT)? & !managed_mask();
    Ok(buf as *mut u64 as u64)
}

/// Perform system call `nr` for the target. None when the context was
/// redirected instead (rax must not be overwritten).
fn perform(
    nr: usize,
    mut a: [u64; 6],
    uc: *mut Uc,
    slot: Option<&'static table::Slot>,
) -> Option<i64> {
    let mut m = 0u64;
    match nr {
        NR_RT_SIGRETURN => {
            // The gadget's `syscall` lies in the exempt range: made there
            // with rsp untouched (its `ret` never runs).
            set_greg(uc, libc::REG_RAX, NR_RT_SIGRETURN as u64);
            set_greg(uc, libc::REG_RIP, sys::gadget());
            None
        }
        NR_RT_SIGACTION => Some(sigaction(a)),
        NR_RT_SIGPROCMASK => {
            if a[0] != 1 {
                a[1] = match strip(a[1], a[3], &mut m) {
                    Ok(p) => p,
                    Err(e) => return Some(e),
                };
            }
            let r = raw(nr, &a);
            if r == 0 {
                let mut cur = 0u64;
                // SAFETY: reading our (= the target's) current mask.
                unsafe { sys::rt_sigprocmask(0, None, Some(&mut cur)) };
                // SAFETY: the first word of the saved mask (signals 1..64).
                unsafe { *(core::ptr::addr_of_mut!((*uc).uc_sigmask) as *mut u64) = cur };
            }
            Some(r)
        }
        NR_RT_SIGSUSPEND => Some(with_mask(nr, a, 0, 1, &mut m)),
        NR_PPOLL => Some(with_mask(nr, a, 3, 4, &mut m)),
        NR_EPOLL_PWAIT | NR_EPOLL_PWAIT2 => Some(with_mask(nr, a, 4, 5, &mut m)),
        NR_PSELECT6 => Some(pselect6(a, &mut m)),
        NR_SIGALTSTACK => {
            let r = raw(nr, &a);
            if r == 0 && a[0] != 0 {
                let mut cur: libc::stack_t = libc::stack_t {
                    ss_sp: core::ptr::null_mut(),
                    ss_flags: 0,
                    ss_size: 0,
                };
                // SAFETY: reading the current alternate stack into a local.
                unsafe {
                    sys::syscall3(
                        NR_SIGALTSTACK,
                        0,
                        &mut cur as *mut libc::stack_t as usize,
                        0,
                    );
                    (*uc).uc_stack = cur;
                }
            }
            Some(r)
        }
        NR_CLONE | NR_CLONE3 | NR_FORK | NR_VFORK => Some(clone::clone(nr, a, uc, slot)),
        NR_EXIT => {
            if let Some(s) = slot.or_else(|| table::find(sys::gettid())) {
                table::release(s);
            }
            Some(raw(nr, &a))
        }
        _ => Some(raw(nr, &a)),
    }
}

/// pselect6 with the managed signals removed from its mask.
fn pselect6(mut a: [u64; 6], m: &mut u64) -> i64 {
    // Outlives the call (a[5] may point to it).
    let mut d: [u64; 2];
    if a[5] != 0 {
        // The target's {const sigset_t *, size_t} argument.
        let Some(v) = read_user::<[u64; 2]>(a[5]) else {
            return -EFAULT;
        };
        d = v;
        d[0] = match strip(d[0], d[1], m) {
            Ok(p) => p,
            Err(e) => return e,
        };
        a[5] = d.as_ptr() as u64;
    }
    raw(NR_PSELECT6, &a)
}

/// A call made by the direct path (thread context, no signal frame): the
/// calls that take signal masks lose the runtime's managed signals, as in
/// [`perform`] (whatever the thread: an unarmed thread, or one at ALLOW, must
/// not block SIGTRAP/SIGSYS either: an int3 or a trap with them blocked
/// kills the process); the others are made as they are.
fn perform_direct(nr: usize, mut a: [u64; 6]) -> i64 {
    let mut m = 0u64;
    match nr {
        NR_RT_SIGACTION => sigaction(a),
        NR_RT_SIGPROCMASK => {
            if a[0] != 1 {
                a[1] = match strip(a[1], a[3], &mut m) {
                    Ok(p) => p,
                    Err(e) => return e,
                };
            }
            raw(nr, &a)
        }
        NR_RT_SIGSUSPEND => with_mask(nr, a, 0, 1, &mut m),
        NR_PPOLL => with_mask(nr, a, 3, 4, &mut m),
        NR_EPOLL_PWAIT | NR_EPOLL_PWAIT2 => with_mask(nr, a, 4, 5, &mut m),
        NR_PSELECT6 => pselect6(a, &mut m),
        _ => raw(nr, &a),
    }
}

/// A call whose argument `at` is a sigset of `size_at` bytes: made with the
/// managed signals removed from the set.
fn with_mask(nr: usize, mut a: [u64; 6], at: usize, size_at: usize, m: &mut u64) -> i64 {
    match strip(a[at], a[size_at], m) {
        Ok(p) => {
            a[at] = p;
            raw(nr, &a)
        }
        Err(e) => e,
    }
}

/// rt_sigaction for the target: the runtime's managed signals (SIGTRAP,
/// SIGSEGV, ..., SIGSYS) are recorded for chaining, as the runtime's
/// sigaction interposition does for libc callers; other signals lose the
/// managed signals from their sa_mask.
fn sigaction(a: [u64; 6]) -> i64 {
    let sig = a[0] as i32;
    if (1..=64).contains(&sig) && managed(sig) && crate::hit::wrap::ACTIVE.load(Ordering::Acquire) {
        if a[3] != 8 {
            return -22;
        }
        let ua = &USER_ACT[sig as usize];
        let new = if a[1] != 0 {
            match read_user::<sys::KSigaction>(a[1]) {
                Some(n) => Some(n),
                None => return -EFAULT,
            }
        } else {
            None
        };
        if a[2] != 0 {
            let old = sys::KSigaction {
                handler: ua[0].load(Ordering::Acquire) as usize,
                flags: ua[1].load(Ordering::Acquire),
                restorer: 0,
                mask: ua[2].load(Ordering::Acquire),
            };
            if !write_user(a[2], &old) {
                return -EFAULT;
            }
        }
        // posix_spawn's child resets every handler to SIG_DFL before exec; it
        // shares our memory, so its resets must not reach the parent's record.
        let vm_child =
            table::find(sys::gettid()).is_some_and(|s| s.vm_child.load(Ordering::Acquire) != 0);
        if let (Some(new), false) = (new, vm_child) {
            ua[1].store(new.flags, Ordering::Release);
            ua[2].store(new.mask, Ordering::Release);
            ua[0].store(new.handler as u64, Ordering::Release);
        }
        return 0;
    }
    let mut b = a;
    // Outlives the call (b[1] may point to it).
    let mut copy: sys::KSigaction;
    if a[1] != 0 && a[3] == 8 {
        let Some(c) = read_user::<sys::KSigaction>(a[1]) else {
            return -EFAULT;
        };
        copy = c;
        copy.mask &= !managed_mask();
        // A handler that may interrupt probe handlers (see run_handlers).
        // Not glibc's own SIGCANCEL / SIGSETXID (32, 33), which libc installs
        // through this call at its first pthread_create: they do not jump
        // out of what they interrupt (async cancellation aside), and noting
        // them would cost every probe hit two rt_sigprocmask calls
        // (measured: libc getppid probed 446 -> 1,115 ns).
        if copy.handler > 1 && sig != 32 && sig != 33 {
            crate::hit::wrap::ASYNC_HANDLERS.store(true, Ordering::Release);
        }
        b[1] = &copy as *const sys::KSigaction as u64;
    }
    raw(NR_RT_SIGACTION, &b)
}

/// Calls made through the direct path ([`direct_hit`]) with handlers run.
pub static DIRECT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Arms the calling thread `tid` if its arming was deferred (set by the
/// system call probes' control side, which keeps that list).
pub static ARM_DEFERRED: std::sync::OnceLock<fn(i32) -> bool> = std::sync::OnceLock::new();

fn arm_deferred(tid: i32) -> bool {
    ARM_DEFERRED.get().is_some_and(|f| f(tid))
}

/// The direct path of a moved libc site (see `crate::syscall::sites`): called by the
/// site's trampoline, without a trap, with the registers at its `syscall`
/// (`regs.ax` = the number, the arguments in the syscall ABI). Runs the
/// entry handlers, makes the call through the gadget (in libc, the exempt
/// range: signals, EINTR and SA_RESTART behave as for any libc call, since
/// this is ordinary thread context with the target's own mask), runs the
/// return handlers, and leaves the result in `regs.ax` with `rcx`/`r11` as
/// `syscall` leaves them. A thread that would not trap there (not armed,
/// selector at ALLOW: the runtime's own work, handlers running) just makes
/// the call. The calls that take signal masks lose the runtime's managed
/// signals ([`perform_direct`]). Never clone, clone3, fork, vfork, exit or
/// rt_sigreturn (see `sites::TRAP_KIND`).
///
/// Hit path: no allocation, no lock, no libc.
///
/// # Safety
/// Called only by the trampolines of `crate::syscall::sites`, with their frame.
pub unsafe extern "C" fn direct_hit(regs: *mut PtRegs, resume: u64) {
    // SAFETY: the trampoline's frame.
    let regs = unsafe { &mut *regs };
    let nr = regs.ax as usize;
    let args = [regs.di, regs.si, regs.dx, regs.r10, regs.r8, regs.r9];
    let (w_entry, w_ret) = probes::watched(nr);
    // The thread's id from the runtime's TLS-cached thread state (no
    // gettid system call once cached).
    let ts = crate::hit::jump::thread();
    let slot = if (w_entry || w_ret) && !probes::SHUT.load(Ordering::Acquire) {
        let tid = match ts {
            // SAFETY: this thread's slot in the runtime's thread table.
            Some(t) => unsafe { (*t).tid.load(Ordering::Relaxed) },
            None => sys::gettid(),
        };
        let ready = |s: &&table::Slot| {
            s.armed.load(Ordering::Acquire) != 0
                && s.selector.load(Ordering::Acquire) == table::BLOCK
                && s.in_handler.load(Ordering::Relaxed) == 0
        };
        table::find(tid).filter(ready).or_else(|| {
            // A thread whose arming waited for it to leave a sleep (see
            // `crate::syscall::arm_all_threads`) arms itself here, at its
            // first watched call: this call is then seen too.
            arm_deferred(tid)
                .then(|| table::find(tid).filter(ready))
                .flatten()
        })
    } else {
        None
    };
    let r = match slot {
        None => perform_direct(nr, args),
        Some(s) => {
            let active = (!in_kprobe_handler(ts)).then_some(s);
            DIRECT.fetch_add(1, Ordering::Relaxed);
            regs.orig_ax = nr as u64;
            regs.ax = (-ENOSYS) as u64;
            regs.ip = resume.wrapping_sub(2);
            let mut data = CallData::new();
            let mut a = args;
            if w_entry {
                match active {
                    Some(s) => {
                        // SAFETY: s is this thread's slot.
                        unsafe { run_handlers(s, ts, nr, false, regs, &mut data) };
                        a = [regs.di, regs.si, regs.dx, regs.r10, regs.r8, regs.r9];
                    }
                    None => missed_unless_own(ts, nr, false),
                }
            }
            let mut r = perform_direct(nr, a);
            if w_ret {
                match active {
                    Some(s) => {
                        regs.ax = r as u64;
                        // SAFETY: s is this thread's slot.
                        unsafe { run_handlers(s, ts, nr, true, regs, &mut data) };
                        r = regs.ax as i64;
                    }
                    None => missed_unless_own(ts, nr, true),
                }
            }
            r
        }
    };
    regs.ax = r as u64;
    regs.cx = resume;
    regs.r11 = regs.flags;
}
