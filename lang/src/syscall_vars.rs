//! SystemTap's syscall tapset variables in `syscall.NAME` probes: `name`,
//! `argstr`, `retstr` and the per-call argument names (`filename`, `flags`,
//! `mode`, `fd`, ...).
//!
//! A probe whose points are all `syscall.*`-spelled gets, for each such name
//! it reads but never assigns, one assignment prepended to its body (what
//! SystemTap's tapset aliases do, minus the assignments nobody reads). The
//! assignments are generated as text and parsed as the file
//! `<syscall tapset>`; their helpers live in stdlib-scripts/stap_syscalls.pt.
use std::collections::HashSet;

use crate::ast::{Expr, ExprKind, Item, ProbeDef, Stmt, StmtKind};
use crate::diag::{self, Diagnostic};
use crate::sources::Sources;
use crate::syscalls;

/// (call, [(variable, expression)], argstr, retstr format for return_str).
type Entry = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    u8,
);

const OPEN_ARGSTR: &str = "(arg2 & 0x40) ? sprintf(\"%s, %s, %#o\", user_string_quoted(arg1), _sys_open_flag_str(arg2), arg3) : sprintf(\"%s, %s\", user_string_quoted(arg1), _sys_open_flag_str(arg2))";
const OPENAT_ARGSTR: &str = "(arg3 & 0x40) ? sprintf(\"%s, %s, %s, %#o\", _dfd_str(_stp_int(arg1)), user_string_quoted(arg2), _sys_open_flag_str(arg3), arg4) : sprintf(\"%s, %s, %s\", _dfd_str(_stp_int(arg1)), user_string_quoted(arg2), _sys_open_flag_str(arg3))";

/// The calls whose variables ptap provides, with SystemTap's names and formats.
const TABLE: &[Entry] = &[
    (
        "open",
        &[
            ("filename", "user_string(arg1)"),
            ("flags", "arg2"),
            ("mode", "arg3"),
        ],
        OPEN_ARGSTR,
        1,
    ),
    (
        "openat",
        &[
            ("dfd", "_stp_int(arg1)"),
            ("dfd_str", "_dfd_str(_stp_int(arg1))"),
            ("filename", "user_string(arg2)"),
            ("flags", "arg3"),
            ("mode", "arg4"),
        ],
        OPENAT_ARGSTR,
        1,
    ),
    (
        "close",
        &[("fd", "_stp_int(arg1)")],
        "sprintf(\"%d\", _stp_int(arg1))",
        1,
    ),
    (
        "read",
        &[
            ("fd", "_stp_int(arg1)"),
            ("buf_uaddr", "arg2"),
            ("count", "arg3"),
        ],
        "sprintf(\"%d, %p, %u\", _stp_int(arg1), arg2, arg3)",
        1,
    ),
    (
        "write",
        &[
            ("fd", "_stp_int(arg1)"),
            ("buf_uaddr", "arg2"),
            ("count", "arg3"),
            ("buf_str", "user_string_n(arg2, arg3)"),
        ],
        "sprintf(\"%d, %s, %u\", _stp_int(arg1), _stp_buffer_quoted(arg2, arg3, 32), arg3)",
        1,
    ),
    (
        "lseek",
        &[
            ("fildes", "_stp_int(arg1)"),
            ("offset", "arg2"),
            ("whence", "arg3"),
            ("whence_str", "_seek_whence_str(arg3)"),
        ],
        "sprintf(\"%d, %d, %s\", _stp_int(arg1), arg2, _seek_whence_str(arg3))",
        1,
    ),
    (
        "unlink",
        &[("pathname", "user_string(arg1)")],
        "user_string_quoted(arg1)",
        1,
    ),
    (
        "rmdir",
        &[("pathname", "user_string(arg1)")],
        "user_string_quoted(arg1)",
        1,
    ),
    (
        "mkdir",
        &[
            ("pathname", "user_string(arg1)"),
            ("pathname_uaddr", "arg1"),
            ("mode", "arg2"),
        ],
        "sprintf(\"%s, %#o\", user_string_quoted(arg1), arg2)",
        1,
    ),
    (
        "chdir",
        &[("path", "user_string(arg1)")],
        "user_string_quoted(arg1)",
        1,
    ),
    (
        "access",
        &[
            ("pathname", "user_string(arg1)"),
            ("mode", "arg2"),
            ("mode_str", "_access_mode_str(arg2)"),
        ],
        "sprintf(\"%s, %s\", user_string_quoted(arg1), _access_mode_str(arg2))",
        1,
    ),
    (
        "rename",
        &[
            ("oldpath", "user_string(arg1)"),
            ("newpath", "user_string(arg2)"),
        ],
        "sprintf(\"%s, %s\", user_string_quoted(arg1), user_string_quoted(arg2))",
        1,
    ),
    (
        "kill",
        &[("pid", "_stp_int(arg1)"), ("sig", "_stp_int(arg2)")],
        "sprintf(\"%d, %s\", _stp_int(arg1), _signal_name(_stp_int(arg2)))",
        1,
    ),
    (
        "exit_group",
        &[("status", "_stp_int(arg1)")],
        "sprintf(\"%d\", _stp_int(arg1))",
        1,
    ),
    (
        "dup",
        &[("oldfd", "_stp_int(arg1)")],
        "sprintf(\"%d\", _stp_int(arg1))",
        1,
    ),
    (
        "dup2",
        &[("oldfd", "_stp_int(arg1)"), ("newfd", "_stp_int(arg2)")],
        "sprintf(\"%d, %d\", _stp_int(arg1), _stp_int(arg2))",
        1,
    ),
    ("getpid", &[], "\"\"", 1),
    ("gettid", &[], "\"\"", 1),
    ("getppid", &[], "\"\"", 1),
    ("brk", &[("brk", "arg1")], "sprintf(\"%p\", arg1)", 2),
    (
        "munmap",
        &[("start", "arg1"), ("length", "arg2")],
        "sprintf(\"%p, %u\", arg1, arg2)",
        1,
    ),
];

/// Every per-call variable name of the table (a read of one that the call
/// does not provide is an error, never an empty local).
pub(crate) fn all_arg_names() -> HashSet<&'static str> {
    TABLE
        .iter()
        .flat_map(|(_, vars, _, _)| vars.iter().map(|(v, _)| *v))
        .collect()
}

/// The calls of a `syscall.*`-spelled probe and whether it is a return
/// probe; `None` when some point is not such a point.
fn calls_of(p: &ProbeDef) -> Option<(Vec<&'static str>, bool, bool)> {
    let mut calls = Vec::new();
    let mut entry = false;
    let mut ret = false;
    let mut every = false;
    for pt in &p.points {
        let c = &pt.components;
        if c[0].name.name != "syscall" || c.len() < 2 || c.len() > 3 {
            return None;
        }
        if c.len() == 3 {
            ret = true;
        } else {
            entry = true;
        }
        if c[1].name.name.contains(['*', '?']) {
            every = true;
            let pat = c[1].name.name.as_bytes();
            calls.extend(
                syscalls::SYSCALLS
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| crate::preprocess::glob(pat, n.as_bytes())),
            );
        } else {
            let n = syscalls::SYSCALLS
                .iter()
                .find(|(n, _)| *n == c[1].name.name)?
                .0;
            calls.push(n);
        }
    }
    calls.sort_unstable();
    calls.dedup();
    if entry && ret {
        // Mixed entry and return points: only `name` makes sense.
        return Some((calls, false, every));
    }
    Some((calls, ret, every))
}

fn names_in_expr(e: &Expr, read: &mut HashSet<String>, set: &mut HashSet<String>) {
    match &e.kind {
        ExprKind::Name(id) => {
            read.insert(id.name.clone());
        }
        ExprKind::Num(_)
        | ExprKind::Wildcard
        | ExprKind::Str(_)
        | ExprKind::TargetVar(_)
        | ExprKind::ScriptArg { .. } => {}
        ExprKind::Index { keys, .. } | ExprKind::In { keys, .. } => {
            keys.iter().for_each(|k| names_in_expr(k, read, set))
        }
        ExprKind::Call { args, .. } | ExprKind::AtCall { args, .. } => {
            args.iter().for_each(|k| names_in_expr(k, read, set))
        }
        ExprKind::Unary { operand, .. } => names_in_expr(operand, read, set),
        ExprKind::Binary { lhs, rhs, .. } => {
            names_in_expr(lhs, read, set);
            names_in_expr(rhs, read, set);
        }
        ExprKind::Ternary { cond, then, els } => {
            for x in [cond, then, els] {
                names_in_expr(x, read, set);
            }
        }
        ExprKind::Assign { target, value, .. } => {
            if let ExprKind::Name(id) = &target.kind {
                set.insert(id.name.clone());
            }
            names_in_expr(target, read, set);
            names_in_expr(value, read, set);
        }
        ExprKind::IncDec { target, .. } => {
            if let ExprKind::Name(id) = &target.kind {
                set.insert(id.name.clone());
            }
            names_in_expr(target, read, set);
        }
    }
}

pub(crate) fn names_in_stmt(s: &Stmt, read: &mut HashSet<String>, set: &mut HashSet<String>) {
    let mut e = |x: &Expr| names_in_expr(x, read, set);
    match &s.kind {
        StmtKind::Expr(x) | StmtKind::Delete(x) => e(x),
        StmtKind::Block(b) => b.stmts.iter().for_each(|s| names_in_stmt(s, read, set)),
        StmtKind::If { cond, then, els } => {
            e(cond);
            names_in_stmt(then, read, set);
            if let Some(x) = els {
                names_in_stmt(x, read, set);
            }
        }
        StmtKind::While { cond, body } => {
            e(cond);
            names_in_stmt(body, read, set);
        }
        StmtKind::For {
            init,
            cond,
            step,
            body,
        } => {
            for x in [init, cond, step].into_iter().flatten() {
                names_in_expr(x, read, set);
            }
            names_in_stmt(body, read, set);
        }
        StmtKind::Foreach(f) => {
            for v in f.value.iter().chain(&f.keys) {
                set.insert(v.name.name.clone());
            }
            for l in f.limit.iter().chain(f.slice.iter().flatten()) {
                names_in_expr(l, read, set);
            }
            names_in_stmt(&f.body, read, set);
        }
        StmtKind::Return(x) => {
            if let Some(x) = x {
                names_in_expr(x, read, set);
            }
        }
        StmtKind::Try { body, catch, var } => {
            if let Some(v) = var {
                set.insert(v.name.clone());
            }
            body.stmts.iter().for_each(|s| names_in_stmt(s, read, set));
            catch.stmts.iter().for_each(|s| names_in_stmt(s, read, set));
        }
        StmtKind::Aggregate { target, value } => {
            names_in_expr(target, read, set);
            names_in_expr(value, read, set);
        }
        StmtKind::Break | StmtKind::Continue | StmtKind::Next => {}
    }
}

/// One variable's expression over the probe's calls: a chain on
/// `syscall_name()` when the calls differ. Err: the first call lacking it.
fn per_call(
    calls: &[&'static str],
    every: bool,
    pick: impl Fn(&Entry) -> Option<String>,
    fallback: Option<&str>,
) -> Result<String, &'static str> {
    let mut arms: Vec<(&str, String)> = Vec::new();
    for &c in calls {
        match TABLE.iter().find(|e| e.0 == c).and_then(&pick) {
            Some(x) => arms.push((c, x)),
            None if every && fallback.is_some() => {}
            None => return Err(c),
        }
    }
    let last = match (every, fallback) {
        (true, Some(f)) => f.to_string(),
        _ => match arms.pop() {
            Some((_, x)) => x,
            None => return Err(calls.first().copied().unwrap_or("?")),
        },
    };
    let mut out = String::new();
    for (c, x) in &arms {
        out.push_str(&format!("syscall_name() == \"{c}\" ? ({x}) : "));
    }
    out.push_str(&format!("({last})"));
    Ok(out)
}

/// Adds the tapset assignments to every `syscall.*` probe that reads them.
pub fn add(items: &mut [Item], sources: &mut Sources) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let arg_names = all_arg_names();
    for item in items.iter_mut() {
        let Item::Probe(p) = item else { continue };
        if p.alias.is_some() {
            continue;
        }
        let Some((calls, ret, every)) = calls_of(p) else {
            continue;
        };
        let mut read = HashSet::new();
        let mut set = HashSet::new();
        for s in &p.body.stmts {
            names_in_stmt(s, &mut read, &mut set);
        }
        let wanted: Vec<String> = read.difference(&set).cloned().collect();
        let mut lines = Vec::new();
        let mut sorted = wanted.clone();
        sorted.sort();
        for v in &sorted {
            let expr = match v.as_str() {
                "name" => Ok("syscall_name()".to_string()),
                "retstr" if ret => per_call(
                    &calls,
                    every,
                    |e| Some(format!("return_str({}, ret)", e.3)),
                    Some("return_str(1, ret)"),
                ),
                "argstr" if !ret => per_call(
                    &calls,
                    every,
                    |e| Some(e.2.to_string()),
                    Some("sprintf(\"%#x, %#x, %#x, %#x, %#x, %#x\", arg1, arg2, arg3, arg4, arg5, arg6)"),
                ),
                a if !ret && arg_names.contains(a) => {
                    // In a wildcard probe (`syscall.open*`) a call without
                    // this argument reads it as "" or 0, as SystemTap's
                    // expansion for that call does (with its warning).
                    let string = TABLE.iter().flat_map(|e| e.1.iter()).any(|(n, x)| {
                        *n == a && (x.contains("user_string") || x.contains("_str("))
                    });
                    let zero = if string { "\"\"" } else { "0" };
                    per_call(
                        &calls,
                        every,
                        |e| e.1.iter().find(|(n, _)| *n == a).map(|(_, x)| x.to_string()),
                        every.then_some(zero),
                    )
                }
                "retstr" | "argstr" => {
                    let want = if ret {
                        "syscall.NAME"
                    } else {
                        "syscall.NAME.return"
                    };
                    errors.push(tapset_error(p, v, &format!("`{v}` is only set in `{want}` probes")));
                    continue;
                }
                a if ret && arg_names.contains(a) => {
                    errors.push(tapset_error(
                        p,
                        v,
                        &format!("`{a}` is an argument: it is set in `syscall.NAME` probes, not in `.return` ones; read it from the raw argument at the entry, as in `user_string(@entry(arg2))`, or save it in the entry probe"),
                    ));
                    continue;
                }
                _ => continue,
            };
            match expr {
                Ok(x) => lines.push(format!("  {v} = {x}\n")),
                Err(call) => errors.push(tapset_error(
                    p,
                    v,
                    &format!("ptap's syscall tapset does not provide `{v}` for syscall.{call} (it covers {})", covered()),
                )),
            }
        }
        if lines.is_empty() {
            continue;
        }
        let text = format!("probe begin {{\n{}}}\n", lines.concat());
        let fid = sources.add("<syscall tapset>", &text);
        match crate::parser::parse_file(&text, fid) {
            Ok(script) => {
                if let Some(Item::Probe(gen)) = script.items.into_iter().next() {
                    let mut stmts = gen.body.stmts;
                    stmts.append(&mut p.body.stmts);
                    p.body.stmts = stmts;
                }
            }
            Err(e) => errors.push(diag::error(format!(
                "internal error: the syscall tapset text does not parse: {e:?}"
            ))),
        }
    }
    errors
}

fn covered() -> String {
    TABLE.iter().map(|e| e.0).collect::<Vec<_>>().join(", ")
}

fn tapset_error(p: &ProbeDef, var: &str, msg: &str) -> Diagnostic {
    // Point at the first read of the variable in the body when we can.
    let span = first_read(p, var).unwrap_or(p.span);
    diag::error(msg.to_string())
        .with_labels(vec![diag::primary(span, format!("`{var}` read here"))])
}

fn first_read(p: &ProbeDef, var: &str) -> Option<crate::span::Span> {
    fn in_expr(e: &Expr, var: &str) -> Option<crate::span::Span> {
        match &e.kind {
            ExprKind::Name(id) if id.name == var => Some(id.span),
            ExprKind::Index { keys, .. } | ExprKind::In { keys, .. } => {
                keys.iter().find_map(|k| in_expr(k, var))
            }
            ExprKind::Call { args, .. } | ExprKind::AtCall { args, .. } => {
                args.iter().find_map(|k| in_expr(k, var))
            }
            ExprKind::Unary { operand, .. } => in_expr(operand, var),
            ExprKind::Binary { lhs, rhs, .. } => in_expr(lhs, var).or_else(|| in_expr(rhs, var)),
            ExprKind::Ternary { cond, then, els } => in_expr(cond, var)
                .or_else(|| in_expr(then, var))
                .or_else(|| in_expr(els, var)),
            ExprKind::Assign { value, .. } => in_expr(value, var),
            _ => None,
        }
    }
    fn in_stmt(s: &Stmt, var: &str) -> Option<crate::span::Span> {
        match &s.kind {
            StmtKind::Expr(x) | StmtKind::Delete(x) => in_expr(x, var),
            StmtKind::Block(b) => b.stmts.iter().find_map(|s| in_stmt(s, var)),
            StmtKind::If { cond, then, els } => in_expr(cond, var)
                .or_else(|| in_stmt(then, var))
                .or_else(|| els.as_ref().and_then(|s| in_stmt(s, var))),
            StmtKind::While { cond, body } => in_expr(cond, var).or_else(|| in_stmt(body, var)),
            StmtKind::Return(Some(x)) => in_expr(x, var),
            _ => None,
        }
    }
    p.body.stmts.iter().find_map(|s| in_stmt(s, var))
}
