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
mod forklock;
pub mod helpers;
pub mod loader;
mod mem;
pub mod names;
pub mod optprobe;
pub mod output;
pub mod probes;
pub mod script;
pub mod session;
pub mod signals;
pub mod symbols;
pub mod symcache;
pub mod sys;
pub mod syscall;
pub mod threads;
pub mod trap;
pub mod trusted;
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
            // SAFETY: ts is this thread's own slot.
            unsafe { backtrace::dump_regs(ts, regs, false) };
            return;
        }
    }
    // Not in a handler: unwind from here (this function's own CFI row at
    // the captured ip), and print from our caller on. Outside the hit path
    // the symbol index may be built now.
    symbols::get_or_build();
    let (ip, sp, bp, bx, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: only reads registers.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            "mov {bx}, rbx",
            "mov {r12}, r12",
            "mov {r13}, r13",
            "mov {r14}, r14",
            "mov {r15}, r15",
            ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp, bx = out(reg) bx,
            r12 = out(reg) r12, r13 = out(reg) r13, r14 = out(reg) r14, r15 = out(reg) r15,
            options(nomem, nostack, preserves_flags),
        )
    };
    let regs = abi::PtRegs {
        ip,
        sp,
        bp,
        bx,
        r12,
        r13,
        r14,
        r15,
        ..Default::default()
    };
    // SAFETY: ts is this thread's own slot.
    unsafe { backtrace::dump_regs(ts, &regs, true) };
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
