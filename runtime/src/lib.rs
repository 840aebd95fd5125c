//! ptap-rt-core: the runtime injected into target processes, less its
//! constructor and exported C symbols (runtime/so/, `libptap_rt.so`).
//!
//! Implements the Kprobes API (`runtime/include/ptap/kprobes.h`) for user
//! space: int3 probes with out-of-line execution (boosted or single-stepped),
//! jprobes (mirror principle), kretprobes (return-address trampoline), the
//! session shared memory and its output ring, printk, kallsyms_lookup_name,
//! dump_stack and signal chaining.
//!
//! `ptap` and the tests link this crate for what both sides share (the
//! session layout, module metadata, globals and maps, the object loader,
//! symbols, the formatter); only libptap_rt.so has a constructor and
//! interposes libc functions.

pub mod abi;
pub mod base;
pub mod fmt;
pub mod hit;
pub mod kprobes;
pub mod lifecycle;
pub mod proc;
pub mod script;
pub mod session;
pub mod syscall;
