//! ptap-runtime: injected into target processes (`libptap_rt.so`).
//!
//! Implements the Kprobes API (`runtime/include/ptap/kprobes.h`) for user
//! space: int3 probes with out-of-line execution (boosted or single-stepped),
//! jprobes (mirror principle), kretprobes (return-address trampoline), the
//! session shared memory and its output ring, printk, kallsyms_lookup_name,
//! dump_stack and signal chaining.
//!
//! The same crate is also linked into `ptap` as an rlib for the session
//! layout ([`session`]); there, the constructor and the interposed
//! functions stay inert.

pub mod abi;
pub mod api;
pub mod base;
pub mod fmt;
pub mod hit;
pub mod kprobes;
pub mod lifecycle;
pub mod proc;
pub mod script;
pub mod session;
pub mod syscall;
