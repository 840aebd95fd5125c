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
pub mod backtrace;
pub mod fmt;
pub mod helpers;
pub mod loader;
mod mem;
pub mod output;
pub mod probes;
pub mod script;
pub mod session;
pub mod signals;
pub mod symbols;
pub mod sys;
pub mod syscall;
pub mod threads;
pub mod trap;
pub mod unwind;
pub mod unwind_dwarf;

use core::ffi::c_char;

/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn kallsyms_lookup_name(name: *const c_char) -> u64 {
    if name.is_null() {
        return 0;
    }
    // SAFETY: caller contract.
    let n = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    symbols::lookup(&n).map_or(0, |f| f.addr)
}

/// Symbolized backtrace of the probed context (inside a handler) or of the
/// caller, to ptap's output.
#[no_mangle]
pub extern "C" fn dump_stack() {
    let ts = threads::current();
    if let Some(t) = ts {
        // SAFETY: this thread's slot; cur_regs points to live regs while a handler runs.
        let r = unsafe { (*t).cur_regs };
        if r != 0 {
            // SAFETY: as above.
            let regs = unsafe { &*(r as *const abi::PtRegs) };
            backtrace::dump_regs(ts, regs);
            return;
        }
    }
    let sp: u64;
    // SAFETY: reading rsp.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp) };
    backtrace::dump(ts, dump_stack as *const () as u64, sp);
}

/// Number of probe hits and runtime traps so far (for tests and ptap -v).
/// # Safety
/// `hits` and `traps` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_stats(hits: *mut u64, traps: *mut u64) {
    use core::sync::atomic::Ordering;
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !hits.is_null() {
            *hits = trap::HITS.load(Ordering::Relaxed);
        }
        if !traps.is_null() {
            *traps = trap::TRAPS.load(Ordering::Relaxed);
        }
    }
}
