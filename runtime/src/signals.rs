//! Interposed signal functions: the target keeps working signal handlers
//! for SIGTRAP/SIGSEGV/SIGBUS/SIGILL/SIGFPE while the runtime stays first
//! (we record the target's action and chain to it), and the target cannot
//! block those signals (a blocked int3 SIGTRAP would kill the process).
//!
//! These symbols are exported by libptap_rt.so, so LD_PRELOAD makes them win.
//! When the runtime is not active (e.g. the rlib linked into ptap itself)
//! they forward transparently.

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::sys;
use crate::trap::{managed, managed_mask, USER_ACT};

mod got;
mod masks;
pub(crate) mod onstack;
pub(crate) mod quiet;

/// Set by the runtime constructor once its handlers are installed.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Injected into a running process (`ptap -x`): the interposers are
/// reached through redirected GOT entries only (see `got`), so handlers are
/// not wrapped (a call that bypasses the redirection would see the
/// wrapper); masks still lose the managed signals.
static INJECTED: AtomicBool = AtomicBool::new(false);

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
static WRAPPED: [[AtomicU64; 3]; 65] =
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

fn wrapped_get(sig: c_int) -> (usize, u64, u64) {
    act_get(&WRAPPED, sig)
}

fn wrapped_set(sig: c_int, h: usize, flags: u64, mask: u64) {
    act_set(&WRAPPED, sig, h, flags, mask)
}

/// Signals whose handlers run through [`wrapper`]: every catchable one the
/// runtime does not manage itself (the synchronous ones and SIGSYS are
/// managed), except glibc's internal 32 and 33 (its sigaction refuses them).
fn wrappable(sig: c_int) -> bool {
    (1..=64).contains(&sig) && !managed(sig) && !matches!(sig, 9 | 19 | 32 | 33)
}

const SA_RESETHAND: u64 = 0x8000_0000;

/// Every handler the target installs for an asynchronous signal runs
/// through this one. During a jump-path hit (`optprobe::jump_hit_slot`), the
/// signal is re-queued to this thread with its own siginfo and blocked in
/// the interrupted context, and the hit path unblocks it when it is done:
/// the target's handler then runs as if the signal had arrived a moment
/// later, and a handler that siglongjmps can no longer abandon the hit path
/// with its state set. Otherwise the target's handler is called at once.
/// Async-signal-safe: atomics and raw system calls only.
///
/// Known difference: a re-queued real-time signal goes behind instances of
/// it that were already pending for the thread (their order changes).
unsafe extern "C" fn wrapper(sig: c_int, info: *mut libc::siginfo_t, uc: *mut core::ffi::c_void) {
    if !(1..=64).contains(&sig) {
        return;
    }
    if let Some(ts) = crate::optprobe::jump_hit_slot() {
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
    ts: *mut crate::threads::ThreadState,
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
fn wrapper_flags(flags: u64) -> u64 {
    (flags | sys::SA_SIGINFO) & !SA_RESETHAND
}

/// Serializes changes of wrapped actions (the table and the kernel's action
/// must change together) between threads, with every signal blocked while
/// held so that a handler on the same thread cannot spin on it.
struct ActionLock(u64);

static ACTION_LOCK: AtomicBool = AtomicBool::new(false);

impl ActionLock {
    fn take() -> ActionLock {
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

/// The process whose handler table this is: a vfork/CLONE_VM child shares
/// the memory but not the kernel's actions, so it must not edit the table.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// After fork: the child owns its (copied) table.
pub fn after_fork() {
    OWNER.store(sys::getpid(), Ordering::Release);
    // Only the forking thread exists here, and it was not inside sigaction.
    ACTION_LOCK.store(false, Ordering::Release);
}

/// Handlers installed before the runtime started (by other constructors;
/// across exec only SIG_DFL/SIG_IGN survive): wrapped in place, or, if that
/// fails, the jump path falls back to blocking signals.
fn wrap_existing_handlers() {
    for sig in 1..=64 {
        if !wrappable(sig) {
            continue;
        }
        let mut old = sys::KSigaction::default();
        // SAFETY: query only (no new action).
        if unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) } != 0
            || old.handler <= 1
            || old.handler == wrapper as *const () as usize
        {
            continue;
        }
        wrapped_set(sig, old.handler, old.flags, old.mask);
        let k = sys::KSigaction {
            handler: wrapper as *const () as usize,
            flags: wrapper_flags(old.flags),
            restorer: old.restorer,
            mask: old.mask & !managed_mask(),
        };
        // SAFETY: the same action with our handler (and its own restorer).
        if unsafe { sys::rt_sigaction(sig, Some(&k), None) } != 0 {
            WRAPPED[sig as usize][0].store(0, Ordering::Release);
            ASYNC_HANDLERS.store(true, Ordering::Release);
        }
    }
}

fn next(name: &core::ffi::CStr, cache: &AtomicUsize) -> usize {
    let c = cache.load(Ordering::Acquire);
    if c != 0 {
        return c;
    }
    // SAFETY: dlsym with RTLD_NEXT and a valid name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    cache.store(p, Ordering::Release);
    p
}

static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGNAL: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGPROCMASK: AtomicUsize = AtomicUsize::new(0);
static REAL_PTHREAD_SIGMASK: AtomicUsize = AtomicUsize::new(0);

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
type SignalFn = unsafe extern "C" fn(c_int, usize) -> usize;
type MaskFn = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;

fn user_get(sig: c_int) -> (usize, u64, u64) {
    act_get(&USER_ACT, sig)
}

fn user_set(sig: c_int, h: usize, flags: u64, mask: u64) {
    act_set(&USER_ACT, sig, h, flags, mask)
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// # Safety
/// Same contract as sigaction(2).
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { sigaction_impl(sig, act, old) }
}

/// The interposed sigaction, at an address of its own (a reference to the
/// exported symbol from inside the runtime binds to the first definition
/// in the process, which is libc's when the runtime was injected).
///
/// # Safety
/// Same contract as sigaction(2).
unsafe extern "C" fn sigaction_impl(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if ACTIVE.load(Ordering::Acquire) && managed(sig) {
        let (h, f, m) = user_get(sig);
        // SAFETY: caller-provided pointers (NULL or valid).
        unsafe {
            if !old.is_null() {
                core::ptr::write_bytes(old, 0, 1);
                (*old).sa_sigaction = h;
                (*old).sa_flags = f as c_int;
                *(core::ptr::addr_of_mut!((*old).sa_mask) as *mut u64) = m;
            }
            if !act.is_null() {
                let m = *(core::ptr::addr_of!((*act).sa_mask) as *const u64);
                user_set(sig, (*act).sa_sigaction, (*act).sa_flags as u32 as u64, m);
            }
        }
        return 0;
    }
    let real = next(c"sigaction", &REAL_SIGACTION);
    if real == 0 {
        set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: the next definition of sigaction.
    let real = unsafe { core::mem::transmute::<usize, SigactionFn>(real) };
    if ACTIVE.load(Ordering::Acquire) && INJECTED.load(Ordering::Acquire) && !act.is_null() {
        // Injected: the action as given, without the managed signals in
        // its mask (a query then shows the narrower mask).
        // SAFETY: `act` points to a sigaction; forwarding a local copy.
        unsafe {
            let mut k: libc::sigaction = *act;
            *(core::ptr::addr_of_mut!(k.sa_mask) as *mut u64) &= !managed_mask();
            return real(sig, &k, old);
        }
    }
    if !ACTIVE.load(Ordering::Acquire)
        || !wrappable(sig)
        || INJECTED.load(Ordering::Acquire)
        || OWNER.load(Ordering::Acquire) != sys::getpid()
    {
        // SAFETY: forwarding the caller's pointers.
        return unsafe { real(sig, act, old) };
    }
    // An asynchronous signal: a handler function runs through `wrapper`;
    // the caller sees its own action, never the wrapper.
    let _g = ActionLock::take();
    let prev = wrapped_get(sig);
    // SAFETY: caller-provided pointers (NULL or valid); `k` is a local copy.
    // `act` may be `old` (the same struct): it is read before the call.
    unsafe {
        let setting = !act.is_null();
        let handler_fn = setting && (*act).sa_sigaction > 1;
        let r = if !handler_fn {
            real(sig, act, old)
        } else {
            let mut k: libc::sigaction = *act;
            let m = *(core::ptr::addr_of!((*act).sa_mask) as *const u64);
            let flags = (*act).sa_flags as u32 as u64;
            wrapped_set(sig, (*act).sa_sigaction, flags, m);
            k.sa_sigaction = wrapper as *const () as usize;
            k.sa_flags = wrapper_flags(flags) as u32 as c_int;
            // The managed signals stay deliverable while the handler runs
            // (a probe hit in it with SIGTRAP blocked would kill the
            // process); the target's own mask is what queries report.
            *(core::ptr::addr_of_mut!(k.sa_mask) as *mut u64) = m & !managed_mask();
            let r = real(sig, &k, old);
            if r != 0 {
                wrapped_set(sig, prev.0, prev.1, prev.2);
            }
            r
        };
        if r != 0 {
            return r;
        }
        if setting && !handler_fn {
            WRAPPED[sig as usize][0].store(0, Ordering::Release);
        }
        if !old.is_null() && (*old).sa_sigaction == wrapper as *const () as usize {
            // The kernel's old action (its flags, SA_RESTORER included, and
            // mask as the kernel keeps them) with the target's handler and
            // the two flags the wrapper changes.
            let own = (sys::SA_SIGINFO | SA_RESETHAND) as u32 as c_int;
            (*old).sa_sigaction = prev.0;
            (*old).sa_flags = ((*old).sa_flags & !own) | (prev.1 as u32 as c_int & own);
            let km = core::ptr::addr_of_mut!((*old).sa_mask) as *mut u64;
            *km = (*km & !managed_mask()) | (prev.2 & managed_mask());
        }
        0
    }
}

/// # Safety
/// Same contract as signal(3).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: usize) -> usize {
    // SAFETY: forwarding.
    unsafe { signal_impl(sig, handler) }
}

/// # Safety
/// Same contract as signal(3).
unsafe extern "C" fn signal_impl(sig: c_int, handler: usize) -> usize {
    if ACTIVE.load(Ordering::Acquire) && managed(sig) {
        let (h, _, _) = user_get(sig);
        user_set(sig, handler, sys::SA_RESTART, 0);
        return h;
    }
    if handler == usize::MAX {
        set_errno(libc::EINVAL);
        return usize::MAX; // SIG_ERR
    }
    if ACTIVE.load(Ordering::Acquire) && wrappable(sig) && !INJECTED.load(Ordering::Acquire) {
        // BSD semantics, as glibc's signal(): SA_RESTART, the signal
        // blocked while its handler runs; through sigaction (the wrapper).
        // SAFETY: zeroed sigaction is valid; sigaction above with locals.
        unsafe {
            let mut act: libc::sigaction = core::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = libc::SA_RESTART;
            *(core::ptr::addr_of_mut!(act.sa_mask) as *mut u64) = sys::sigbit(sig);
            let mut old: libc::sigaction = core::mem::zeroed();
            if sigaction_impl(sig, &act, &mut old) != 0 {
                return usize::MAX; // SIG_ERR
            }
            return old.sa_sigaction;
        }
    }
    let real = next(c"signal", &REAL_SIGNAL);
    if real == 0 {
        return usize::MAX; // SIG_ERR
    }
    // SAFETY: the next definition of signal.
    unsafe { core::mem::transmute::<usize, SignalFn>(real)(sig, handler) }
}

unsafe fn masked_call(
    cache: &AtomicUsize,
    name: &core::ffi::CStr,
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    let real = next(name, cache);
    if real == 0 {
        return libc::ENOSYS;
    }
    let f = {
        // SAFETY: the next definition of this function.
        unsafe { core::mem::transmute::<usize, MaskFn>(real) }
    };
    if ACTIVE.load(Ordering::Acquire) && !set.is_null() && how != libc::SIG_UNBLOCK {
        // SAFETY: set points to a sigset_t.
        let mut copy: libc::sigset_t = unsafe { *set };
        // SAFETY: the first word holds signals 1..64.
        unsafe { *(&mut copy as *mut libc::sigset_t as *mut u64) &= !managed_mask() };
        // SAFETY: forwarding with a local copy.
        return unsafe { f(how, &copy, old) };
    }
    // SAFETY: forwarding.
    unsafe { f(how, set, old) }
}

/// # Safety
/// Same contract as sigprocmask(2).
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { masked_call(&REAL_SIGPROCMASK, c"sigprocmask", how, set, old) }
}

/// # Safety
/// Same contract as sigprocmask(2).
unsafe extern "C" fn sigprocmask_impl(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { masked_call(&REAL_SIGPROCMASK, c"sigprocmask", how, set, old) }
}

/// # Safety
/// Same contract as pthread_sigmask(3).
unsafe extern "C" fn pthread_sigmask_impl(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { masked_call(&REAL_PTHREAD_SIGMASK, c"pthread_sigmask", how, set, old) }
}

/// # Safety
/// Same contract as pthread_sigmask(3).
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { masked_call(&REAL_PTHREAD_SIGMASK, c"pthread_sigmask", how, set, old) }
}

/// Injected into a running process (`ptap -x`), the runtime comes after
/// libc: its interposers are not called, so the target's handlers cannot be
/// wrapped (a query would show the wrapper, a later sigaction would bypass
/// it). The jump path blocks asynchronous signals around its handlers
/// instead, whatever the target installs later.
pub fn prime_injected() {
    OWNER.store(sys::getpid(), Ordering::Release);
    ASYNC_HANDLERS.store(true, Ordering::Release);
    INJECTED.store(true, Ordering::Release);
    unmask_existing_handlers();
    resolve_next();
    let n = got::hook_injected();
    if crate::probes::VERBOSE.load(Ordering::Relaxed) {
        crate::output::diag(
            format!(
                "ptap: {n} call(s) of signal mask and action functions redirected to the runtime\n"
            )
            .as_bytes(),
        );
    }
}

/// The target's handlers installed before an injection keep their actions,
/// but their masks lose the managed signals (a probe hit inside one with
/// SIGTRAP blocked would kill the process). A later query shows the
/// narrower mask.
fn unmask_existing_handlers() {
    for sig in 1..=64 {
        if !wrappable(sig) {
            continue;
        }
        let mut old = sys::KSigaction::default();
        // SAFETY: query, then the same action with a narrower mask.
        unsafe {
            if sys::rt_sigaction(sig, None, Some(&mut old)) == 0
                && old.handler > 1
                && old.mask & managed_mask() != 0
            {
                old.mask &= !managed_mask();
                sys::rt_sigaction(sig, Some(&old), None);
            }
        }
    }
}

/// Once the interposers are active: wrap what another thread installed
/// between [`prime`]'s scan and then (nothing is missed in between).
pub fn rescan() {
    let _g = ActionLock::take();
    wrap_existing_handlers();
}

/// Resolve the forwarding targets early (dlsym must not run in signal context).
pub fn prime() {
    OWNER.store(sys::getpid(), Ordering::Release);
    wrap_existing_handlers();
    resolve_next();
}

fn resolve_next() {
    masks::resolve();
    next(c"sigaction", &REAL_SIGACTION);
    next(c"signal", &REAL_SIGNAL);
    next(c"sigprocmask", &REAL_SIGPROCMASK);
    next(c"pthread_sigmask", &REAL_PTHREAD_SIGMASK);
}
