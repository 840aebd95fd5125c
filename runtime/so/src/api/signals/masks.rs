//! Interposed calls that run with a temporary signal mask of the caller's
//! (sigsuspend, ppoll, pselect, epoll_pwait, epoll_pwait2): a handler that
//! runs during the call runs with that mask, so the runtime's managed
//! signals are taken out of it, as `sigprocmask` does for the thread's own
//! mask (a probe hit in such a handler with SIGTRAP blocked would kill the
//! process). Everything else is forwarded unchanged to the next definition.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{next, ACTIVE};
use ptap_rt_core::base::signo::managed_mask;

pub(super) static REAL_SIGSUSPEND: AtomicUsize = AtomicUsize::new(0);
pub(super) static REAL_PPOLL: AtomicUsize = AtomicUsize::new(0);
pub(super) static REAL_PSELECT: AtomicUsize = AtomicUsize::new(0);
pub(super) static REAL_EPOLL_PWAIT: AtomicUsize = AtomicUsize::new(0);
pub(super) static REAL_EPOLL_PWAIT2: AtomicUsize = AtomicUsize::new(0);

/// Resolve the forwarding targets early (dlsym must not run in signal context).
pub(super) fn resolve() {
    next(c"sigsuspend", &REAL_SIGSUSPEND);
    next(c"ppoll", &REAL_PPOLL);
    next(c"pselect", &REAL_PSELECT);
    next(c"epoll_pwait", &REAL_EPOLL_PWAIT);
    next(c"epoll_pwait2", &REAL_EPOLL_PWAIT2);
}

/// `set` itself, or `copy` holding it without the managed signals.
///
/// # Safety
/// `set` is NULL or points to a sigset_t.
unsafe fn clean(set: *const libc::sigset_t, copy: &mut libc::sigset_t) -> *const libc::sigset_t {
    if set.is_null() || !ACTIVE.load(Ordering::Acquire) {
        return set;
    }
    // SAFETY: contract; the first word holds signals 1..64.
    unsafe {
        if *(set as *const u64) & managed_mask() == 0 {
            return set;
        }
        *copy = *set;
        *(copy as *mut libc::sigset_t as *mut u64) &= !managed_mask();
    }
    copy
}

/// The next definition of `name`, or None (errno ENOSYS set).
fn real(name: &core::ffi::CStr, cache: &AtomicUsize) -> Option<usize> {
    let f = next(name, cache);
    if f == 0 {
        super::set_errno(libc::ENOSYS);
        return None;
    }
    Some(f)
}

/// # Safety
/// Same contract as sigsuspend(2).
#[no_mangle]
pub unsafe extern "C" fn sigsuspend(set: *const libc::sigset_t) -> c_int {
    // SAFETY: forwarding.
    unsafe { sigsuspend_impl(set) }
}

/// # Safety
/// Same contract as the exported `sigsuspend`.
pub(super) unsafe extern "C" fn sigsuspend_impl(set: *const libc::sigset_t) -> c_int {
    let Some(f) = real(c"sigsuspend", &REAL_SIGSUSPEND) else {
        return -1;
    };
    // SAFETY: zeroed sigset_t is valid.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: forwarding to the next definition, with a cleaned copy.
    unsafe {
        let f: unsafe extern "C" fn(*const libc::sigset_t) -> c_int = core::mem::transmute(f);
        f(clean(set, &mut copy))
    }
}

/// # Safety
/// Same contract as ppoll(2).
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { ppoll_impl(fds, n, tmo, set) }
}

/// # Safety
/// Same contract as the exported `ppoll`.
pub(super) unsafe extern "C" fn ppoll_impl(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    let Some(f) = real(c"ppoll", &REAL_PPOLL) else {
        return -1;
    };
    // SAFETY: zeroed sigset_t is valid.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: forwarding to the next definition, with a cleaned copy.
    unsafe {
        let f: unsafe extern "C" fn(
            *mut libc::pollfd,
            libc::nfds_t,
            *const libc::timespec,
            *const libc::sigset_t,
        ) -> c_int = core::mem::transmute(f);
        f(fds, n, tmo, clean(set, &mut copy))
    }
}

/// # Safety
/// Same contract as pselect(2).
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { pselect_impl(n, r, w, e, tmo, set) }
}

/// # Safety
/// Same contract as the exported `pselect`.
pub(super) unsafe extern "C" fn pselect_impl(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    let Some(f) = real(c"pselect", &REAL_PSELECT) else {
        return -1;
    };
    // SAFETY: zeroed sigset_t is valid.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: forwarding to the next definition, with a cleaned copy.
    unsafe {
        let f: unsafe extern "C" fn(
            c_int,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *const libc::timespec,
            *const libc::sigset_t,
        ) -> c_int = core::mem::transmute(f);
        f(n, r, w, e, tmo, clean(set, &mut copy))
    }
}

/// # Safety
/// Same contract as epoll_pwait(2).
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    ev: *mut c_void,
    max: c_int,
    tmo: c_int,
    set: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { epoll_pwait_impl(ep, ev, max, tmo, set) }
}

/// # Safety
/// Same contract as the exported `epoll_pwait`.
pub(super) unsafe extern "C" fn epoll_pwait_impl(
    ep: c_int,
    ev: *mut c_void,
    max: c_int,
    tmo: c_int,
    set: *const libc::sigset_t,
) -> c_int {
    let Some(f) = real(c"epoll_pwait", &REAL_EPOLL_PWAIT) else {
        return -1;
    };
    // SAFETY: zeroed sigset_t is valid.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: forwarding to the next definition, with a cleaned copy.
    unsafe {
        let f: unsafe extern "C" fn(
            c_int,
            *mut c_void,
            c_int,
            c_int,
            *const libc::sigset_t,
        ) -> c_int = core::mem::transmute(f);
        f(ep, ev, max, tmo, clean(set, &mut copy))
    }
}

/// # Safety
/// Same contract as epoll_pwait2(2).
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    ep: c_int,
    ev: *mut c_void,
    max: c_int,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding.
    unsafe { epoll_pwait2_impl(ep, ev, max, tmo, set) }
}

/// # Safety
/// Same contract as the exported `epoll_pwait2`.
pub(super) unsafe extern "C" fn epoll_pwait2_impl(
    ep: c_int,
    ev: *mut c_void,
    max: c_int,
    tmo: *const libc::timespec,
    set: *const libc::sigset_t,
) -> c_int {
    let Some(f) = real(c"epoll_pwait2", &REAL_EPOLL_PWAIT2) else {
        return -1;
    };
    // SAFETY: zeroed sigset_t is valid.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: forwarding to the next definition, with a cleaned copy.
    unsafe {
        let f: unsafe extern "C" fn(
            c_int,
            *mut c_void,
            c_int,
            *const libc::timespec,
            *const libc::sigset_t,
        ) -> c_int = core::mem::transmute(f);
        f(ep, ev, max, tmo, clean(set, &mut copy))
    }
}
