//! Chaining a managed signal to the target's own handler (or its default
//! action).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::base::signo::managed_mask;
use crate::base::signo::{SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP};
use crate::base::sys;
use crate::hit::regs::Uc;
use crate::session::output;

/// The target's own actions for the managed signals (handler, flags, mask).
pub static USER_ACT: [[AtomicU64; 3]; 65] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; 65];

/// Die of `sig` as if we were not there: default disposition, re-raise.
///
/// # Safety
/// `uc` must be the valid, writable `ucontext_t` the kernel passed to the
/// signal handler this is called from (its signal mask is edited).
pub unsafe fn die(sig: i32, uc: *mut Uc) {
    let dfl = sys::KSigaction::default();
    // SAFETY: resetting a disposition and unblocking sig in the context we
    // return to (uc valid by contract); the pending signal then kills the
    // process.
    unsafe {
        sys::rt_sigaction(sig, Some(&dfl), None);
        let m = core::ptr::addr_of_mut!((*uc).uc_sigmask) as *mut u64;
        *m &= !sys::sigbit(sig);
    }
    sys::tgkill(sys::getpid(), sys::gettid(), sig);
}

fn signame(sig: i32) -> &'static [u8] {
    match sig {
        SIGSEGV => b"SIGSEGV",
        SIGBUS => b"SIGBUS",
        SIGILL => b"SIGILL",
        SIGFPE => b"SIGFPE",
        SIGTRAP => b"SIGTRAP",
        _ => b"signal",
    }
}

/// Deliver `sig` to the target's own handler, with its flags and mask, or
/// apply the default action. `orig` is set when the fault happened in a
/// displaced instruction (its original address), for the death report.
///
/// # Safety
/// Kernel-provided signal arguments.
pub unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, uc: *mut Uc, orig: Option<u64>) {
    let a = &USER_ACT[sig as usize];
    let handler = a[0].load(Ordering::Acquire) as usize;
    let flags = a[1].load(Ordering::Acquire);
    let mask = a[2].load(Ordering::Acquire);
    match handler {
        0 => {
            if let Some(o) = orig {
                let mut data = [0u8; 256];
                let mut b = crate::fmt::Buf {
                    data: &mut data,
                    len: 0,
                };
                b.extend(b"ptap: target ");
                b.extend(signame(sig));
                b.extend(b" at ");
                crate::proc::symbols::symbolize(o, &mut b);
                b.extend(b"\n");
                output::diag(b.as_bytes());
            }
            // SAFETY: uc is the kernel's context (chain's contract).
            unsafe { die(sig, uc) };
        }
        1 => {
            if sig != SIGTRAP {
                // SAFETY: as above.
                unsafe { die(sig, uc) };
            }
        }
        h => {
            // SAFETY: uc_sigmask is the mask the interrupted code had.
            let mut m = unsafe { *(core::ptr::addr_of!((*uc).uc_sigmask) as *const u64) } | mask;
            if flags & sys::SA_NODEFER == 0 {
                m |= sys::sigbit(sig);
            }
            // The managed signals stay deliverable while the target's
            // handler runs (a probe hit in it with SIGTRAP blocked would be
            // fatal, a trapped system call with SIGSYS blocked too), even
            // in the target's own SIGTRAP or SIGSYS handler: it behaves as
            // if installed with SA_NODEFER. The fault signals keep their
            // own block (a fault in the target's fault handler is fatal,
            // as without ptap).
            let syscall_trap = crate::base::signo::SIGSYS;
            let own = if sig == SIGTRAP || sig == syscall_trap {
                0
            } else {
                sys::sigbit(sig)
            };
            m &= !managed_mask() | own;
            // SAFETY: setting our own mask for the duration of the target's handler.
            unsafe { sys::rt_sigprocmask(2, Some(&m), None) };
            if flags & sys::SA_RESETHAND != 0 {
                a[0].store(0, Ordering::Release);
            }
            // SAFETY: the target installed this handler for this signal;
            // on its alternate stack if it asked for one (SA_ONSTACK).
            unsafe { crate::hit::onstack::call_handler(h, flags, sig, info, uc as *mut c_void) };
        }
    }
}
