//! Output, errors and globals helpers: printf/warn records, error()/exit(),
//! `catch (msg)` text, histograms, string globals.

use core::sync::atomic::Ordering;

use core::fmt::Write as _;

use super::ctx::{error_text, ProbeCtx, ERRMSG_MAX, ERR_FAULT, ERR_OVERFLOW, ERR_USER};
use super::globals::{c_len, copy_str};
use super::h_args::{cap_of, globals_of, session_of, BIG};
use super::record::{self, Arg, MAX_ARGS};

/// `printf(fmt, ...)`: `args[i]` is a long, or (bit i of `mask`) a string pointer.
///
/// # Safety
/// `ctx` live; `args` valid for `nargs` i64; string args NUL-terminated.
pub(super) unsafe extern "C" fn printf(
    ctx: *mut ProbeCtx,
    fmt: i64,
    args: *const i64,
    nargs: i64,
    mask: i64,
) {
    // SAFETY: caller contract.
    let ctx = unsafe { &mut *ctx };
    let n = usize::try_from(nargs).unwrap_or(0).min(MAX_ARGS);
    let mut vals = [Arg::Long(0); MAX_ARGS];
    for (i, v) in vals.iter_mut().enumerate().take(n) {
        // SAFETY: args has nargs entries.
        let a = unsafe { *args.add(i) };
        *v = if (mask as u64) & (1 << i) != 0 {
            let p = a as *const u8;
            // SAFETY: string arguments are NUL-terminated buffers.
            Arg::Str(unsafe { core::slice::from_raw_parts(p, c_len(p, BIG)) })
        } else {
            Arg::Long(a)
        };
    }
    let ok = match session_of(ctx) {
        Some(s) => record::write(&s, fmt as u32, &vals[..n]),
        None => false,
    };
    if !ok {
        ctx.dropped += 1;
    }
}

/// # Safety
/// `ctx` live; `msg` NUL-terminated.
pub(super) unsafe extern "C" fn warn(ctx: *mut ProbeCtx, msg: *const u8) {
    // SAFETY: caller contract.
    unsafe {
        let p = msg as i64;
        printf(ctx, i64::from(record::FMT_WARN), &p, 1, 1);
    }
}

/// # Safety
/// `ctx` live; `msg` NUL-terminated.
pub(super) unsafe extern "C" fn error(ctx: *mut ProbeCtx, msg: *const u8) {
    // SAFETY: caller contract.
    unsafe {
        copy_str((*ctx).errmsg_ptr(), msg, ERRMSG_MAX);
        (*ctx).error = ERR_USER;
    }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn exit(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        // A pending abort() (or a failed start) stays what it is.
        let _ = g
            .header()
            .exit
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// `abort()`: end the session now, without the end probes.
///
/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn abort(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        g.header()
            .exit
            .store(super::modules::EXIT_ABORT, Ordering::Release);
    }
}

/// `get_cycles()`: the processor's time-stamp counter.
///
/// # Safety
/// Never dereferences `ctx`.
pub(super) unsafe extern "C" fn cycles(_ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() as i64 }
}

/// A fixed buffer `core::fmt` writes into (truncating; no allocation).
struct Fixed {
    b: [u8; 96],
    n: usize,
}

impl core::fmt::Write for Fixed {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.b.len() - self.n;
        let k = s.len().min(room);
        self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
        self.n += k;
        Ok(())
    }
}

/// The message of the pending error (for `catch (msg)`): the `error()`
/// text, or what the error code means.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn errmsg(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract.
    let c = unsafe { &*ctx };
    // The same text as the `ERROR:` line ptap prints (output.rs
    // `error_line`), formatted without allocating into a stack buffer.
    let mut buf = Fixed { b: [0; 96], n: 0 };
    let text: &[u8] = match c.error {
        ERR_USER => c.errmsg(),
        ERR_FAULT => {
            let _ = write!(buf, "user memory read fault at 0x{:x}", c.error_arg);
            &buf.b[..buf.n]
        }
        ERR_OVERFLOW => {
            let _ = write!(buf, "Array overflow, check size limit ({})", c.error_arg);
            &buf.b[..buf.n]
        }
        e => error_text(e).as_bytes(),
    };
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let n = text.len().min(cap - 1);
    // SAFETY: dst valid for cap bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(text.as_ptr(), dst, n);
        *dst.add(n) = 0;
    }
}

/// `print(@hist_...(s))`: the histogram whose `n` buckets start at `off`
/// in the globals area, as one record (its non-empty buckets); ptap draws it.
///
/// # Safety
/// `ctx` live; `off`/`n` describe buckets laid out by the compiler.
pub(super) unsafe extern "C" fn hist_print(
    ctx: *mut ProbeCtx,
    off: i64,
    kind: i64,
    lo: i64,
    step: i64,
    n: i64,
) {
    // SAFETY: caller contract.
    let c = unsafe { &mut *ctx };
    let Some(g) = globals_of(c) else { return };
    let mut text = [0u8; 4096];
    let mut b = crate::fmt::Buf {
        data: &mut text,
        len: 0,
    };
    for i in 0..n.max(0) as u64 {
        let v = g.long(off as u64 + 8 * i).load(Ordering::Relaxed);
        if v != 0 {
            crate::session::output::push_dec(&mut b, i);
            b.push(b':');
            crate::session::output::push_dec(&mut b, v as u64);
            b.push(b',');
        }
    }
    let len = b.len;
    let args = [
        Arg::Long(kind),
        Arg::Long(lo),
        Arg::Long(step),
        Arg::Long(n),
        Arg::Str(&text[..len]),
    ];
    let ok = match session_of(c) {
        Some(s) => record::write(&s, record::FMT_HIST, &args),
        None => false,
    };
    if !ok {
        c.dropped += 1;
    }
}

/// Load string global at `off` into `dst`.
///
/// # Safety
/// `ctx` live; `off` a string slot of capacity `cap`; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn gstr_load(ctx: *mut ProbeCtx, off: i64, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract.
    match globals_of(unsafe { &*ctx }) {
        // SAFETY: caller contract.
        Some(g) => unsafe {
            g.load_str(off as u64, cap_of(cap), dst);
        },
        // SAFETY: dst valid for cap >= 1 bytes.
        None if cap > 0 => unsafe { *dst = 0 },
        None => {}
    }
}

/// Store `src` into string global at `off`.
///
/// # Safety
/// As [`gstr_load`]; `src` NUL-terminated.
pub(super) unsafe extern "C" fn gstr_store(ctx: *mut ProbeCtx, off: i64, src: *const u8, cap: i64) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        // SAFETY: caller contract.
        unsafe { g.store_str(off as u64, cap_of(cap), src) };
    }
}

/// Zero `len` bytes of the globals area at `off` (`delete s` of a
/// statistics global with histograms).
///
/// # Safety
/// `ctx` live; the range lies inside the globals area.
pub(super) unsafe extern "C" fn zero_bytes(ctx: *mut ProbeCtx, off: i64, len: i64) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        for i in 0..(len.max(0) as u64 / 8) {
            g.long(off as u64 + 8 * i).store(0, Ordering::Relaxed);
        }
    }
}
