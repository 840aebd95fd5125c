//! The table of helpers called by compiled handlers (symbols `ptap_h_*`,
//! distinct from the C-ABI exports of `ptap/runtime.h`): ONE table
//! ([`HELPERS`]) gives each helper's symbol name, its signature and its
//! address. The compiler
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
//! Implementations: `h_str.rs` (strings, sprintf), `h_out.rs` (output,
//! errors, string globals, histograms), `h_ctx.rs` (context), `h_mem.rs`
//! (fault-safe target memory), `h_stack.rs` (backtraces), `h_stats.rs`
//! (variance), `map_helpers.rs` (arrays); what they share to take their
//! arguments is in `h_args.rs`.
//!
//! Arrays: `ptap_h_map_*`, `(ctx, off, keys, ...)`
//! with `off` the array's offset in the globals area and `keys` one i64 per
//! key (a long, or a string pointer).

use super::h_ctx::*;
use super::h_mem::*;
use super::h_out::*;
use super::h_stack::*;
use super::h_stats::*;
use super::h_str::*;
use super::map_helpers::*;

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
    /// The main executable's load bias (`@var` addresses are link-time).
    ExeBias,
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
    Regex,
    Matched,
    MapHistPrint,
    UserStringQuoted,
    Abort,
    Cycles,
    Ids,
    ProcText,
    StatVariance,
    MapVariance,
    UserHex,
    SprintUbacktrace,
    SprintUstack,
    PrintUstack,
    Ucallers,
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
    h!(ExeBias, "ptap_h_exe_bias", [C], true, exe_bias),
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
    h!(MapAgg, "ptap_h_map_agg", [C, L, A, L], true, map_agg),
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
    h!(Regex, "ptap_h_regex", [C, A, A, L], true, regex_match),
    h!(Matched, "ptap_h_matched", [C, A, L, L], false, matched),
    h!(
        MapHistPrint,
        "ptap_h_map_hist_print",
        [C, L, A, L, L, L, L, L],
        false,
        map_hist_print
    ),
    h!(
        UserStringQuoted,
        "ptap_h_user_string_quoted",
        [C, A, L, L],
        false,
        user_string_quoted
    ),
    h!(Abort, "ptap_h_abort", [C], false, abort),
    h!(Cycles, "ptap_h_cycles", [C], true, cycles),
    h!(Ids, "ptap_h_ids", [C, L], true, ids),
    h!(
        ProcText,
        "ptap_h_proc_text",
        [C, L, L, A, L],
        false,
        proc_text
    ),
    h!(
        StatVariance,
        "ptap_h_stat_variance",
        [C, L, L],
        true,
        stat_variance
    ),
    h!(
        MapVariance,
        "ptap_h_map_variance",
        [C, L, A, L],
        true,
        map_variance
    ),
    h!(UserHex, "ptap_h_user_hex", [C, A, L, L, L], false, user_hex),
    h!(
        SprintUbacktrace,
        "ptap_h_sprint_ubacktrace",
        [C, A, L],
        false,
        sprint_ubacktrace
    ),
    h!(
        SprintUstack,
        "ptap_h_sprint_ustack",
        [C, A, A, L],
        false,
        sprint_ustack
    ),
    h!(
        PrintUstack,
        "ptap_h_print_ustack",
        [C, A],
        false,
        print_ustack
    ),
    h!(Ucallers, "ptap_h_ucallers", [C, L, A, L], false, ucallers),
];

impl Helper {
    pub fn def(self) -> &'static HelperDef {
        &HELPERS[self as usize]
    }
}

/// The helpers that read the runtime's symbol index on the hit path (names
/// of addresses, backtraces: they need the index of every loaded object,
/// and the hit path cannot build it). A module that calls one of them has
/// the index built when it is attached; other modules' `lib:name` points
/// are resolved without it (see `crate::proc::symbols::quick_lookup`).
const READS_SYMBOLS: [Helper; 7] = [
    Helper::Usymname,
    Helper::PrintUbacktrace,
    Helper::Ubacktrace,
    Helper::SprintUbacktrace,
    Helper::SprintUstack,
    Helper::PrintUstack,
    Helper::Ucallers,
];

/// Does helper `name` read the symbol index (see [`READS_SYMBOLS`])?
pub fn reads_symbols(name: &str) -> bool {
    READS_SYMBOLS.iter().any(|h| h.def().name == name)
}

/// The address of helper `name` (for the probe-module loader).
pub fn lookup(name: &str) -> Option<usize> {
    HELPERS.iter().find(|h| h.name == name).map(|h| (h.addr)())
}

/// Every (name, address), for a JIT's symbol table.
pub fn symbols() -> impl Iterator<Item = (&'static str, usize)> {
    HELPERS.iter().map(|h| (h.name, (h.addr)()))
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
}
