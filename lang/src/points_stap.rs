//! SystemTap's spellings of probe points, accepted besides ptap's own:
//!
//! | SystemTap | ptap |
//! |---|---|
//! | `process("PATH").function("NAME")`, `.call` | `kprobe("PATH":NAME)` |
//! | `process("PATH").function("NAME").return` | `kretprobe("PATH":NAME)` |
//! | `process.function("NAME")` (no path: the target) | `kprobe(NAME)` |
//! | `syscall.NAME`, `syscall.NAME.return` | `kprobe(sys_NAME)`, `kretprobe(sys_NAME)` (that one call, no alias) |
//! | `syscall.*`, `syscall.*.return` | every system call |
//! | `begin(N)`, `end(N)` | `begin`, `end`, run in order of N |
//!
//! Kernel points (`kernel.*`, `module(...)`, `kprobe.function`, ...) and the
//! user-space points ptap has no mechanism for get a refusal that says what
//! to use instead; nothing is silently read as something else.
use crate::ast::PointSpec;
use crate::checked::{Module, PointKind, Target};
use crate::points::PointError;
use crate::span::Span;
use crate::syscalls;

const KERNEL_HELP: &str = "help: for a system call use `syscall.NAME` (or `kprobe(sys_NAME)`); for a function of a program use `process(\"PATH\").function(\"NAME\")` (or `kprobe(NAME)`)";

/// The point names handled here (for "did you mean" suggestions).
pub const NAMES: &[&str] = &["process", "syscall"];

fn refuse(span: Span, msg: impl Into<String>, help: impl Into<String>) -> PointError {
    PointError::Refused {
        span,
        msg: msg.into(),
        help: help.into(),
    }
}

/// The text of a quoted point argument (`"main"` -> `main`).
fn quoted(arg: &Option<(String, Span)>) -> Option<String> {
    let (a, _) = arg.as_ref()?;
    let a = a.trim();
    let inner = a.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then(|| inner.to_string())
}

/// `begin(N)` / `end(N)`: the priority N (0 without an argument). `None`:
/// the argument is not a number.
pub fn priority(spec: &PointSpec) -> Option<i64> {
    let first = &spec.components[0];
    match &first.arg {
        None => Some(0),
        Some((a, _)) => {
            let a = a.split_whitespace().collect::<String>();
            let (neg, digits) = match a.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, a.strip_prefix('+').unwrap_or(&a)),
            };
            let n: i64 = if let Some(h) = digits.strip_prefix("0x") {
                i64::from_str_radix(h, 16).ok()?
            } else {
                digits.parse().ok()?
            };
            Some(if neg { -n } else { n })
        }
    }
}

/// Resolves a point whose first component is not one of ptap's own.
/// `None`: not a SystemTap spelling either.
pub fn resolve(spec: &PointSpec, text: &str) -> Option<Result<PointKind, PointError>> {
    let c = &spec.components;
    let first = &c[0];
    let name = first.name.name.as_str();
    let malformed = |expected| PointError::Malformed {
        point: text.to_string(),
        span: spec.span,
        expected,
    };
    Some(match name {
        "process" => process(spec, text),
        "syscall" => {
            if first.arg.is_some() || !(2..=3).contains(&c.len()) || c[1].arg.is_some() {
                return Some(Err(malformed("`syscall.NAME` or `syscall.NAME.return`")));
            }
            let ret = match c.get(2) {
                None => false,
                Some(r) if r.name.name == "return" && r.arg.is_none() => true,
                Some(_) => return Some(Err(malformed("`syscall.NAME` or `syscall.NAME.return`"))),
            };
            let call = c[1].name.name.as_str();
            let target = if call == "*" {
                Target::Syscall {
                    name: "sys_*".to_string(),
                    calls: syscalls::SYSCALLS
                        .iter()
                        .map(|&(n, nr)| (n.to_string(), nr))
                        .collect(),
                }
            } else if call.contains(['*', '?']) {
                // `syscall.open*`: every call whose name matches.
                let calls: Vec<(String, u32)> = syscalls::SYSCALLS
                    .iter()
                    .filter(|(n, _)| crate::preprocess::glob(call.as_bytes(), n.as_bytes()))
                    .map(|&(n, nr)| (n.to_string(), nr))
                    .collect();
                if calls.is_empty() {
                    return Some(Err(PointError::UnknownSyscall {
                        name: format!("syscall.{call}"),
                        span: c[1].name.span,
                        suggestion: None,
                    }));
                }
                Target::Syscall {
                    name: format!("sys_{call}"),
                    calls,
                }
            } else {
                match syscalls::number(call) {
                    Some(nr) => Target::Syscall {
                        name: format!("sys_{call}"),
                        calls: vec![(call.to_string(), nr)],
                    },
                    None => {
                        let suggestion = crate::diag::suggest(
                            call,
                            syscalls::SYSCALLS.iter().map(|&(n, _)| n),
                        )
                        .map(|s| format!("syscall.{s}"));
                        return Some(Err(PointError::UnknownSyscall {
                            name: format!("syscall.{call}"),
                            span: c[1].name.span,
                            suggestion,
                        }));
                    }
                }
            };
            Ok(if ret {
                PointKind::Kretprobe {
                    target,
                    maxactive: None,
                }
            } else {
                PointKind::Kprobe { target }
            })
        }
        "nd_syscall" | "kernel" | "module" | "kprobe" | "netfilter" | "tracepoint" | "perf"
        | "procfs" | "scheduler" | "signal" | "vm" | "ioblock" | "tcp" | "udp" | "socket"
        | "nfs" | "nfsd" | "sunrpc" | "scsi" | "irq_handler" | "softirq" | "workqueue"
        | "hw_breakpoint" | "kprocess" | "memory" | "netdev" | "vfs" | "generic" => Err(refuse(
            first.name.span,
            format!("`{name}` probe points are kernel probes; ptap probes user-space processes only, inside the process, so there are no kernel probes here"),
            KERNEL_HELP,
        )),
        "java" | "python2" | "python3" => Err(refuse(
            first.name.span,
            format!("`{name}` probe points (language runtimes) are not supported"),
            "help: probe the runtime's native functions with `process(\"PATH\").function(\"NAME\")`",
        )),
        "error" | "never" | "init" => Err(refuse(
            first.name.span,
            format!("the `{name}` probe point is not supported"),
            "help: use `begin` and `end`",
        )),
        _ => return None,
    })
}

fn process(spec: &PointSpec, text: &str) -> Result<PointKind, PointError> {
    let c = &spec.components;
    let first = &c[0];
    let module = match &first.arg {
        None => None,
        Some((raw, span)) => match quoted(&first.arg) {
            Some(p) if p.is_empty() => {
                return Err(refuse(*span, "the process path is empty", "help: write `process(\"/path/to/program\")`, or `process` alone for the target of -c/-x"))
            }
            Some(p) if p.contains('/') => {
                // The runtime names objects by their real path.
                let real = std::fs::canonicalize(&p)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or(p);
                Some(Module::Path(real))
            }
            // A bare name: the object whose file name it is (as `lib:sym`).
            Some(p) => Some(Module::Name(p)),
            None => {
                let help = if raw.trim().chars().all(|c| c.is_ascii_digit()) {
                    "help: to probe a running process, give its pid with -x PID and write `process.function(...)`"
                } else {
                    "help: write the path in double quotes, as in `process(\"/bin/ls\")`"
                };
                return Err(refuse(*span, format!("`process({})` is not a path", raw.trim()), help));
            }
        },
    };
    let Some(second) = c.get(1) else {
        return Err(PointError::Malformed {
            point: text.to_string(),
            span: spec.span,
            expected: "`process(\"PATH\").function(\"NAME\")`",
        });
    };
    match second.name.name.as_str() {
        "function" => {}
        // `.statement("func@file.c:42")`, `.statement("file.c:42")`.
        "statement" if c.len() == 2 => {
            let arg = quoted(&second.arg).unwrap_or_default();
            let aspan = second.arg.as_ref().map_or(second.name.span, |(_, s)| *s);
            return match crate::points::line_target(&arg, aspan)? {
                Some(Target::Line {
                    func, file, line, ..
                }) => Ok(PointKind::Kprobe {
                    target: Target::Line {
                        module,
                        func,
                        file,
                        line,
                    },
                }),
                _ => Err(refuse(
                    aspan,
                    format!("`.statement(\"{arg}\")` is not a source line"),
                    "help: write `.statement(\"func@file.c:42\")` or `.statement(\"file.c:42\")`",
                )),
            };
        }
        "begin" | "end" if c.len() == 2 && second.arg.is_none() => {
            return Ok(if second.name.name == "begin" {
                PointKind::ProcessBegin { module }
            } else {
                PointKind::ProcessEnd { module }
            });
        }
        "begin" | "end" => {
            return Err(PointError::Malformed {
                point: text.to_string(),
                span: spec.span,
                expected: "`process.begin`, `process.end` or `process(\"PATH\").begin`",
            })
        }
        "thread" => {
            return Err(refuse(
                second.name.span,
                "`process.thread.begin`/`.end` (per thread) is not supported yet",
                "help: `process.begin` and `process.end` run once per process",
            ))
        }
        "statement" => {
            return Err(refuse(
                second.name.span,
                "nothing may follow `process.statement(...)`",
                "help: `.statement(\"func@file.c:42\")` is a kprobe at that line",
            ))
        }
        "mark" | "provider" => {
            return Err(refuse(
                second.name.span,
                "SDT marker probes (`process.mark`) are not supported",
                "help: probe the function that contains the marker",
            ))
        }
        "syscall" => {
            return Err(refuse(
                second.name.span,
                "`process.syscall` is not supported",
                "help: use `syscall.NAME` or `syscall.*`",
            ))
        }
        other => {
            return Err(refuse(
                second.name.span,
                format!("`process.{other}` is not supported"),
                "help: ptap has `process(\"PATH\").function(\"NAME\")` with `.call` and `.return`",
            ))
        }
    }
    let Some(func) = quoted(&second.arg) else {
        return Err(PointError::Malformed {
            point: text.to_string(),
            span: spec.span,
            expected: "a function name in double quotes, as in `.function(\"main\")`",
        });
    };
    let fspan = second.arg.as_ref().map_or(second.name.span, |(_, s)| *s);
    // `func@file.c`: the function defined in that file (a line after it
    // is where SystemTap declares it: the function's entry is probed).
    let in_file = match func.contains('@') {
        true => match crate::points::line_target(&func, fspan)? {
            Some(Target::Line { func, file, .. }) => Some(Target::Line {
                module: module.clone(),
                func,
                file,
                line: None,
            }),
            _ => None,
        },
        false => None,
    };
    let ret = match c.get(2) {
        None => false,
        Some(x) if x.arg.is_none() && x.name.name == "call" && c.len() == 3 => false,
        Some(x) if x.arg.is_none() && x.name.name == "return" && c.len() == 3 => true,
        Some(x) if x.name.name == "inline" => {
            return Err(refuse(
                x.name.span,
                "`.inline` probes are not supported (ptap finds functions by symbol, and inlined copies have none)",
                "help: use `.function(\"NAME\")` or `.call`",
            ))
        }
        Some(x) => {
            return Err(refuse(
                x.name.span,
                format!("`.{}` is not supported after `.function(...)`", x.name.name),
                "help: use `.call` (entry) or `.return`",
            ))
        }
    };
    // The function name is a ptap target without module (`sym`, `sym+off`
    // is not SystemTap's, patterns are); a module comes from `process(PATH)`.
    let target = if let Some(t) = in_file {
        t
    } else if func.contains(['*', '?', '[']) {
        Target::Pattern {
            module,
            pattern: func,
        }
    } else if func.is_empty() || func.chars().any(|ch| ch.is_control()) {
        // Only an empty or unprintable name is refused: C++ and Rust names
        // are qualified (`ns::Class::method`, `operator+`, templates), as
        // `kprobe("...")` takes them.
        return Err(PointError::BadTarget {
            text: func,
            span: fspan,
            why: "not a function name".to_string(),
        });
    } else {
        Target::Symbol {
            module,
            name: func,
            offset: 0,
        }
    };
    Ok(if ret {
        PointKind::Kretprobe {
            target,
            maxactive: None,
        }
    } else {
        PointKind::Kprobe { target }
    })
}
