//! The unwinder's entry points, interposed (see `ptap_rt_core::hit::unwind`):
//! a C++ exception or a forced unwind must never see a hijacked return
//! address.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use ptap_rt_core::hit::threads::{self};
use ptap_rt_core::hit::unwind::restore_hijacked;
use ptap_rt_core::hit::unwind::settle;

/// An exception was caught by the frame whose stack pointer is `sp`: frames
/// below it were unwound (reclaim and count their instances); unhooked
/// frames above it are alive (hijack their return addresses again).
///
/// # Safety
/// Called on this thread, by [`__cxa_begin_catch`], with the catching
/// frame's stack pointer.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_after_catch(sp: u64) {
    let Some(ts) = threads::current() else { return };
    // SAFETY: ts is ours.
    if unsafe { (*ts).kret_head } == 0 {
        return;
    }
    // SAFETY: ts is this thread's slot (`current()` above); its own list
    // (see restore_hijacked).
    unsafe {
        threads::enter(ts);
        settle(ts, sp);
        threads::leave(ts);
    }
}

/// `__cxa_begin_catch(exc)` is interposed: the catching frame calls it
/// right after the unwinder restored that frame's registers, so rsp + 8 at
/// our entry is the catching frame's stack pointer. The real one gets `exc`
/// unchanged (tail jump). Naked: the stack pointer must be the caller's.
///
/// # Safety
/// Called by C++ code as `__cxa_begin_catch`.
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn __cxa_begin_catch(_exc: *mut c_void) -> *mut c_void {
    core::arch::naked_asm!(
        "push rdi",
        "lea rdi, [rsp + 16]",
        "call {after}",
        "call {real}",
        "mov r11, rax",
        "pop rdi",
        "jmp r11",
        after = sym ptap_rt_after_catch,
        real = sym real_begin_catch,
    )
}

static BEGIN_CATCH: AtomicUsize = AtomicUsize::new(0);

/// The next `__cxa_begin_catch` (libstdc++'s). Not on a hit path.
extern "C" fn real_begin_catch() -> usize {
    let f = real(c"__cxa_begin_catch", &BEGIN_CATCH);
    if f == 0 {
        // Cannot happen: a catch clause is only compiled against a C++
        // runtime that defines it. Nothing sensible to return to.
        ptap_rt_core::session::output::diag(
            b"ptap: no __cxa_begin_catch to forward to; aborting\n",
        );
        ptap_rt_core::hit::dispatch::die_now(ptap_rt_core::base::signo::SIGSEGV);
    }
    f
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
    restore_hijacked(false);
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
    restore_hijacked(false);
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
    restore_hijacked(true);
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
    restore_hijacked(true);
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
            unsafe {
                ptap_rt_core::base::sys::syscall3(ptap_rt_core::base::sys::SYS_EXIT, 0, 0, 0)
            };
        }
    }
    // SAFETY: the real pthread_exit (never returns).
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> !>(f)(retval) }
}
