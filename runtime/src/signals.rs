//! Interposed signal functions: the target keeps working signal handlers
//! for SIGTRAP/SIGSEGV/SIGBUS/SIGILL/SIGFPE while the runtime stays first
//! (we record the target's action and chain to it), and the target cannot
//! block those signals (a blocked int3 SIGTRAP would kill the process).
//!
//! These symbols are exported by libptap_rt.so, so LD_PRELOAD makes them win.
//! When the runtime is not active (e.g. the rlib linked into ptap itself)
//! they forward transparently.

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sys;
use crate::trap::{managed, managed_mask, USER_ACT};

/// Set by the runtime constructor once its handlers are installed.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Set once the target has (or had) a handler function for a signal the
/// runtime does not manage. Only then can an asynchronous handler interrupt
/// a jump-path probe handler (and siglongjmp out of it), so only then does
/// the jump path pay for blocking signals around its handlers (two
/// rt_sigprocmask calls, ~300 ns; see optprobe.rs `block_async`). Handlers
/// installed with the raw rt_sigaction system call (Go) are not seen.
pub static ASYNC_HANDLERS: AtomicBool = AtomicBool::new(false);

/// Note a handler being installed for `sig` (0 = SIG_DFL, 1 = SIG_IGN).
fn note_handler(sig: c_int, handler: usize) {
    if handler > 1 && !managed(sig) {
        ASYNC_HANDLERS.store(true, Ordering::Release);
    }
}

/// Handlers installed before the runtime started (by other constructors,
/// or inherited dispositions are only SIG_DFL/SIG_IGN across exec).
fn scan_existing_handlers() {
    for sig in 1..=64 {
        if managed(sig) || sig == 9 || sig == 19 {
            continue;
        }
        let mut old = sys::KSigaction::default();
        // SAFETY: query only (no new action).
        if unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) } == 0 {
            note_handler(sig, old.handler);
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
    let a = &USER_ACT[sig as usize];
    (
        a[0].load(Ordering::Acquire) as usize,
        a[1].load(Ordering::Acquire),
        a[2].load(Ordering::Acquire),
    )
}

fn user_set(sig: c_int, h: usize, flags: u64, mask: u64) {
    let a = &USER_ACT[sig as usize];
    a[1].store(flags, Ordering::Release);
    a[2].store(mask, Ordering::Release);
    a[0].store(h as u64, Ordering::Release);
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
    if !act.is_null() {
        // SAFETY: act points to a sigaction (checked non-NULL).
        note_handler(sig, unsafe { (*act).sa_sigaction });
    }
    let real = next(c"sigaction", &REAL_SIGACTION);
    if real == 0 {
        set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: the next definition of sigaction.
    unsafe { core::mem::transmute::<usize, SigactionFn>(real)(sig, act, old) }
}

/// # Safety
/// Same contract as signal(3).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: usize) -> usize {
    if ACTIVE.load(Ordering::Acquire) && managed(sig) {
        let (h, _, _) = user_get(sig);
        user_set(sig, handler, sys::SA_RESTART, 0);
        return h;
    }
    note_handler(sig, handler);
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

/// Resolve the forwarding targets early (dlsym must not run in signal context).
pub fn prime() {
    scan_existing_handlers();
    next(c"sigaction", &REAL_SIGACTION);
    next(c"signal", &REAL_SIGNAL);
    next(c"sigprocmask", &REAL_SIGPROCMASK);
    next(c"pthread_sigmask", &REAL_PTHREAD_SIGMASK);
}
