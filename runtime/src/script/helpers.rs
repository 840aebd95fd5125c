//! Helpers called by compiled handlers (symbols `ptap_h_*`, distinct from the
//! C-ABI exports of `crate::helpers`): ONE table ([`HELPERS`]) gives each
//! helper's symbol name, its signature and its address. The compiler
//! declares imports from it (names + signatures), the probe-module loader
//! resolves relocations against it (names -> addresses), and the JIT used by
//! tests and by ptap registers the same addresses.
//!
//! Conventions: every parameter and result is a 64-bit integer (a long, a
//! pointer, or the `*mut ProbeCtx`). Strings are NUL-terminated buffers of
//! `cap` bytes (MAXSTRINGLEN + 1), owned by the caller. A helper that fails
//! sets `ctx.error` (and `error_arg`); compiled code checks it after the call
//! and records the source location.
//!
//! Hit-path rules: no allocation, no locks, no libc calls (raw syscalls).
//! Every function here is `extern "C"` and cannot panic (slices are built only
//! from lengths checked against their buffers).
//!
//! Arrays: `ptap_h_map_*` (in `map_helpers.rs`), `(ctx, off, keys, ...)`
//! with `off` the array's offset in the globals area and `keys` one i64 per
//! key (a long, or a string pointer).

use core::sync::atomic::Ordering;

use super::ctx::{error_text, ProbeCtx, ERRMSG_MAX, ERR_FAULT, ERR_USER};
use super::globals::{c_len, copy_str, Globals};
use super::map_helpers::*;
use super::record::{self, Arg, MAX_ARGS};
use crate::session::Session;
use crate::sys;

/// A parameter's role (all are passed as i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P {
    /// The `*mut ProbeCtx` of the running handler.
    Ctx,
    Long,
    /// A pointer (string buffer, argument array).
    Ptr,
}

/// Helpers by name, in [`HELPERS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Helper {
    StrCopy,
    StrConcat,
    StrCmp,
    StrLen,
    Substr,
    Isinstr,
    Strtol,
    Printf,
    Warn,
    Error,
    Exit,
    Pid,
    Tid,
    Ppid,
    Uid,
    Cpu,
    Target,
    Nsecs,
    GettimeofdayUs,
    Execname,
    Pp,
    UserRead,
    UserString,
    GStrLoad,
    GStrStore,
    Sprintf,
    ErrMsg,
    Probefunc,
    SyscallName,
    Usymname,
    UserWrite,
    MapGet,
    MapSet,
    MapAdd,
    MapIn,
    MapDelete,
    MapClear,
    MapAgg,
    MapStat,
    MapSorted,
    MapKey,
    MapValue,
    PrintUbacktrace,
    Ubacktrace,
    HistPrint,
    ZeroBytes,
}

pub struct HelperDef {
    pub helper: Helper,
    /// Symbol name in probe modules.
    pub name: &'static str,
    pub params: &'static [P],
    /// Returns a long (else nothing).
    pub ret: bool,
    /// The function's address.
    pub addr: fn() -> usize,
}

use P::{Ctx as C, Long as L, Ptr as A};

macro_rules! h {
    ($h:ident, $name:literal, [$($p:expr),*], $ret:expr, $f:ident) => {
        HelperDef { helper: Helper::$h, name: $name, params: &[$($p),*], ret: $ret, addr: || $f as *const () as usize }
    };
}

pub static HELPERS: &[HelperDef] = &[
    h!(StrCopy, "ptap_h_str_copy", [A, A, L], false, str_copy),
    h!(
        StrConcat,
        "ptap_h_str_concat",
        [A, A, A, L],
        false,
        str_concat
    ),
    h!(StrCmp, "ptap_h_str_cmp", [A, A], true, str_cmp),
    h!(StrLen, "ptap_h_strlen", [A], true, str_len),
    h!(Substr, "ptap_h_substr", [A, A, L, L, L], false, substr),
    h!(Isinstr, "ptap_h_isinstr", [A, A], true, isinstr),
    h!(Strtol, "ptap_h_strtol", [C, A, L], true, strtol),
    h!(Printf, "ptap_h_printf", [C, L, A, L, L], false, printf),
    h!(Warn, "ptap_h_warn", [C, A], false, warn),
    h!(Error, "ptap_h_error", [C, A], false, error),
    h!(Exit, "ptap_h_exit", [C], false, exit),
    h!(Pid, "ptap_h_pid", [C], true, pid),
    h!(Tid, "ptap_h_tid", [C], true, tid),
    h!(Ppid, "ptap_h_ppid", [C], true, ppid),
    h!(Uid, "ptap_h_uid", [C], true, uid),
    h!(Cpu, "ptap_h_cpu", [C], true, cpu),
    h!(Target, "ptap_h_target", [C], true, target),
    h!(Nsecs, "ptap_h_nsecs", [C], true, nsecs),
    h!(
        GettimeofdayUs,
        "ptap_h_gettimeofday_us",
        [C],
        true,
        gettimeofday_us
    ),
    h!(Execname, "ptap_h_execname", [C, A, L], false, execname),
    h!(Pp, "ptap_h_pp", [C, A, L], false, pp),
    h!(UserRead, "ptap_h_user_read", [C, L, L], true, user_read),
    h!(
        UserString,
        "ptap_h_user_string",
        [C, A, L, L, L],
        false,
        user_string
    ),
    h!(GStrLoad, "ptap_h_gstr_load", [C, L, A, L], false, gstr_load),
    h!(
        GStrStore,
        "ptap_h_gstr_store",
        [C, L, A, L],
        false,
        gstr_store
    ),
    h!(Sprintf, "ptap_h_sprintf", [A, A, A, L, L], false, sprintf),
    h!(ErrMsg, "ptap_h_errmsg", [C, A, L], false, errmsg),
    h!(Probefunc, "ptap_h_probefunc", [C, A, L], false, probefunc),
    h!(
        SyscallName,
        "ptap_h_syscall_name",
        [C, A, L],
        false,
        syscall_name
    ),
    h!(Usymname, "ptap_h_usymname", [C, L, A, L], false, usymname),
    h!(
        UserWrite,
        "ptap_h_user_write",
        [C, L, L, L],
        false,
        user_write
    ),
    h!(MapGet, "ptap_h_map_get", [C, L, A, A, L], true, map_get),
    h!(MapSet, "ptap_h_map_set", [C, L, A, L], false, map_set),
    h!(MapAdd, "ptap_h_map_add", [C, L, A, L], true, map_add),
    h!(MapIn, "ptap_h_map_in", [C, L, A], true, map_in),
    h!(MapDelete, "ptap_h_map_delete", [C, L, A], false, map_delete),
    h!(MapClear, "ptap_h_map_clear", [C, L], false, map_clear),
    h!(MapAgg, "ptap_h_map_agg", [C, L, A, L], false, map_agg),
    h!(MapStat, "ptap_h_map_stat", [C, L, A, L], true, map_stat),
    h!(
        MapSorted,
        "ptap_h_map_sorted",
        [C, L, A, L, L, L],
        true,
        map_sorted
    ),
    h!(MapKey, "ptap_h_map_key", [C, L, L, L, A, L], true, map_key),
    h!(
        MapValue,
        "ptap_h_map_value",
        [C, L, L, A, L],
        true,
        map_value
    ),
    h!(
        PrintUbacktrace,
        "ptap_h_print_ubacktrace",
        [C],
        false,
        print_ubacktrace
    ),
    h!(
        Ubacktrace,
        "ptap_h_ubacktrace",
        [C, A, L],
        false,
        ubacktrace
    ),
    h!(
        HistPrint,
        "ptap_h_hist_print",
        [C, L, L, L, L, L],
        false,
        hist_print
    ),
    h!(ZeroBytes, "ptap_h_zero_bytes", [C, L, L], false, zero_bytes),
];

impl Helper {
    pub fn def(self) -> &'static HelperDef {
        &HELPERS[self as usize]
    }
}

/// The address of helper `name` (for the probe-module loader).
pub fn lookup(name: &str) -> Option<usize> {
    HELPERS.iter().find(|h| h.name == name).map(|h| (h.addr)())
}

/// Every (name, address), for a JIT's symbol table.
pub fn symbols() -> impl Iterator<Item = (&'static str, usize)> {
    HELPERS.iter().map(|h| (h.name, (h.addr)()))
}

// Capacities arrive as i64 from compiled code; anything odd becomes 0 (no copy).
fn cap_of(cap: i64) -> usize {
    usize::try_from(cap).unwrap_or(0)
}

const BIG: usize = 1 << 20;

/// # Safety
/// `dst` valid for `cap` bytes; `src` a NUL-terminated string.
unsafe extern "C" fn str_copy(dst: *mut u8, src: *const u8, cap: i64) {
    // SAFETY: caller contract.
    unsafe { copy_str(dst, src, cap_of(cap)) }
}

/// `dst = a . b`, truncated to `cap - 1` bytes. `dst` may be `a` or `b`.
///
/// # Safety
/// `dst` valid for `cap` bytes; `a`, `b` NUL-terminated strings of at most `cap - 1` bytes.
unsafe extern "C" fn str_concat(dst: *mut u8, a: *const u8, b: *const u8, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract; copies use ptr::copy (overlap allowed). `b` is
    // moved first when it aliases dst's tail region.
    unsafe {
        let la = c_len(a, cap);
        let lb = c_len(b, cap).min(cap - 1 - la);
        core::ptr::copy(b, dst.add(la), lb);
        core::ptr::copy(a, dst, la);
        *dst.add(la + lb) = 0;
    }
}

/// # Safety
/// NUL-terminated strings.
unsafe extern "C" fn str_cmp(a: *const u8, b: *const u8) -> i64 {
    let mut i = 0;
    loop {
        // SAFETY: caller contract; we stop at the first NUL of either.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y || x == 0 {
            return i64::from(x) - i64::from(y);
        }
        i += 1;
    }
}

/// # Safety
/// NUL-terminated string.
unsafe extern "C" fn str_len(s: *const u8) -> i64 {
    // SAFETY: caller contract.
    unsafe { c_len(s, BIG) as i64 }
}

/// `substr(s, start, len)`: SystemTap semantics (0-based start; out of range gives "").
///
/// # Safety
/// As [`str_copy`].
unsafe extern "C" fn substr(dst: *mut u8, s: *const u8, start: i64, len: i64, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract.
    unsafe {
        let n = c_len(s, BIG);
        let st = usize::try_from(start).unwrap_or(usize::MAX);
        let len = usize::try_from(len).unwrap_or(0);
        let take = if st >= n {
            0
        } else {
            len.min(n - st).min(cap - 1)
        };
        if take > 0 {
            core::ptr::copy(s.add(st), dst, take);
        }
        *dst.add(take) = 0;
    }
}

/// # Safety
/// NUL-terminated strings.
unsafe extern "C" fn isinstr(a: *const u8, b: *const u8) -> i64 {
    // SAFETY: caller contract.
    let (hay, needle) = unsafe {
        (
            core::slice::from_raw_parts(a, c_len(a, BIG)),
            core::slice::from_raw_parts(b, c_len(b, BIG)),
        )
    };
    i64::from(needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle))
}

/// `strtol(s, base)`: like C strtol (leading blanks, sign, `0x` for base 16 or 0).
///
/// # Safety
/// `s` NUL-terminated.
unsafe extern "C" fn strtol(_ctx: *mut ProbeCtx, s: *const u8, base: i64) -> i64 {
    // SAFETY: caller contract.
    let t = unsafe { core::slice::from_raw_parts(s, c_len(s, BIG)) };
    let mut i = 0;
    while i < t.len() && matches!(t[i], b' ' | b'\t' | b'\n') {
        i += 1;
    }
    let neg = i < t.len() && t[i] == b'-';
    if i < t.len() && matches!(t[i], b'-' | b'+') {
        i += 1;
    }
    let mut base = base as u32;
    let hex_prefix = i + 1 < t.len() && t[i] == b'0' && (t[i + 1] | 0x20) == b'x';
    if (base == 16 || base == 0) && hex_prefix {
        i += 2;
        base = 16;
    } else if base == 0 {
        base = if i < t.len() && t[i] == b'0' { 8 } else { 10 };
    }
    if !(2..=36).contains(&base) {
        return 0;
    }
    let mut v: i64 = 0;
    while i < t.len() {
        let Some(d) = (t[i] as char).to_digit(base) else {
            break;
        };
        v = v.wrapping_mul(i64::from(base)).wrapping_add(i64::from(d));
        i += 1;
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

fn session_of(ctx: &ProbeCtx) -> Option<Session> {
    // SAFETY: the caller of the handler put a live session (or NULL) there.
    (!ctx.session.is_null()).then(|| unsafe { Session::from_raw(ctx.session) })
}

/// `printf(fmt, ...)`: `args[i]` is a long, or (bit i of `mask`) a string pointer.
///
/// # Safety
/// `ctx` live; `args` valid for `nargs` i64; string args NUL-terminated.
unsafe extern "C" fn printf(ctx: *mut ProbeCtx, fmt: i64, args: *const i64, nargs: i64, mask: i64) {
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
unsafe extern "C" fn warn(ctx: *mut ProbeCtx, msg: *const u8) {
    // SAFETY: caller contract.
    unsafe {
        let p = msg as i64;
        printf(ctx, i64::from(record::FMT_WARN), &p, 1, 1);
    }
}

/// # Safety
/// `ctx` live; `msg` NUL-terminated.
unsafe extern "C" fn error(ctx: *mut ProbeCtx, msg: *const u8) {
    // SAFETY: caller contract.
    unsafe {
        copy_str((*ctx).errmsg.as_mut_ptr(), msg, ERRMSG_MAX);
        (*ctx).error = ERR_USER;
    }
}

fn globals_of(ctx: &ProbeCtx) -> Option<Globals> {
    // SAFETY: the caller of the handler put the session's globals area (or NULL) there.
    (!ctx.globals.is_null()).then(|| unsafe { Globals::from_raw(ctx.globals) })
}

/// # Safety
/// `ctx` live.
unsafe extern "C" fn exit(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        g.header().exit.store(1, Ordering::Release);
    }
}

extern "C" fn pid(_: *mut ProbeCtx) -> i64 {
    i64::from(sys::getpid())
}

extern "C" fn tid(_: *mut ProbeCtx) -> i64 {
    i64::from(sys::gettid())
}

const SYS_GETUID: usize = 102;
const SYS_GETPPID: usize = 110;
const SYS_PRCTL: usize = 157;
const SYS_CLOCK_GETTIME: usize = 228;
const SYS_GETCPU: usize = 309;
const SYS_PROCESS_VM_READV: usize = 310;
const SYS_PROCESS_VM_WRITEV: usize = 311;
const PR_GET_NAME: usize = 16;

fn raw0(n: usize) -> i64 {
    // SAFETY: syscalls without pointer arguments.
    unsafe { sys::syscall3(n, 0, 0, 0) as i64 }
}

extern "C" fn ppid(_: *mut ProbeCtx) -> i64 {
    raw0(SYS_GETPPID)
}

extern "C" fn uid(_: *mut ProbeCtx) -> i64 {
    raw0(SYS_GETUID)
}

extern "C" fn cpu(_: *mut ProbeCtx) -> i64 {
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
unsafe extern "C" fn target(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    globals_of(unsafe { &*ctx }).map_or(0, |g| {
        i64::from(g.header().target_pid.load(Ordering::Relaxed))
    })
}

fn clock(id: usize) -> (i64, i64) {
    let mut ts = [0i64; 2];
    // SAFETY: ts is a valid timespec.
    unsafe { sys::syscall3(SYS_CLOCK_GETTIME, id, ts.as_mut_ptr() as usize, 0) };
    (ts[0], ts[1])
}

/// Monotonic nanoseconds (for measuring latencies).
extern "C" fn nsecs(_: *mut ProbeCtx) -> i64 {
    let (s, ns) = clock(1); // CLOCK_MONOTONIC
    s.wrapping_mul(1_000_000_000).wrapping_add(ns)
}

extern "C" fn gettimeofday_us(_: *mut ProbeCtx) -> i64 {
    let (s, ns) = clock(0); // CLOCK_REALTIME
    s.wrapping_mul(1_000_000).wrapping_add(ns / 1000)
}

/// The current thread's command name (prctl PR_GET_NAME, 16 bytes).
///
/// # Safety
/// `dst` valid for `cap` bytes.
unsafe extern "C" fn execname(_: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { sys::syscall3(SYS_PRCTL, PR_GET_NAME, name.as_mut_ptr() as usize, 0) };
    // SAFETY: name is NUL-terminated (17th byte); dst per contract.
    unsafe { copy_str(dst, name.as_ptr(), cap_of(cap)) };
}

/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
unsafe extern "C" fn pp(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
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

/// Fault-safe copy of target memory of this process: process_vm_readv on
/// ourselves returns EFAULT (or a short count) for an unmapped address
/// instead of raising SIGSEGV, so no signal handling is needed.
fn read_self(addr: u64, dst: &mut [u8]) -> usize {
    let local = [dst.as_mut_ptr() as usize, dst.len()];
    let remote = [addr as usize, dst.len()];
    // SAFETY: iovecs describe our own buffer and a remote range the kernel checks.
    let r = unsafe {
        sys::syscall6(
            SYS_PROCESS_VM_READV,
            sys::getpid() as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

fn fault(ctx: *mut ProbeCtx, addr: i64) {
    // SAFETY: the handler's live ctx.
    unsafe {
        (*ctx).error = ERR_FAULT;
        (*ctx).error_arg = addr as u64;
    }
}

/// `user_long/int/char(addr)`: `size` 8, 4 or 1 bytes, sign-extended.
///
/// # Safety
/// `ctx` live.
unsafe extern "C" fn user_read(ctx: *mut ProbeCtx, addr: i64, size: i64) -> i64 {
    let mut b = [0u8; 8];
    let n = match size {
        1 | 2 | 4 | 8 => size as usize,
        _ => 8,
    };
    if read_self(addr as u64, &mut b[..n]) != n {
        fault(ctx, addr);
        return 0;
    }
    match n {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => i64::from_le_bytes(b),
    }
}

/// `user_string(addr)` / `user_string_n(addr, n)`: at most `maxlen` bytes
/// (and `cap - 1`), stopping at NUL. A fault before any NUL is an error.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
unsafe extern "C" fn user_string(
    ctx: *mut ProbeCtx,
    dst: *mut u8,
    addr: i64,
    maxlen: i64,
    cap: i64,
) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let limit = usize::try_from(maxlen).unwrap_or(0).min(cap - 1);
    // SAFETY: dst valid for cap bytes (contract).
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    let mut n = 0;
    while n < limit {
        // Read up to the end of the current page: a string may end just before an unmapped page.
        let a = (addr as u64).wrapping_add(n as u64);
        let chunk = ((4096 - (a & 4095)) as usize).min(limit - n);
        let got = read_self(a, &mut out[n..n + chunk]);
        if got == 0 {
            out[n] = 0;
            fault(ctx, a as i64);
            return;
        }
        if let Some(z) = out[n..n + got].iter().position(|&c| c == 0) {
            out[n + z] = 0;
            return;
        }
        n += got;
    }
    out[n] = 0;
}

/// `set_user_long/int/char(addr, v)` (guru mode): write `size` bytes of
/// `v` with process_vm_writev on ourselves, which fails instead of faulting
/// on an unmapped or read-only address (an ERR_FAULT error).
///
/// # Safety
/// `ctx` live. Writing target memory is what guru mode asks for.
unsafe extern "C" fn user_write(ctx: *mut ProbeCtx, addr: i64, size: i64, v: i64) {
    let n = match size {
        1 | 2 | 4 | 8 => size as usize,
        _ => 8,
    };
    let b = v.to_le_bytes();
    let local = [b.as_ptr() as usize, n];
    let remote = [addr as usize, n];
    // SAFETY: iovecs describe our own buffer and a remote range the kernel checks.
    let r = unsafe {
        sys::syscall6(
            SYS_PROCESS_VM_WRITEV,
            sys::getpid() as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    if r != n as isize {
        fault(ctx, addr);
    }
}

/// Load string global at `off` into `dst`.
///
/// # Safety
/// `ctx` live; `off` a string slot of capacity `cap`; `dst` valid for `cap` bytes.
unsafe extern "C" fn gstr_load(ctx: *mut ProbeCtx, off: i64, dst: *mut u8, cap: i64) {
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
unsafe extern "C" fn gstr_store(ctx: *mut ProbeCtx, off: i64, src: *const u8, cap: i64) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        // SAFETY: caller contract.
        unsafe { g.store_str(off as u64, cap_of(cap), src) };
    }
}

/// `sprintf(fmt, ...)` into `dst`: `fmt` is the C-printf text of a checked
/// format; `args[i]` is a long or a string pointer (what `%s` reads).
/// Formats with the runtime's hit-path formatter (`crate::fmt`).
///
/// # Safety
/// `dst` valid for `cap` bytes; `fmt` NUL-terminated; `args` valid for
/// `nargs` entries matching the format.
unsafe extern "C" fn sprintf(dst: *mut u8, fmt: *const u8, args: *const i64, nargs: i64, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract.
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap - 1) };
    let mut buf = crate::fmt::Buf { data: out, len: 0 };
    let n = usize::try_from(nargs).unwrap_or(0);
    // Conversions beyond `nargs` (the checker prevents them) read zeros.
    static NO_MORE: [u64; MAX_ARGS] = [0; MAX_ARGS];
    // SAFETY: args holds nargs values; at most MAX_ARGS more read NO_MORE.
    unsafe {
        let mut rd = crate::fmt::ArgReader::new(args as *const u64, n, NO_MORE.as_ptr());
        crate::fmt::format(&mut buf, fmt, &mut rd);
    }
    let len = buf.len;
    // SAFETY: len <= cap - 1.
    unsafe { *dst.add(len) = 0 };
}

/// The message of the pending error (for `catch (msg)`): the `error()`
/// text, or what the error code means.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
unsafe extern "C" fn errmsg(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract.
    let c = unsafe { &*ctx };
    let text: &[u8] = if c.error == ERR_USER {
        c.errmsg()
    } else {
        error_text(c.error).as_bytes()
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

/// Copy `src` into the string buffer `dst` (`cap` bytes), truncating.
///
/// # Safety
/// `dst` valid for `cap` bytes.
unsafe fn put(dst: *mut u8, cap: i64, src: &[u8]) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let n = src.len().min(cap - 1);
    // SAFETY: caller contract.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst, n);
        *dst.add(n) = 0;
    }
}

/// `probefunc()`: the probed function's name ("" when unknown).
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
unsafe extern "C" fn probefunc(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
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
unsafe extern "C" fn syscall_name(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
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
unsafe extern "C" fn usymname(_: *mut ProbeCtx, addr: i64, dst: *mut u8, cap: i64) {
    let found =
        crate::symbols::current().and_then(|idx| crate::symbols::containing(idx, addr as u64));
    match found {
        // SAFETY: caller contract.
        Some((_, s)) => unsafe { put(dst, cap, s.name.as_bytes()) },
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
unsafe extern "C" fn print_ubacktrace(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    let regs = unsafe { (*ctx).regs };
    if regs.is_null() {
        return;
    }
    // SAFETY: live registers of the probed thread.
    crate::backtrace::dump_regs(crate::threads::current(), unsafe { &*regs }, false);
}

/// `ubacktrace()`: the return addresses of the probed context, hex,
/// separated by spaces (CFI unwinding; stops where the CFI ends or at a
/// kretprobe's return trampoline), truncated to the buffer.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
unsafe extern "C" fn ubacktrace(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
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
        for i in 0..24 {
            match step(idx, &f, i == 0) {
                Ok(n) if n.ip() != tramp && n.ip() != 0 => {
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

/// `print(@hist_...(s))`: the histogram whose `n` buckets start at `off`
/// in the globals area, as one record (its non-empty buckets); ptap draws it.
///
/// # Safety
/// `ctx` live; `off`/`n` describe buckets laid out by the compiler.
unsafe extern "C" fn hist_print(
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
            crate::output::push_dec(&mut b, i);
            b.push(b':');
            crate::output::push_dec(&mut b, v as u64);
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

/// Zero `len` bytes of the globals area at `off` (`delete s` of a
/// statistics global with histograms).
///
/// # Safety
/// `ctx` live; the range lies inside the globals area.
unsafe extern "C" fn zero_bytes(ctx: *mut ProbeCtx, off: i64, len: i64) {
    // SAFETY: caller contract.
    if let Some(g) = globals_of(unsafe { &*ctx }) {
        for i in 0..(len.max(0) as u64 / 8) {
            g.long(off as u64 + 8 * i).store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_enum() {
        for (i, h) in HELPERS.iter().enumerate() {
            assert_eq!(h.helper as usize, i, "{}", h.name);
        }
        assert_eq!(lookup("ptap_h_pid"), Some(pid as *const () as usize));
        assert_eq!(lookup("nope"), None);
    }

    #[test]
    fn strings() {
        let mut d = [0u8; 8];
        // SAFETY: literals are NUL-terminated, d has 8 bytes.
        unsafe {
            str_concat(
                d.as_mut_ptr(),
                c"abcd".as_ptr() as _,
                c"efghij".as_ptr() as _,
                8,
            );
            assert_eq!(&d, b"abcdefg\0");
            assert!(str_cmp(c"abc".as_ptr() as _, c"abd".as_ptr() as _) < 0);
            assert_eq!(str_cmp(c"abc".as_ptr() as _, c"abc".as_ptr() as _), 0);
            substr(d.as_mut_ptr(), c"hello".as_ptr() as _, 1, 3, 8);
            assert_eq!(&d[..4], b"ell\0");
            substr(d.as_mut_ptr(), c"hello".as_ptr() as _, 9, 3, 8);
            assert_eq!(d[0], 0);
            assert_eq!(isinstr(c"hello".as_ptr() as _, c"ll".as_ptr() as _), 1);
            assert_eq!(
                strtol(core::ptr::null_mut(), c" -0x1f".as_ptr() as _, 16),
                -31
            );
            assert_eq!(strtol(core::ptr::null_mut(), c"42z".as_ptr() as _, 10), 42);
        }
    }

    #[test]
    fn sprintf_formats_longs_and_strings() {
        let mut d = [0u8; 16];
        let args = [42i64, c"ab".as_ptr() as i64, 255];
        // SAFETY: NUL-terminated format, 3 args, d has 16 bytes.
        unsafe {
            sprintf(
                d.as_mut_ptr(),
                c"%d:%s:%04x|%5d".as_ptr() as _,
                args.as_ptr(),
                3,
                16,
            )
        };
        let n = d.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&d[..n], b"42:ab:00ff|    ");
    }

    #[test]
    fn fault_safe_writes() {
        let mut ctx = ProbeCtx::new(
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            10,
        );
        let mut v: i64 = 0;
        // SAFETY: ctx live; v is ours.
        unsafe {
            user_write(&mut ctx, &mut v as *mut i64 as i64, 4, -2);
            assert_eq!((v, ctx.error), (0xffff_fffe, 0));
            user_write(&mut ctx, 8, 8, 1);
            assert_eq!(ctx.error, ERR_FAULT);
        }
    }

    #[test]
    fn fault_safe_reads() {
        let mut ctx = ProbeCtx::new(
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            10,
        );
        let v: i64 = -7;
        // SAFETY: ctx is live.
        unsafe {
            assert_eq!(user_read(&mut ctx, &v as *const i64 as i64, 8), -7);
            assert_eq!(ctx.error, 0);
            assert_eq!(user_read(&mut ctx, 8, 8), 0);
            assert_eq!(ctx.error, ERR_FAULT);
            assert_eq!(ctx.error_arg, 8);
            ctx.error = 0;
            let mut d = [0xffu8; 16];
            user_string(
                &mut ctx,
                d.as_mut_ptr(),
                c"hi there".as_ptr() as i64,
                100,
                16,
            );
            assert_eq!(&d[..9], b"hi there\0");
            user_string(&mut ctx, d.as_mut_ptr(), c"hi there".as_ptr() as i64, 2, 16);
            assert_eq!(&d[..3], b"hi\0");
            assert_eq!(ctx.error, 0);
        }
    }
}
