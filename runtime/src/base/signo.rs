//! Signal numbers, and the signals the runtime manages (never blocked or
//! displaced by the target).

use crate::base::sys;

pub const SIGILL: i32 = 4;

pub const SIGTRAP: i32 = 5;

pub const SIGBUS: i32 = 7;

pub const SIGFPE: i32 = 8;

pub const SIGSEGV: i32 = 11;
pub const SIGSYS: i32 = 31;

// SIGSYS: syscall probes (runtime/src/syscall/) trap with it; it must never be blocked or displaced.
pub const MANAGED: [i32; 6] = [SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS];

pub fn managed(sig: i32) -> bool {
    MANAGED.contains(&sig)
}

/// Bit mask of the managed signals (never blocked by the target).
pub fn managed_mask() -> u64 {
    MANAGED.iter().fold(0, |m, &s| m | sys::sigbit(s))
}
