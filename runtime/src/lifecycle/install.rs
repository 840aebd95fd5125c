//! Installing the runtime's handlers for the managed signals.

use core::sync::atomic::Ordering;

use crate::base::signo::managed_mask;
use crate::base::signo::MANAGED;
use crate::base::signo::SIGTRAP;
use crate::base::sys;
use crate::hit::chain::USER_ACT;
use crate::hit::fault::on_fault;
use crate::hit::int3::on_sigtrap;

/// Install the runtime's handlers, remembering whatever was installed before.
pub fn install() {
    for &sig in &MANAGED {
        let mut old = sys::KSigaction::default();
        // SAFETY: query only.
        unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) };
        let a = &USER_ACT[sig as usize];
        a[0].store(old.handler as u64, Ordering::Release);
        a[1].store(old.flags, Ordering::Release);
        a[2].store(old.mask, Ordering::Release);
        let handler = if sig == SIGTRAP {
            on_sigtrap as *const () as usize
        } else {
            on_fault as *const () as usize
        };
        // Block asynchronous signals while our handler runs (the target's
        // handlers could otherwise run in the middle of the hit path); the
        // synchronous ones stay open (a handler may fault, nest, or step).
        // SIGTRAP runs on the thread's own stack: handlers (printk buffers,
        // dump_stack) need more room than a typical sigaltstack (Rust and Go
        // give every thread one of ~8 KiB). Faults keep SA_ONSTACK so that
        // the target's stack-overflow handlers still work.
        let onstack = if sig == SIGTRAP { 0 } else { sys::SA_ONSTACK };
        let act = sys::KSigaction {
            handler,
            flags: sys::SA_SIGINFO | sys::SA_NODEFER | onstack | sys::SA_RESTART,
            restorer: 0,
            mask: !managed_mask(),
        };
        // SAFETY: installing our handler.
        unsafe { sys::rt_sigaction(sig, Some(&act), None) };
    }
}
