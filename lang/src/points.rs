//! Probe points: checks a parsed [`PointSpec`] and resolves its target.
//!
//! A target (the text inside `kprobe(...)`) is a tiny language of its own,
//! parsed here by hand because its tokens (`libc.so.6`, `str*`, quoted
//! paths) do not match the script's tokens:
//!
//! ```text
//! T      := [MODULE ":"] SYM ["+" OFFSET] | [MODULE ":"] PATTERN | ADDRESS
//! MODULE := name (libc, libc.so.6, libstdc++.so.6) | "quoted/path"
//! ```
//! `sys_NAME` (no module, no offset) is a system call or a syscall alias.
use crate::ast::PointSpec;
use crate::checked::{ArgAbi, Module, PointKind, ProbePoint, Target, TimerUnit};
use crate::diag::{self, Diagnostic, ToDiagnostic};
use crate::span::Span;
use crate::{stdlib, syscalls};

/// Errors in probe points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointError {
    UnknownPoint {
        name: String,
        span: Span,
        suggestion: Option<&'static str>,
    },
    Malformed {
        point: String,
        span: Span,
        expected: &'static str,
    },
    BadTarget {
        text: String,
        span: Span,
        why: String,
    },
    UnknownSyscall {
        name: String,
        span: Span,
        suggestion: Option<String>,
    },
    NotAFunctionEntry {
        kind: &'static str,
        span: Span,
    },
    /// A point ptap does not offer (kernel points, ...), with what to use.
    Refused {
        span: Span,
        msg: String,
        help: String,
    },
}

const POINT_NAMES: &[&str] = &["begin", "end", "timer", "kprobe", "jprobe", "kretprobe"];

impl ToDiagnostic for PointError {
    fn to_diagnostic(&self) -> Diagnostic {
        match self {
            PointError::UnknownPoint {
                name,
                span,
                suggestion,
            } => {
                let d = diag::error(format!("unknown probe point `{name}`"))
                    .with_labels(vec![diag::primary(*span, "not a probe point")]);
                match suggestion {
                    Some(s) => d.with_notes(vec![format!("help: did you mean `{s}`?")]),
                    None => d.with_notes(vec![format!(
                        "help: probe points are {}",
                        POINT_NAMES.join(", ")
                    )]),
                }
            }
            PointError::Malformed {
                point,
                span,
                expected,
            } => diag::error(format!("malformed probe point `{point}`"))
                .with_labels(vec![diag::primary(*span, format!("expected {expected}"))]),
            PointError::BadTarget { text, span, why } => {
                diag::error(format!("bad probe target `{text}`"))
                    .with_labels(vec![diag::primary(*span, why.clone())])
                    .with_notes(vec![
                "help: a target is sym, sym+off, 0xADDR, lib:sym, \"path\":sym or lib:pattern*"
                    .to_string(),
            ])
            }
            PointError::UnknownSyscall {
                name,
                span,
                suggestion,
            } => {
                let d = diag::error(format!("unknown system call `{name}`")).with_labels(vec![
                    diag::primary(*span, "no x86-64 system call or alias has this name"),
                ]);
                match suggestion {
                    Some(s) => d.with_notes(vec![format!("help: did you mean `{s}`?")]),
                    None => d,
                }
            }
            PointError::Refused { span, msg, help } => diag::error(msg.clone())
                .with_labels(vec![diag::primary(*span, "not supported")])
                .with_notes(vec![help.clone()]),
            PointError::NotAFunctionEntry { kind, span } => diag::error(format!(
                "`{kind}` needs a function entry, not an offset inside a function"
            ))
            .with_labels(vec![diag::primary(*span, "this target has an offset")])
            .with_notes(vec![format!(
                "help: use `kprobe` to probe an instruction inside a function"
            )]),
        }
    }
}

/// What a probe point offers the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Runs inside the target process.
    pub in_target: bool,
    /// `arg1..6` and their convention.
    pub args: Option<ArgAbi>,
    /// `ret` and `@entry`.
    pub ret: bool,
    /// A system-call probe.
    pub syscall: bool,
}

impl Caps {
    pub fn of(kind: &PointKind) -> Caps {
        let none = Caps {
            in_target: false,
            args: None,
            ret: false,
            syscall: false,
        };
        let target_caps = |t: &Target, entry: bool| {
            let args = match t {
                Target::Syscall { .. } => Some(ArgAbi::Syscall),
                Target::Symbol { offset: 0, .. } | Target::Pattern { .. } => Some(ArgAbi::SysV),
                Target::Symbol { .. } => None,
                Target::Address(_) => entry.then_some(ArgAbi::SysV),
                Target::Line { line: None, .. } => Some(ArgAbi::SysV),
                Target::Line { .. } => None,
            };
            (args, matches!(t, Target::Syscall { .. }))
        };
        match kind {
            PointKind::Begin | PointKind::End | PointKind::Timer { .. } => none,
            PointKind::ProcessBegin { .. } | PointKind::ProcessEnd { .. } => Caps {
                in_target: true,
                ..none
            },
            PointKind::Kprobe { target } => {
                let (args, syscall) = target_caps(target, false);
                Caps {
                    in_target: true,
                    args,
                    ret: false,
                    syscall,
                }
            }
            PointKind::Jprobe { target } => {
                let (args, syscall) = target_caps(target, true);
                Caps {
                    in_target: true,
                    args,
                    ret: false,
                    syscall,
                }
            }
            PointKind::Kretprobe { target, .. } => {
                let (_, syscall) = target_caps(target, true);
                Caps {
                    in_target: true,
                    args: None,
                    ret: true,
                    syscall,
                }
            }
        }
    }
}

/// Checks one point as written.
pub fn resolve(spec: &PointSpec, text: &str) -> Result<ProbePoint, PointError> {
    let c = &spec.components;
    let first = &c[0];
    let malformed = |expected| PointError::Malformed {
        point: text.to_string(),
        span: spec.span,
        expected,
    };
    let kind = match first.name.name.as_str() {
        "begin" | "end" => {
            if c.len() != 1 || crate::points_stap::priority(spec).is_none() {
                return Err(malformed("`begin`, `end`, `begin(N)` or `end(N)`"));
            }
            if first.name.name == "begin" {
                PointKind::Begin
            } else {
                PointKind::End
            }
        }
        "timer" => {
            const TIMERS: &str =
                "`timer.s(N)`, `timer.ms(N)`, `timer.us(N)`, `timer.ns(N)` (or SystemTap's `sec`, `msec`, `usec`, `nsec`) or `timer.hz(N)`";
            if let Some(x) = c.get(2) {
                return Err(PointError::Refused {
                    span: x.name.span,
                    msg: format!("`.{}` after a timer is not supported", x.name.name),
                    help: format!("help: a timer is {TIMERS}, with a fixed period"),
                });
            }
            if c.len() != 2 || first.arg.is_some() {
                return Err(malformed(TIMERS));
            }
            let unit = match c[1].name.name.as_str() {
                "s" | "sec" => TimerUnit::S,
                "ms" | "msec" => TimerUnit::Ms,
                "us" | "usec" => TimerUnit::Us,
                "ns" | "nsec" => TimerUnit::Ns,
                "hz" => TimerUnit::Hz,
                "jiffies" => {
                    return Err(PointError::Refused {
                        span: c[1].name.span,
                        msg: "`timer.jiffies(N)` counts the kernel's ticks, whose length (CONFIG_HZ) a user-space tool does not know".to_string(),
                        help: "help: give the period in time units: `timer.ms(N)`".to_string(),
                    })
                }
                _ => return Err(malformed(TIMERS)),
            };
            let n = count_arg(
                &c[1].arg,
                spec.span,
                text,
                "a period N >= 1, as in `timer.ms(100)`",
            )?;
            PointKind::Timer { unit, n }
        }
        "kprobe" if first.arg.is_none() && c.len() > 1 => {
            return Err(PointError::Refused {
                span: first.name.span,
                msg: "`kprobe.function(...)` / `kprobe.statement(...)` are kernel probes; ptap probes user-space processes only".to_string(),
                help: "help: ptap's `kprobe(NAME)` probes a function of the target; `syscall.NAME` a system call".to_string(),
            })
        }
        kind @ ("kprobe" | "jprobe" | "kretprobe") => {
            let Some((arg, arg_span)) = &first.arg else {
                return Err(malformed("a target in parentheses, as in `kprobe(main)`"));
            };
            let target = parse_target(arg, *arg_span)?;
            let maxactive = match (kind, c.len()) {
                (_, 1) => None,
                ("kretprobe", 2) if c[1].name.name == "maxactive" => Some(count_arg(
                    &c[1].arg,
                    spec.span,
                    text,
                    "`maxactive(N)` with N >= 1",
                )?),
                ("kretprobe", _) => {
                    return Err(malformed("`kretprobe(T)` or `kretprobe(T).maxactive(N)`"))
                }
                _ => return Err(malformed("nothing after the target")),
            };
            // A line (`file.c:42`) is inside a function, as `sym+off`.
            let inside = match &target {
                Target::Symbol { offset, .. } => *offset != 0,
                Target::Line { line, .. } => line.is_some(),
                _ => false,
            };
            if kind != "kprobe" && inside {
                return Err(PointError::NotAFunctionEntry {
                    kind: if kind == "jprobe" {
                        "jprobe"
                    } else {
                        "kretprobe"
                    },
                    span: *arg_span,
                });
            }
            match kind {
                "kprobe" => PointKind::Kprobe { target },
                "jprobe" => PointKind::Jprobe { target },
                _ => PointKind::Kretprobe { target, maxactive },
            }
        }
        other => match crate::points_stap::resolve(spec, text) {
            Some(kind) => kind?,
            None => {
                return Err(PointError::UnknownPoint {
                    name: other.to_string(),
                    span: first.name.span,
                    suggestion: diag::suggest(
                        other,
                        POINT_NAMES
                            .iter()
                            .chain(crate::points_stap::NAMES)
                            .copied(),
                    ),
                })
            }
        },
    };
    Ok(ProbePoint {
        text: canonical(text),
        kind,
        optional: spec.optional,
        span: spec.span,
    })
}

fn canonical(text: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    for ch in text.chars() {
        if ch == '"' {
            in_quote = !in_quote;
        }
        if in_quote || !ch.is_whitespace() {
            out.push(ch);
        }
    }
    out
}

fn count_arg(
    arg: &Option<(String, Span)>,
    span: Span,
    text: &str,
    expected: &'static str,
) -> Result<u64, PointError> {
    let malformed = PointError::Malformed {
        point: text.to_string(),
        span,
        expected,
    };
    let Some((a, _)) = arg else {
        return Err(malformed);
    };
    match parse_number(a.trim()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(malformed),
    }
}

fn parse_number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Characters of a demangled C++ or Rust name besides those of a C symbol
/// (`ns::Class::method`, `Vec<T>::push`, `Class::~Class`, `operator<<`).
fn is_demangled_char(c: char) -> bool {
    matches!(
        c,
        ':' | '<' | '>' | ',' | '~' | '&' | '=' | '!' | '|' | '^' | '%' | '/'
    )
}

fn is_symbol(s: &str) -> bool {
    // A `:` only as part of a `::` scope.
    if s.replace("::", "").contains(':') {
        return false;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '@') || is_demangled_char(c)
        })
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '.' | '*' | '?' | '[' | ']' | '-')
                || is_demangled_char(c)
        })
}

/// The `module:` separator: the first `:` that is not part of a `::` (a
/// C++ or Rust scope, as in `ns::f` or `libstdc++:std::terminate`).
fn module_colon(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':'))
}

/// File name endings of source files, for `file.c:42`.
const SOURCE_EXTS: &[&str] = &[
    "c", "h", "cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "C", "rs", "s", "S", "go", "f", "f90",
];

/// `file.c:42`, `func@file.c:42`, `func@file.c` (SystemTap's
/// `.statement("func@file.c:42")`): None for any other target.
pub fn line_target(text: &str, span: Span) -> Result<Option<Target>, PointError> {
    let bad = |why: &str| PointError::BadTarget {
        text: text.to_string(),
        span,
        why: why.to_string(),
    };
    let (func, rest) = match text.split_once('@') {
        Some((f, r)) => (Some(f), r),
        None => (None, text),
    };
    let (file, line) = match rest.rsplit_once(':') {
        Some((f, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => (
            f,
            Some(
                l.parse::<u32>()
                    .map_err(|_| bad("the line number is too big"))?,
            ),
        ),
        _ => (rest, None),
    };
    let is_source = file
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && SOURCE_EXTS.contains(&ext));
    if func.is_none() && !(is_source && line.is_some()) {
        return Ok(None);
    }
    if file.is_empty() || file.contains(['"', ':', '*', '?', '[']) {
        return Err(bad(
            "write a source file as in `file.c:42` or `func@file.c:42`",
        ));
    }
    if let Some(f) = func {
        if f.is_empty() || f.contains(['*', '?', '[', ':', '"']) && !f.contains("::") {
            return Err(bad(
                "before `@` comes a function name, as in `func@file.c:42`",
            ));
        }
    }
    if line == Some(0) {
        return Err(bad("lines are numbered from 1"));
    }
    Ok(Some(Target::Line {
        module: None,
        func: func.map(str::to_string),
        file: file.to_string(),
        line,
    }))
}

/// Parses the text of `kprobe(...)`.
pub fn parse_target(raw: &str, span: Span) -> Result<Target, PointError> {
    let text = canonical(raw);
    let bad = |why: &str| PointError::BadTarget {
        text: text.clone(),
        span,
        why: why.to_string(),
    };
    if text.is_empty() {
        return Err(bad("the target is empty"));
    }
    // The whole target quoted, as in SystemTap (`kprobe("ns::Class::*")`).
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.contains('"'))
    {
        let inner: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
        if !inner.is_empty() && !inner.starts_with('/') {
            return parse_target(&inner, span);
        }
    }
    if let Some(t) = line_target(&text, span)? {
        return Ok(t);
    }
    // The module part.
    let (module, rest) = if let Some(q) = text.strip_prefix('"') {
        let Some(end) = q.find('"') else {
            return Err(bad("unterminated quoted path"));
        };
        let path = &q[..end];
        let Some(rest) = q[end + 1..].strip_prefix(':') else {
            return Err(bad("a quoted path must be followed by `:symbol`"));
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        // A quoted name without a `/` is a library name, as unquoted
        // (`"libstdc++.so.6":__cxa_throw`: `++` cannot stand unquoted).
        if path.contains('/') {
            (Some(Module::Path(path.to_string())), rest)
        } else {
            (Some(Module::Name(path.to_string())), rest)
        }
    } else if let Some((m, rest)) = module_colon(&text).map(|i| (&text[..i], &text[i + 1..])) {
        let ok = !m.is_empty()
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+'));
        if !ok {
            return Err(bad(
                "a module is a name such as `libc` or `libc.so.6`, or a quoted path",
            ));
        }
        (Some(Module::Name(m.to_string())), rest)
    } else {
        (None, text.as_str())
    };
    if rest.is_empty() {
        return Err(bad("a symbol is missing after `:`"));
    }
    if module.is_none() && rest.starts_with(|c: char| c.is_ascii_digit()) {
        return match parse_number(rest) {
            Some(a) if rest.starts_with("0x") || rest.starts_with("0X") => Ok(Target::Address(a)),
            _ => Err(bad("an address is written in hex, as in `0x401136`")),
        };
    }
    // `sys_*`, `sys_open*`: every system call whose name matches (as
    // SystemTap's `syscall.*`); a user function is qualified with its module.
    if let (None, Some(call)) = (&module, rest.strip_prefix("sys_")) {
        if is_pattern(call) {
            let calls: Vec<(String, u32)> = syscalls::SYSCALLS
                .iter()
                .filter(|(n, _)| crate::preprocess::glob(call.as_bytes(), n.as_bytes()))
                .map(|&(n, nr)| (n.to_string(), nr))
                .collect();
            if calls.is_empty() {
                return Err(PointError::UnknownSyscall {
                    name: rest.to_string(),
                    span,
                    suggestion: None,
                });
            }
            return Ok(Target::Syscall {
                name: rest.to_string(),
                calls,
            });
        }
    }
    if is_pattern(rest) {
        return Ok(Target::Pattern {
            module,
            pattern: rest.to_string(),
        });
    }
    let (name, offset) = match rest.split_once('+') {
        Some((n, off)) => match parse_number(off) {
            Some(o) => (n, o),
            None => return Err(bad("the offset after `+` must be a number")),
        },
        None => (rest, 0),
    };
    if !is_symbol(name) {
        return Err(bad("not a symbol name"));
    }
    if module.is_none() && offset == 0 {
        if let Some(call) = name.strip_prefix("sys_") {
            return syscall_target(name, call, span);
        }
    }
    Ok(Target::Symbol {
        module,
        name: name.to_string(),
        offset,
    })
}

fn syscall_target(name: &str, call: &str, span: Span) -> Result<Target, PointError> {
    let calls: Vec<String> = match stdlib::alias(name) {
        Some(calls) => calls,
        None => vec![call.to_string()],
    };
    let mut resolved = Vec::new();
    for c in calls {
        match syscalls::number(&c) {
            Some(nr) => resolved.push((c, nr)),
            None => {
                let mut candidates: Vec<String> = syscalls::SYSCALLS
                    .iter()
                    .map(|(n, _)| format!("sys_{n}"))
                    .collect();
                candidates.extend(stdlib::aliases().into_iter().map(|a| a.name));
                let suggestion =
                    diag::suggest(name, candidates.iter().map(String::as_str)).map(str::to_string);
                return Err(PointError::UnknownSyscall {
                    name: name.to_string(),
                    span,
                    suggestion,
                });
            }
        }
    }
    Ok(Target::Syscall {
        name: name.to_string(),
        calls: resolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<Target, PointError> {
        parse_target(s, Span::default())
    }

    #[test]
    fn targets() {
        assert_eq!(
            t("main"),
            Ok(Target::Symbol {
                module: None,
                name: "main".into(),
                offset: 0
            })
        );
        assert_eq!(
            t("libc:malloc+4"),
            Ok(Target::Symbol {
                module: Some(Module::Name("libc".into())),
                name: "malloc".into(),
                offset: 4
            })
        );
        assert_eq!(t("0x401000"), Ok(Target::Address(0x401000)));
        assert!(matches!(t("libc.so.6:str*"), Ok(Target::Pattern { .. })));
        assert!(matches!(
            t("\"/bin/ls\":main"),
            Ok(Target::Symbol {
                module: Some(Module::Path(_)),
                ..
            })
        ));
        let open = t("sys_open").unwrap();
        assert!(matches!(&open, Target::Syscall { calls, .. } if calls.len() == 4));
        assert!(matches!(
            t("sys_opne"),
            Err(PointError::UnknownSyscall {
                suggestion: Some(_),
                ..
            })
        ));
        assert!(t("1234").is_err());
        assert!(t("a+b").is_err());
        assert!(t("lib:").is_err());
        assert_eq!(
            t("ns::Class::method"),
            Ok(Target::Symbol {
                module: None,
                name: "ns::Class::method".into(),
                offset: 0
            })
        );
        assert_eq!(
            t("libstdc++:std::terminate"),
            Ok(Target::Symbol {
                module: Some(Module::Name("libstdc++".into())),
                name: "std::terminate".into(),
                offset: 0
            })
        );
        assert_eq!(t("\"ns::Class::method\""), t("ns::Class::method"));
        assert!(t("a:b:c").is_err());
        assert!(matches!(
            t("\"Parser::*\""),
            Ok(Target::Pattern { module: None, .. })
        ));
    }
}
