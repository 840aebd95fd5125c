//! C++ exceptions through kretprobed frames.
//!
//! The unwinder reads return addresses from the stack; it must never see
//! the kretprobe trampoline. We interpose the unwinder's entry points that
//! start a (phase 1 + 2) unwind, restore every hijacked return address of
//! the current thread, count those instances as missed, and forward.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::abi::kretprobe_missed;
use crate::probes::{self, InstHdr};
use crate::{threads, trap};

/// Put back the real return addresses of every live kretprobe instance of
/// this thread (their return handlers will not run).
///
/// Runs inside the runtime's hit-path activity (`threads::enter`), so an
/// `unregister_kretprobe` on another thread waits (grace period) until
/// this has finished with the records it reads.
pub fn restore_hijacked() {
    let Some(ts) = threads::current() else { return };
    threads::enter(ts);
    // SAFETY: this thread's own list; instances are never freed; the
    // records (`rec`) are kept while we are active (grace periods).
    unsafe {
        while (*ts).kret_head != 0 {
            let h = (*ts).kret_head as *mut InstHdr;
            (*ts).kret_head = (*h).next;
            let slot = (*h).sp as *mut u64;
            if core::ptr::read(slot) == trap::trampoline_addr() {
                core::ptr::write(slot, (*probes::public(h)).ret_addr as u64);
            }
            let rec = &*(*h).rec;
            if rec.alive.load(Ordering::Acquire) {
                kretprobe_missed(rec.rp);
            }
            probes::release(h);
        }
    }
    threads::leave(ts);
}

fn real(name: &core::ffi::CStr, cache: &AtomicUsize) -> usize {
    let c = cache.load(Ordering::Acquire);
    if c != 0 {
        return c;
    }
    // SAFETY: dlsym with RTLD_NEXT (not in signal context: called by a throw).
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if p == 0 {
        // libgcc_s may be loaded lazily (e.g. by pthread_cancel); try it.
        // SAFETY: plain dlopen/dlsym of the system unwinder.
        unsafe {
            let hnd = libc::dlopen(
                c"libgcc_s.so.1".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            );
            if !hnd.is_null() {
                p = libc::dlsym(hnd, name.as_ptr()) as usize;
            }
        }
    }
    cache.store(p, Ordering::Release);
    p
}

static RAISE: AtomicUsize = AtomicUsize::new(0);
static PTHREAD_EXIT: AtomicUsize = AtomicUsize::new(0);
static FORCED: AtomicUsize = AtomicUsize::new(0);
static RETHROW: AtomicUsize = AtomicUsize::new(0);

const URC_FATAL_PHASE1_ERROR: c_int = 3;

/// # Safety
/// Called by the C++ runtime with an exception object.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_RaiseException(exc: *mut c_void) -> c_int {
    restore_hijacked();
    let f = real(c"_Unwind_RaiseException", &RAISE);
    if f == 0 {
        return URC_FATAL_PHASE1_ERROR;
    }
    // SAFETY: the real unwinder entry point.
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> c_int>(f)(exc) }
}

/// # Safety
/// Called by the C++ runtime with an exception object.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_Resume_or_Rethrow(exc: *mut c_void) -> c_int {
    restore_hijacked();
    let f = real(c"_Unwind_Resume_or_Rethrow", &RETHROW);
    if f == 0 {
        return URC_FATAL_PHASE1_ERROR;
    }
    // SAFETY: the real unwinder entry point.
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> c_int>(f)(exc) }
}

/// # Safety
/// Called by pthread_exit/pthread_cancel machinery.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_ForcedUnwind(
    exc: *mut c_void,
    stop: *mut c_void,
    arg: *mut c_void,
) -> c_int {
    restore_hijacked();
    let f = real(c"_Unwind_ForcedUnwind", &FORCED);
    if f == 0 {
        return URC_FATAL_PHASE1_ERROR;
    }
    // SAFETY: the real unwinder entry point.
    unsafe {
        core::mem::transmute::<
            usize,
            unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> c_int,
        >(f)(exc, stop, arg)
    }
}

/// `pthread_exit` is interposed: since glibc 2.34 its forced unwind calls
/// libgcc_s's `_Unwind_ForcedUnwind` through `__libc_dlsym`, which bypasses
/// the interposer above, so the unwinder would meet the kretprobe return
/// stub (no CFI: it stops there, and the thread's instances stay taken).
/// The thread's hijacked return addresses are restored (and its
/// instances released) before the real `pthread_exit` runs.
/// `pthread_cancel` acted upon inside libc is not covered (see the README).
///
/// # Safety
/// As `pthread_exit(3)`.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(retval: *mut c_void) -> ! {
    restore_hijacked();
    let mut f = PTHREAD_EXIT.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with RTLD_NEXT (pthread_exit is not a hit path).
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_exit".as_ptr()) } as usize;
        PTHREAD_EXIT.store(f, Ordering::Release);
    }
    if f == 0 {
        // No libc pthread_exit (cannot happen with glibc): end the thread.
        loop {
            // SAFETY: SYS_exit ends only the calling thread.
            unsafe { crate::sys::syscall3(crate::sys::SYS_EXIT, 0, 0, 0) };
        }
    }
    // SAFETY: the real pthread_exit (never returns).
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> !>(f)(retval) }
}
