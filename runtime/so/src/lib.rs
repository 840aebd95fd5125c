//! libptap_rt.so: injected into target processes (`LD_PRELOAD` by
//! `ptap -c`, `dlopen` by `ptap -x`).
//!
//! This crate is only what a shared object in a target needs on top of
//! ptap-rt-core: the `.init_array` constructor and the rest of the
//! runtime's life in a process ([`lifecycle`]), and every exported C symbol
//! of the public headers with the interposed libc functions ([`api`]).
//! Everything else (the Kprobes machinery, the hit path, scripts, the
//! session) is in ptap-rt-core, which ptap links too.

pub mod api;
pub mod lifecycle;
