//! The builtin function table: names, argument and return types, and where
//! each may be used. `printf`/`sprintf` (format-checked) and the `@` aggregate
//! extractors are handled by the checker itself.
use crate::checked::{ScalarType, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Pid,
    Tid,
    Ppid,
    Uid,
    Execname,
    Cpu,
    Target,
    /// `@cast(ptr, "type"[, "module"])->a->b`: args `ptr`, then the type,
    /// the module ("" for the executable) and the members as strings.
    Cast,
    /// `$arr[i]`: args: the index, then the path as a string, with `[?]`
    /// where the index goes.
    TargetIndex,
    /// `@defined(e)`: 1 when every target variable in `e` resolves in the
    /// probe (decided when compiling; `@defined(...) ? a : b` and
    /// `if (@defined(...))` compile only the branch taken).
    Defined,
    /// `tz_gmtoff()`: the local time zone's offset, seconds west of UTC
    /// (SystemTap's sign), as it is when the script is compiled.
    TzGmtoff,
    /// `tz_name()`: the local time zone's abbreviation (`"CET"`), likewise.
    TzName,
    Probefunc,
    Pp,
    Nsecs,
    GettimeofdayUs,
    Register,
    UserString,
    UserStringN,
    UserLong,
    UserInt,
    UserChar,
    Ubacktrace,
    PrintUbacktrace,
    /// `sprint_ubacktrace()`: SystemTap's simple symbolic lines.
    SprintUbacktrace,
    /// `sprint_ustack(stk)`: the addresses of a `ubacktrace()` string, likewise.
    SprintUstack,
    /// `print_ustack(stk)`: SystemTap's full lines of them, printed.
    PrintUstack,
    /// `ucallers(n)`: the first n addresses of `ubacktrace()`.
    Ucallers,
    Usymname,
    SyscallName,
    Exit,
    Error,
    Warn,
    Strlen,
    Substr,
    Isinstr,
    Strtol,
    /// `matched(n)`: subexpression `n` of this hit's last successful `=~`.
    Matched,
    Sprint,
    /// `print` and `println`: values separated by one space, then a newline.
    Print,
    SetRegister,
    SetUserLong,
    SetUserInt,
    SetUserChar,
    /// `abort()`: end the session without the end probes.
    Abort,
    /// `get_cycles()`: the time-stamp counter.
    GetCycles,
    Gid,
    Euid,
    Egid,
    CmdlineStr,
    CmdlineArg,
    Pexecname,
}

/// Where a builtin may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Anywhere,
    /// In a probe that runs inside the target (not begin/end/timer).
    Target,
    /// In a system-call probe.
    Syscall,
    /// Writes registers or target memory: guru mode and a target probe.
    GuruTarget,
}

/// Argument shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    Fixed(&'static [ScalarType]),
    /// Any number of long/string values (and histograms, for print).
    Values,
}

#[derive(Debug, Clone, Copy)]
pub struct BuiltinInfo {
    pub name: &'static str,
    pub builtin: Builtin,
    pub params: Params,
    pub ret: Type,
    pub needs: Needs,
}

use ScalarType::{Long as L, String as S};

const fn b(
    name: &'static str,
    builtin: Builtin,
    params: Params,
    ret: Type,
    needs: Needs,
) -> BuiltinInfo {
    BuiltinInfo {
        name,
        builtin,
        params,
        ret,
        needs,
    }
}

const NONE: Params = Params::Fixed(&[]);

/// Every builtin, by name.
pub const BUILTINS: &[BuiltinInfo] = &[
    b("pid", Builtin::Pid, NONE, Type::Long, Needs::Anywhere),
    b("tid", Builtin::Tid, NONE, Type::Long, Needs::Anywhere),
    b("ppid", Builtin::Ppid, NONE, Type::Long, Needs::Anywhere),
    b("uid", Builtin::Uid, NONE, Type::Long, Needs::Anywhere),
    b("gid", Builtin::Gid, NONE, Type::Long, Needs::Anywhere),
    b("euid", Builtin::Euid, NONE, Type::Long, Needs::Anywhere),
    b("egid", Builtin::Egid, NONE, Type::Long, Needs::Anywhere),
    b(
        "cmdline_str",
        Builtin::CmdlineStr,
        NONE,
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "cmdline_arg",
        Builtin::CmdlineArg,
        Params::Fixed(&[L]),
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "pexecname",
        Builtin::Pexecname,
        NONE,
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "execname",
        Builtin::Execname,
        NONE,
        Type::String,
        Needs::Anywhere,
    ),
    b("cpu", Builtin::Cpu, NONE, Type::Long, Needs::Anywhere),
    b("target", Builtin::Target, NONE, Type::Long, Needs::Anywhere),
    b(
        "probefunc",
        Builtin::Probefunc,
        NONE,
        Type::String,
        Needs::Target,
    ),
    b("pp", Builtin::Pp, NONE, Type::String, Needs::Anywhere),
    b("nsecs", Builtin::Nsecs, NONE, Type::Long, Needs::Anywhere),
    b(
        "gettimeofday_us",
        Builtin::GettimeofdayUs,
        NONE,
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "register",
        Builtin::Register,
        Params::Fixed(&[S]),
        Type::Long,
        Needs::Target,
    ),
    b(
        "user_string",
        Builtin::UserString,
        Params::Fixed(&[L]),
        Type::String,
        Needs::Target,
    ),
    b(
        "user_string_n",
        Builtin::UserStringN,
        Params::Fixed(&[L, L]),
        Type::String,
        Needs::Target,
    ),
    b(
        "user_long",
        Builtin::UserLong,
        Params::Fixed(&[L]),
        Type::Long,
        Needs::Target,
    ),
    b(
        "user_int",
        Builtin::UserInt,
        Params::Fixed(&[L]),
        Type::Long,
        Needs::Target,
    ),
    b(
        "user_char",
        Builtin::UserChar,
        Params::Fixed(&[L]),
        Type::Long,
        Needs::Target,
    ),
    b(
        "ubacktrace",
        Builtin::Ubacktrace,
        NONE,
        Type::String,
        Needs::Target,
    ),
    b(
        "print_ubacktrace",
        Builtin::PrintUbacktrace,
        NONE,
        Type::Void,
        Needs::Target,
    ),
    b(
        "sprint_ubacktrace",
        Builtin::SprintUbacktrace,
        NONE,
        Type::String,
        Needs::Target,
    ),
    b(
        "ucallers",
        Builtin::Ucallers,
        Params::Fixed(&[L]),
        Type::String,
        Needs::Target,
    ),
    b(
        "sprint_ustack",
        Builtin::SprintUstack,
        Params::Fixed(&[S]),
        Type::String,
        Needs::Target,
    ),
    b(
        "print_ustack",
        Builtin::PrintUstack,
        Params::Fixed(&[S]),
        Type::Void,
        Needs::Target,
    ),
    b(
        "usymname",
        Builtin::Usymname,
        Params::Fixed(&[L]),
        Type::String,
        Needs::Target,
    ),
    b(
        "syscall_name",
        Builtin::SyscallName,
        NONE,
        Type::String,
        Needs::Syscall,
    ),
    b("exit", Builtin::Exit, NONE, Type::Void, Needs::Anywhere),
    b(
        "tz_gmtoff",
        Builtin::TzGmtoff,
        NONE,
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "tz_name",
        Builtin::TzName,
        NONE,
        Type::String,
        Needs::Anywhere,
    ),
    b("abort", Builtin::Abort, NONE, Type::Void, Needs::Anywhere),
    b(
        "get_cycles",
        Builtin::GetCycles,
        NONE,
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "error",
        Builtin::Error,
        Params::Fixed(&[S]),
        Type::Void,
        Needs::Anywhere,
    ),
    b(
        "warn",
        Builtin::Warn,
        Params::Fixed(&[S]),
        Type::Void,
        Needs::Anywhere,
    ),
    b(
        "strlen",
        Builtin::Strlen,
        Params::Fixed(&[S]),
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "substr",
        Builtin::Substr,
        Params::Fixed(&[S, L, L]),
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "isinstr",
        Builtin::Isinstr,
        Params::Fixed(&[S, S]),
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "strtol",
        Builtin::Strtol,
        Params::Fixed(&[S, L]),
        Type::Long,
        Needs::Anywhere,
    ),
    b(
        "matched",
        Builtin::Matched,
        Params::Fixed(&[L]),
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "sprint",
        Builtin::Sprint,
        Params::Values,
        Type::String,
        Needs::Anywhere,
    ),
    b(
        "print",
        Builtin::Print,
        Params::Values,
        Type::Void,
        Needs::Anywhere,
    ),
    b(
        "println",
        Builtin::Print,
        Params::Values,
        Type::Void,
        Needs::Anywhere,
    ),
    b(
        "set_register",
        Builtin::SetRegister,
        Params::Fixed(&[S, L]),
        Type::Void,
        Needs::GuruTarget,
    ),
    b(
        "set_user_long",
        Builtin::SetUserLong,
        Params::Fixed(&[L, L]),
        Type::Void,
        Needs::GuruTarget,
    ),
    b(
        "set_user_int",
        Builtin::SetUserInt,
        Params::Fixed(&[L, L]),
        Type::Void,
        Needs::GuruTarget,
    ),
    b(
        "set_user_char",
        Builtin::SetUserChar,
        Params::Fixed(&[L, L]),
        Type::Void,
        Needs::GuruTarget,
    ),
];

/// Names the checker handles itself (format-checked).
pub const FORMAT_FUNCTIONS: &[&str] = &["printf", "sprintf"];

/// `@` extractors and `@entry`.
pub const AT_FUNCTIONS: &[&str] = &[
    "entry",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "variance",
    "hist_log",
    "hist_linear",
    "defined",
];

pub fn lookup(name: &str) -> Option<&'static BuiltinInfo> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The name a builtin is written with (`println` prints as `print`).
pub fn name(builtin: Builtin) -> &'static str {
    BUILTINS
        .iter()
        .find(|b| b.builtin == builtin)
        .map_or("?", |b| b.name)
}

/// Registers `register("NAME")` accepts (pt_regs and x86-64 names).
pub const REGISTERS: &[&str] = &[
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "eflags", "ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "ip", "flags",
    "orig_ax", "orig_rax", "cs", "ss", "fs_base", "gs_base",
];
