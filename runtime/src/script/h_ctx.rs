//! Context helpers: pid/tid/..., clocks, execname, pp, probefunc,
//! syscall_name, usymname, backtraces. Raw system calls only.

use core::sync::atomic::Ordering;

use super::ctx::ProbeCtx;
use super::globals::copy_str;
use super::helpers::{cap_of, globals_of, put};
use crate::sys;

pub(super) extern "C" fn pid(_: *mut ProbeCtx) -> i64 {
    i64::from(sys::getpid())
}

pub(super) extern "C" fn tid(_: *mut ProbeCtx) -> i64 {
    i64::from(sys::gettid())
}

pub(super) const SYS_GETUID: usize = 102;
pub(super) const SYS_GETPPID: usize = 110;
pub(super) const SYS_PRCTL: usize = 157;
pub(super) const SYS_CLOCK_GETTIME: usize = 228;
pub(super) const SYS_GETCPU: usize = 309;
pub(super) const PR_GET_NAME: usize = 16;

pub(super) fn raw0(n: usize) -> i64 {
    // SAFETY: syscalls without pointer arguments.
    unsafe { sys::syscall3(n, 0, 0, 0) as i64 }
}

pub(super) extern "C" fn ppid(_: *mut ProbeCtx) -> i64 {
    raw0(SYS_GETPPID)
}

pub(super) extern "C" fn uid(_: *mut ProbeCtx) -> i64 {
    raw0(SYS_GETUID)
}

pub(super) extern "C" fn cpu(_: *mut ProbeCtx) -> i64 {
    let mut c: u32 = 0;
    // SAFETY: getcpu writes one u32; node and cache may be NULL.
    let r = unsafe { sys::syscall3(SYS_GETCPU, &mut c as *mut u32 as usize, 0, 0) };
    if r < 0 {
        r as i64
    } else {
        i64::from(c)
    }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn target(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    globals_of(unsafe { &*ctx }).map_or(0, |g| {
        i64::from(g.header().target_pid.load(Ordering::Relaxed))
    })
}

pub(super) fn clock(id: usize) -> (i64, i64) {
    let mut ts = [0i64; 2];
    // SAFETY: ts is a valid timespec.
    unsafe { sys::syscall3(SYS_CLOCK_GETTIME, id, ts.as_mut_ptr() as usize, 0) };
    (ts[0], ts[1])
}

/// Monotonic nanoseconds (for measuring latencies).
pub(super) extern "C" fn nsecs(_: *mut ProbeCtx) -> i64 {
    let (s, ns) = clock(1); // CLOCK_MONOTONIC
    s.wrapping_mul(1_000_000_000).wrapping_add(ns)
}

pub(super) extern "C" fn gettimeofday_us(_: *mut ProbeCtx) -> i64 {
    let (s, ns) = clock(0); // CLOCK_REALTIME
    s.wrapping_mul(1_000_000).wrapping_add(ns / 1000)
}

/// The current thread's command name (prctl PR_GET_NAME, 16 bytes).
///
/// # Safety
/// `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn execname(_: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { sys::syscall3(SYS_PRCTL, PR_GET_NAME, name.as_mut_ptr() as usize, 0) };
    // SAFETY: name is NUL-terminated (17th byte); dst per contract.
    unsafe { copy_str(dst, name.as_ptr(), cap_of(cap)) };
}

/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn pp(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract; pp/pp_len describe a live byte string (or NULL).
    unsafe {
        let c = &*ctx;
        let n = if c.pp.is_null() {
            0
        } else {
            (c.pp_len as usize).min(cap - 1)
        };
        if n > 0 {
            core::ptr::copy_nonoverlapping(c.pp, dst, n);
        }
        *dst.add(n) = 0;
    }
}

/// `probefunc()`: the probed function's name ("" when unknown).
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn probefunc(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract; func/func_len describe a live string (or NULL).
    unsafe {
        let c = &*ctx;
        let name: &[u8] = if c.func.is_null() {
            &[]
        } else {
            core::slice::from_raw_parts(c.func, c.func_len as usize)
        };
        put(dst, cap, name);
    }
}

/// `syscall_name()`: the name of the call in `regs.orig_ax` among the point's calls.
///
/// # Safety
/// `ctx` live (regs non-NULL in a system-call probe); `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn syscall_name(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract; the table is live for the registration's life.
    unsafe {
        let c = &*ctx;
        let nr = if c.regs.is_null() {
            u64::MAX
        } else {
            (*c.regs).orig_ax
        };
        let mut name: &[u8] = &[];
        if !c.syscalls.is_null() {
            for s in core::slice::from_raw_parts(c.syscalls, c.nsyscalls as usize) {
                if s.nr == nr {
                    name = core::slice::from_raw_parts(s.name, s.len as usize);
                }
            }
        }
        put(dst, cap, name);
    }
}

/// `usymname(addr)`: the function containing `addr` in this process, or
/// `0x...` when no symbol is known. Reads the runtime's published symbol
/// index (no allocation, no lock).
///
/// # Safety
/// `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn usymname(_: *mut ProbeCtx, addr: i64, dst: *mut u8, cap: i64) {
    let found =
        crate::symbols::current().and_then(|idx| crate::symbols::containing_at(idx, addr as u64));
    match found {
        // SAFETY: caller contract.
        Some((o, i)) => unsafe { put(dst, cap, o.display_name(i).as_bytes()) },
        None => {
            let mut tmp = [0u8; 18];
            let mut b = crate::fmt::Buf {
                data: &mut tmp,
                len: 0,
            };
            crate::output::push_hex(&mut b, addr as u64);
            let n = b.len;
            // SAFETY: caller contract.
            unsafe { put(dst, cap, &tmp[..n]) };
        }
    }
}

/// `print_ubacktrace()`: the runtime's symbolized backtrace of the probed
/// context (CFI unwinding, then a stack scan), as text output.
///
/// # Safety
/// `ctx` live; `ctx.regs` NULL or the probed registers.
pub(super) unsafe extern "C" fn print_ubacktrace(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    let regs = unsafe { (*ctx).regs };
    if regs.is_null() {
        return;
    }
    // SAFETY: live registers of the probed thread; its own thread slot.
    unsafe { crate::backtrace::dump_regs(crate::threads::current(), &*regs, false) };
}

/// `ubacktrace()`: the return addresses of the probed context, hex,
/// separated by spaces (CFI unwinding; stops where the CFI ends; a
/// kretprobe's hijacked return address is replaced by the real one, as in
/// `dump_stack`), truncated to the buffer.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn ubacktrace(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    use crate::unwind_dwarf::{step, Frame};
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: dst valid for cap bytes (contract).
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    let mut b = crate::fmt::Buf {
        data: &mut out[..cap - 1],
        len: 0,
    };
    // SAFETY: caller contract.
    let regs = unsafe { (*ctx).regs };
    if let (false, Some(idx)) = (regs.is_null(), crate::symbols::current()) {
        // SAFETY: live registers of the probed thread.
        let mut f = Frame::from_ptregs(unsafe { &*regs });
        crate::output::push_hex(&mut b, f.ip());
        let tramp = crate::trap::trampoline_addr();
        let ts = crate::threads::current();
        for i in 0..24 {
            match step(idx, &f, i == 0) {
                Ok(mut n) if n.ip() == tramp => {
                    // A kretprobe's hijacked return: the thread's instance
                    // for that stack slot holds the real address.
                    // SAFETY: ts is this thread's own slot.
                    match unsafe { crate::backtrace::unhijack(ts, n.ra_slot) } {
                        Some(real) => {
                            n.regs[16] = real;
                            b.push(b' ');
                            crate::output::push_hex(&mut b, n.ip());
                            f = n;
                        }
                        None => break,
                    }
                }
                Ok(n) if n.ip() != 0 => {
                    b.push(b' ');
                    crate::output::push_hex(&mut b, n.ip());
                    f = n;
                }
                _ => break,
            }
        }
    }
    let n = b.len;
    out[n] = 0;
}
