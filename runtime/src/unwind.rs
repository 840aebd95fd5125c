//! C++ exceptions (and other unwinds) through kretprobed frames.
//!
//! The unwinder reads return addresses from the stack; it must never see
//! the kretprobe trampoline. We interpose the unwinder's entry points that
//! start a (phase 1 + 2) unwind and put back the real return address of
//! every hijacked frame of the current thread, keeping the instances
//! ("unhooked"). Where the exception is caught (`__cxa_begin_catch`, called
//! by the catching frame with its own stack pointer restored), instances of
//! frames below that stack pointer were unwound: they are reclaimed and
//! counted as returns by unwinding (not as misses); the frames above it are
//! alive and get their hijacked return addresses back, so their returns are
//! traced. An unwind that ends elsewhere (a forced unwind, a foreign
//! runtime's catch) leaves unhooked instances that are reclaimed, and
//! counted the same way, once the stack passes them (see `trap::reap_below`).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::probes::{self, InstHdr, INST_HOOKED, INST_UNHOOKED};
use crate::threads::{self, ThreadState};
use crate::trap;

/// kretprobed frames of this process left by unwinding (exceptions,
/// longjmp): instances reclaimed without a return handler.
pub static UNWOUND: AtomicU64 = AtomicU64::new(0);
/// How much of [`UNWOUND`] this process added to the session's count.
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

/// `ptap_kretprobe_unwound()` (runtime/include/ptap/kprobes.h): this
/// process's [`UNWOUND`].
#[no_mangle]
pub extern "C" fn ptap_kretprobe_unwound() -> core::ffi::c_ulong {
    UNWOUND.load(Ordering::Relaxed) as core::ffi::c_ulong
}

/// Count frames left by unwinding (hit path safe: one relaxed add).
pub fn count_unwound(n: u64) {
    UNWOUND.fetch_add(n, Ordering::Relaxed);
}

/// Add this process's new unwound count to the session's (globals header).
pub fn publish(g: &crate::script::globals::Globals) {
    let n = UNWOUND.load(Ordering::Acquire);
    let d = n.saturating_sub(PUBLISHED.fetch_max(n, Ordering::AcqRel));
    if d > 0 {
        g.header().unwound.fetch_add(d, Ordering::Relaxed);
    }
}

/// In a forked child: the parent's count is the parent's to report.
pub fn rebase() {
    PUBLISHED.store(UNWOUND.load(Ordering::Acquire), Ordering::Release);
}

/// An unwind starts on this thread: put back the real return address of
/// every hijacked frame. With `reclaim` (forced unwinds: pthread_exit,
/// thread cancellation; the thread ends) the instances are reclaimed now and
/// counted as unwound; otherwise they stay on the list, unhooked, until the
/// catch ([`after_catch`]) or the stack ([`trap::reap_below`]) settles them.
///
/// Runs inside the runtime's hit-path activity (`threads::enter`), so an
/// `unregister_kretprobe` on another thread waits (grace period) until
/// this has finished with the records it reads.
pub fn restore_hijacked(reclaim: bool) {
    let Some(ts) = threads::current() else { return };
    threads::enter(ts);
    // SAFETY: this thread's own list; instances are never freed; the
    // records (`rec`) are kept while we are active (grace periods).
    unsafe {
        (*ts).in_handler += 1;
        let mut link: *mut usize = core::ptr::addr_of_mut!((*ts).kret_head);
        while *link != 0 {
            let h = *link as *mut InstHdr;
            unhook(h);
            if reclaim {
                *link = (*h).next;
                count_unwound(1);
                probes::release(h);
            } else {
                link = core::ptr::addr_of_mut!((*h).next);
            }
        }
        (*ts).in_handler -= 1;
    }
    threads::leave(ts);
}

/// Put the real return address back in `h`'s frame.
///
/// # Safety
/// `h` is an instance of this thread's list.
unsafe fn unhook(h: *mut InstHdr) {
    // SAFETY: caller contract; the slot is in this thread's stack (the
    // frame is live or was live: the stack memory stays mapped).
    unsafe {
        if (*h).in_use.load(Ordering::Relaxed) != INST_HOOKED {
            return;
        }
        let slot = (*h).sp as *mut u64;
        if core::ptr::read(slot) == trap::trampoline_addr() {
            core::ptr::write(slot, (*probes::public(h)).ret_addr as u64);
        }
        (*h).in_use.store(INST_UNHOOKED, Ordering::Relaxed);
    }
}

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
    threads::enter(ts);
    // SAFETY: this thread's own list (see restore_hijacked).
    unsafe { settle(ts, sp) };
    threads::leave(ts);
}

/// # Safety
/// `ts` is this thread's slot, inside `threads::enter`.
unsafe fn settle(ts: *mut ThreadState, sp: u64) {
    let alt = trap::altstack();
    let on_alt = |p: u64| alt.is_some_and(|(lo, hi)| p >= lo && p < hi);
    let here = on_alt(sp);
    // SAFETY: caller contract; instances are never freed.
    unsafe {
        (*ts).in_handler += 1;
        let tramp = trap::trampoline_addr();
        let mut link: *mut usize = core::ptr::addr_of_mut!((*ts).kret_head);
        while *link != 0 {
            let h = *link as *mut InstHdr;
            let state = (*h).in_use.load(Ordering::Relaxed);
            let slot = (*h).sp;
            let same_stack = on_alt(slot) == here;
            let dead = same_stack && slot < sp;
            if state == INST_UNHOOKED && !dead {
                let ret = (*probes::public(h)).ret_addr as u64;
                if core::ptr::read(slot as *const u64) == ret {
                    core::ptr::write(slot as *mut u64, tramp);
                    (*h).in_use.store(INST_HOOKED, Ordering::Relaxed);
                    link = core::ptr::addr_of_mut!((*h).next);
                    continue;
                }
            } else if !dead {
                link = core::ptr::addr_of_mut!((*h).next);
                continue;
            }
            // Unwound (or its frame no longer holds the return address).
            *link = (*h).next;
            count_unwound(1);
            probes::release(h);
        }
        (*ts).in_handler -= 1;
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
        crate::output::diag(b"ptap: no __cxa_begin_catch to forward to; aborting\n");
        trap::die_now(trap::SIGSEGV);
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
            unsafe { crate::sys::syscall3(crate::sys::SYS_EXIT, 0, 0, 0) };
        }
    }
    // SAFETY: the real pthread_exit (never returns).
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> !>(f)(retval) }
}
