//! Interposed signal functions: the target keeps working signal handlers
//! for SIGTRAP/SIGSEGV/SIGBUS/SIGILL/SIGFPE while the runtime stays first
//! (we record the target's action and chain to it), and the target cannot
//! block those signals (a blocked int3 SIGTRAP would kill the process).
//!
//! These symbols are exported by libptap_rt.so, so LD_PRELOAD makes them win.
//! Until the runtime is active (started by the constructor or by
//! `ptap_rt_attach`), and in a process it does not probe, they forward
//! transparently.

use core::ffi::c_int;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use ptap_rt_core::base::signo::managed;
use ptap_rt_core::base::signo::managed_mask;
use ptap_rt_core::base::sys;
use ptap_rt_core::hit::wrap::user_get;
use ptap_rt_core::hit::wrap::user_set;
use ptap_rt_core::hit::wrap::wrappable;
use ptap_rt_core::hit::wrap::wrapped_get;
use ptap_rt_core::hit::wrap::wrapped_set;
use ptap_rt_core::hit::wrap::wrapper;
use ptap_rt_core::hit::wrap::wrapper_flags;

pub(crate) use ptap_rt_core::hit::wrap::ActionLock;
use ptap_rt_core::hit::wrap::ACTION_LOCK;
use ptap_rt_core::hit::wrap::ACTIVE;
use ptap_rt_core::hit::wrap::ASYNC_HANDLERS;
use ptap_rt_core::hit::wrap::INJECTED;
use ptap_rt_core::hit::wrap::SA_RESETHAND;
use ptap_rt_core::hit::wrap::WRAPPED;

mod got;

mod masks;

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
    if ptap_rt_core::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
        ptap_rt_core::session::output::diag(
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
