//! Abandoning a C module's timed-out init_module() (see
//! `crate::lifecycle::modcall`): the watchdog's queued SIGSEGV, recognised
//! in the fault handler.

use core::sync::atomic::{AtomicI32, Ordering};

use crate::base::sys;
use crate::hit::threads;

/// si_value of the SIGSEGV (si_code SI_QUEUE, our pid) that abandons the
/// guarded init_module() of thread [`INIT_TID`].
pub(crate) const ABANDON_MAGIC: u64 = 0x7074_6170_696e_6974;

/// The thread running a timed init_module() (0: none).
pub(crate) static INIT_TID: AtomicI32 = AtomicI32::new(0);

/// From the SIGSEGV handler, for a queued SIGSEGV: is it the watchdog's
/// request? Then the guarded init_module() of this thread is abandoned
/// (or, while a probe handler runs on top of it, left for the next
/// request). True when the signal was the watchdog's.
///
/// # Safety
/// Kernel-provided arguments of the running SIGSEGV handler.
pub(crate) unsafe fn abandon_request(
    info: *mut libc::siginfo_t,
    uc: *mut libc::ucontext_t,
) -> bool {
    // SAFETY: for SI_QUEUE the sender's pid is at +16 and the value at +24.
    let (pid, val) = unsafe {
        let base = info as *const u8;
        (
            core::ptr::read(base.add(16) as *const i32),
            core::ptr::read(base.add(24) as *const u64),
        )
    };
    if val != ABANDON_MAGIC || pid != sys::getpid() {
        return false;
    }
    if INIT_TID.load(Ordering::Acquire) == sys::gettid() {
        if let Some(ts) = threads::current() {
            // SAFETY: this thread's slot; uc is the kernel's context.
            unsafe { crate::hit::asm::abandon_guarded(ts, uc) };
        }
    }
    true
}
