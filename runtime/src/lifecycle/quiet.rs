//! The runtime's own threads (`ptap-ctl`, the init watchdog, `ptap-attach`)
//! never take a signal meant for the target's threads.
//!
//! A signal sent to the process (kill(getpid(), ...)) may be delivered to
//! any of its threads that does not block it. When the runtime's control
//! thread woke (its periodic timer) and preempted the main thread just as
//! that thread's kill() queued the signal, the control thread took it: the
//! target's handler ran there, and one that siglongjmp'ed went on with the
//! program's loop on the control thread, on the main thread's stack, next
//! to the main thread (a crash a little later).

use crate::base::signo::managed_mask;
use crate::base::sys;

/// Every signal except the managed ones (a fault or trap in a runtime
/// thread is still the runtime's) and glibc's internal 32 (cancellation)
/// and 33 (setxid: every thread must take it, or the target's setuid()
/// waits forever), nor the real-time signals 40..=63 (the jump-path
/// optimizer's barrier claims one of them that the target leaves at
/// SIG_DFL and asks every thread, these too, where it is: blocked, each
/// barrier would wait out its timeout). SIGKILL and SIGSTOP cannot be
/// blocked.
pub fn async_mask() -> u64 {
    let keep = [libc::SIGKILL, libc::SIGSTOP, 32, 33];
    let barrier = (40..=63).fold(0u64, |m, s| m | sys::sigbit(s));
    !keep
        .iter()
        .fold(managed_mask() | barrier, |m, &s| m | sys::sigbit(s))
}

/// While alive, the calling thread blocks [`async_mask`]: a thread spawned
/// meanwhile starts with that mask (no window where it could take a signal).
/// The previous mask comes back on drop.
pub struct Quiet(u64);

impl Quiet {
    // A guard that changes the thread's mask is made on purpose: no Default.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Quiet {
        let block = async_mask();
        let mut old = 0u64;
        // SAFETY: SIG_BLOCK on this thread with local buffers.
        unsafe { sys::rt_sigprocmask(0, Some(&block), Some(&mut old)) };
        Quiet(old)
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        // SAFETY: SIG_SETMASK back to this thread's previous mask.
        unsafe { sys::rt_sigprocmask(2, Some(&self.0), None) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked() -> u64 {
        let mut m = 0u64;
        // SAFETY: query only.
        unsafe { sys::rt_sigprocmask(0, None, Some(&mut m)) };
        m
    }

    #[test]
    fn a_thread_spawned_under_quiet_blocks_the_async_signals_only() {
        let before = blocked();
        let h = {
            let _q = Quiet::new();
            std::thread::spawn(blocked)
        };
        assert_eq!(blocked(), before, "the spawning thread's mask is back");
        let m = h.join().unwrap();
        assert_eq!(m & async_mask(), async_mask());
        assert_eq!(m & managed_mask(), 0);
        assert_eq!(m & (sys::sigbit(32) | sys::sigbit(33)), 0);
        assert_eq!(m & sys::sigbit(40), 0, "the barrier's signals stay open");
        assert_ne!(m & sys::sigbit(libc::SIGUSR1), 0);
    }
}
