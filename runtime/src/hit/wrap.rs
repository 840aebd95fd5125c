//! The wrapper the runtime installs in place of a target's handler for an
//! asynchronous signal: a signal that arrives while a handler of ours runs
//! on the jump path is deferred until the hit is over. Also the flags the
//! hit path reads (runtime active, injected, asynchronous handlers seen).

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::base::signo::managed;
use crate::base::signo::managed_mask;
use crate::base::sys;
use crate::hit::chain::USER_ACT;

/// Set by the runtime constructor once its handlers are installed.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Injected into a running process (`ptap -x`): the interposers are
/// reached through redirected GOT entries only (see `got`), so handlers are
/// not wrapped (a call that bypasses the redirection would see the
/// wrapper); masks still lose the managed signals.
pub static INJECTED: AtomicBool = AtomicBool::new(false);

/// Set when the target has a handler function for an asynchronous signal
/// that the runtime could not wrap (see [`wrapper`]): only then can such a
/// handler interrupt a jump-path probe handler (and siglongjmp out of it),
/// so only then does the jump path pay for blocking signals around its
/// handlers (two rt_sigprocmask calls, ~300 ns; see optprobe.rs
/// `block_async`). Handlers installed with the raw rt_sigaction system call
/// (Go) are not seen at all.
pub static ASYNC_HANDLERS: AtomicBool = AtomicBool::new(false);

/// The target's own actions for the asynchronous signals whose handler the
/// runtime wrapped: (handler, sa_flags, mask of signals 1..64); handler 0
/// when not wrapped.
pub static WRAPPED: [[AtomicU64; 3]; 65] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; 65];

/// A table of actions (handler, flags, mask) per signal: [`WRAPPED`], or
/// the runtime-managed signals' `USER_ACT`.
type Actions = [[AtomicU64; 3]; 65];

fn act_get(t: &Actions, sig: c_int) -> (usize, u64, u64) {
    let a = &t[sig as usize];
    (
        a[0].load(Ordering::Acquire) as usize,
        a[1].load(Ordering::Acquire),
        a[2].load(Ordering::Acquire),
    )
}

/// The handler is stored last: a reader that sees it sees its flags and mask.
fn act_set(t: &Actions, sig: c_int, h: usize, flags: u64, mask: u64) {
    let a = &t[sig as usize];
    a[1].store(flags, Ordering::Release);
    a[2].store(mask, Ordering::Release);
    a[0].store(h as u64, Ordering::Release);
}

pub fn wrapped_get(sig: c_int) -> (usize, u64, u64) {
    act_get(&WRAPPED, sig)
}

pub fn wrapped_set(sig: c_int, h: usize, flags: u64, mask: u64) {
    act_set(&WRAPPED, sig, h, flags, mask)
}

/// Signals whose handlers run through [`wrapper`]: every catchable one the
/// runtime does not manage itself (the synchronous ones and SIGSYS are
/// managed), except glibc's internal 32 and 33 (its sigaction refuses them).
pub fn wrappable(sig: c_int) -> bool {
    (1..=64).contains(&sig) && !managed(sig) && !matches!(sig, 9 | 19 | 32 | 33)
}

pub const SA_RESETHAND: u64 = 0x8000_0000;

/// Every handler the target installs for an asynchronous signal runs
/// through this one. During a jump-path hit (`crate::hit::jump::jump_hit_slot`), the
/// signal is re-queued to this thread with its own siginfo and blocked in
/// the interrupted context, and the hit path unblocks it when it is done:
/// the target's handler then runs as if the signal had arrived a moment
/// later, and a handler that siglongjmps can no longer abandon the hit path
/// with its state set. Otherwise the target's handler is called at once.
/// Async-signal-safe: atomics and raw system calls only.
///
/// Known difference: a re-queued real-time signal goes behind instances of
/// it that were already pending for the thread (their order changes).
///
/// # Safety
/// Only as a signal handler (SA_SIGINFO): `info` and `uc` are the kernel's
/// for the signal being delivered.
pub unsafe extern "C" fn wrapper(
    sig: c_int,
    info: *mut libc::siginfo_t,
    uc: *mut core::ffi::c_void,
) {
    if !(1..=64).contains(&sig) {
        return;
    }
    if let Some(ts) = crate::hit::jump::jump_hit_slot() {
        // SAFETY: ts is this thread's slot; uc is the kernel's ucontext.
        unsafe {
            // SIGABRT is never deferred: abort() (a runtime panic ends there
            // too) must reach the target's handler and then die.
            let in_hit = core::ptr::read_volatile(core::ptr::addr_of!((*ts).defer)) > 0;
            if in_hit && sig != libc::SIGABRT && defer(ts, sig, info, uc) {
                return;
            }
            if !in_hit {
                // Bits a hit noted but did not get to unblock (a handler
                // ran in the window at its end and siglongjmp'ed): this
                // context unblocks them when the handler returns, and no
                // later hit will unblock what the target blocks by then.
                let d = core::ptr::read_volatile(core::ptr::addr_of!((*ts).deferred));
                if d != 0 {
                    core::ptr::write_volatile(core::ptr::addr_of_mut!((*ts).deferred), 0);
                    *ucmask(uc) &= !d;
                }
            }
        }
    }
    let h = WRAPPED[sig as usize][0].load(Ordering::Acquire) as usize;
    if h <= 1 {
        return; // reset meanwhile (SIG_DFL/SIG_IGN set while in flight)
    }
    // The target's handler may run on the alternate stack and hit probes
    // there: their handlers must stay on it (`threads::on_altstack`).
    if let Some(ts) = crate::hit::jump::thread() {
        // SAFETY: this thread's slot; uc is the kernel's ucontext.
        unsafe { crate::hit::threads::note_altstack(ts, uc) };
    }
    if WRAPPED[sig as usize][1].load(Ordering::Acquire) & SA_RESETHAND != 0 {
        reset_one_shot(sig, h);
    }
    // Always the three arguments, as the kernel passes them (rsi, rdx) to
    // every handler: a one-argument handler ignores them (SysV ABI), and
    // one that reads the ucontext anyway still finds it.
    // SAFETY: the target installed h for sig.
    unsafe {
        let f: unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut core::ffi::c_void) =
            core::mem::transmute(h);
        f(sig, info, uc);
    }
}

/// The first word (signals 1..64) of a handler context's saved mask.
///
/// # Safety
/// `uc` is the ucontext the kernel passed to a running handler.
unsafe fn ucmask(uc: *mut core::ffi::c_void) -> *mut u64 {
    // SAFETY: contract.
    unsafe { core::ptr::addr_of_mut!((*(uc as *mut libc::ucontext_t)).uc_sigmask) as *mut u64 }
}

/// SA_RESETHAND, done by the wrapper (the kernel would have done it on
/// delivery): the handler becomes SIG_DFL, flags and mask stay; only if the
/// action is still the one-shot handler `h` (another thread may have
/// installed a new one meanwhile).
fn reset_one_shot(sig: c_int, h: usize) {
    let _g = ActionLock::take();
    if WRAPPED[sig as usize][0].load(Ordering::Acquire) as usize != h {
        return;
    }
    let mut cur = sys::KSigaction::default();
    // SAFETY: query, then the same action with SIG_DFL as its handler.
    unsafe {
        if sys::rt_sigaction(sig, None, Some(&mut cur)) != 0
            || cur.handler != wrapper as *const () as usize
        {
            return;
        }
        WRAPPED[sig as usize][0].store(0, Ordering::Release);
        cur.handler = 0;
        sys::rt_sigaction(sig, Some(&cur), None);
    }
}

/// Put `sig` back on this thread's queue, blocked until the hit ends.
/// False if it could not be queued (the caller then runs the handler now,
/// with the mask as it was).
///
/// # Safety
/// `ts` is this thread's slot; `uc` the ucontext of the running handler.
unsafe fn defer(
    ts: *mut crate::hit::threads::ThreadState,
    sig: c_int,
    info: *mut libc::siginfo_t,
    uc: *mut core::ffi::c_void,
) -> bool {
    let bit = sys::sigbit(sig);
    // SAFETY: contract.
    unsafe {
        // Blocked here first (SA_NODEFER would otherwise deliver the
        // re-queued signal at once, back into this handler), and in the
        // context the kernel restores when this handler returns.
        let mut before = 0u64;
        sys::rt_sigprocmask(0, Some(&bit), Some(&mut before));
        let r = sys::syscall6(
            297, // rt_tgsigqueueinfo: to ourselves, any siginfo is allowed
            sys::getpid() as usize,
            sys::gettid() as usize,
            sig as usize,
            info as usize,
            0,
            0,
        );
        if r != 0 {
            sys::rt_sigprocmask(2, Some(&before), None);
            return false;
        }
        *ucmask(uc) |= bit;
        let d = core::ptr::read_volatile(core::ptr::addr_of!((*ts).deferred));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ts).deferred), d | bit);
    }
    true
}

/// The kernel action that runs `sig`'s handler through [`wrapper`], keeping
/// the target's flags (SA_RESTART, SA_ONSTACK, SA_NOCLDSTOP, ...) and mask.
pub fn wrapper_flags(flags: u64) -> u64 {
    (flags | sys::SA_SIGINFO) & !SA_RESETHAND
}

pub fn user_get(sig: c_int) -> (usize, u64, u64) {
    act_get(&USER_ACT, sig)
}

pub fn user_set(sig: c_int, h: usize, flags: u64, mask: u64) {
    act_set(&USER_ACT, sig, h, flags, mask)
}

/// Serializes changes of wrapped actions (the table and the kernel's action
/// must change together) between threads, with every signal blocked while
/// held so that a handler on the same thread cannot spin on it.
pub struct ActionLock(u64);

pub static ACTION_LOCK: AtomicBool = AtomicBool::new(false);

impl ActionLock {
    pub fn take() -> ActionLock {
        // Not the managed signals: an int3 (a probe on libc's sigaction)
        // with SIGTRAP blocked would kill the process.
        let all = !managed_mask();
        let mut old = 0u64;
        // SAFETY: blocks this thread's signals (restored by drop).
        unsafe { sys::rt_sigprocmask(0, Some(&all), Some(&mut old)) };
        while ACTION_LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            sys::sched_yield();
        }
        ActionLock(old)
    }
}

impl Drop for ActionLock {
    fn drop(&mut self) {
        ACTION_LOCK.store(false, Ordering::Release);
        // SAFETY: the mask this thread had before take().
        unsafe { sys::rt_sigprocmask(2, Some(&self.0), None) };
    }
}
