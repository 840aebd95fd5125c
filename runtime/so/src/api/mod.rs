//! Every exported C symbol of the runtime, one file per public header
//! (`runtime/include/ptap/`).

pub mod kprobes;
pub mod runtime;
pub mod signals;
pub mod syscalls;
pub mod unwind;
