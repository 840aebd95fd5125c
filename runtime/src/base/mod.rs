//! The bottom layer: raw system calls, the runtime's private mem* functions,
//! fork-safe locks and the checks on untrusted shared memory. Imports
//! nothing else of the crate (besides `fmt` and `abi`, also base-layer).

pub mod fds;
pub mod forklock;
mod mem;
pub mod peek;
pub mod signo;
pub mod sys;
pub mod trusted;
