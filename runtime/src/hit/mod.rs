//! The hit path: everything that runs in a trap, a trampoline or a SIGSYS
//! handler. SIGTRAP (int3 probes, single-step, kretprobe trampoline,
//! jprobe_return) and fault signals (handler faults, faults in displaced
//! instructions, chaining to the target's own handlers).
//!
//! Everything here runs in signal context: no allocation, no locks, no libc
//! calls a user might probe (raw syscalls only).
//!
//! Nothing here imports the control side (`kprobes`, `syscall`, `script`,
//! `loader`, `api`): registration publishes what the hit path reads (the
//! site table in [`site`], code ranges in [`ranges`]) and the hit path only
//! reads it.

pub mod abandon;
pub mod asm;
pub mod backtrace;
pub mod chain;
pub mod dispatch;
pub mod fault;
pub mod int3;
pub mod jump;
pub mod onstack;
pub mod ranges;
pub mod regs;
pub mod sigsys;
pub mod site;
pub mod threads;
pub mod unwind;
pub mod wrap;
