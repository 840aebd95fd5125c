//! `ptap -l POINT` and `ptap -L POINT`: list the probe points a point
//! selects in a program (`-c CMD`, `-x PID`, or a path), as `stap -l` /
//! `stap -L` do. `-L` adds each function's variables and their C types
//! from its debug information (`$p:struct pt* $scale:int`), and
//! `$return:TYPE` for kretprobes. Functions are selected exactly as the
//! points of a script are (`points::Images::list`).

use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ptap_compiler::codegen::dwarf::Debug;
use ptap_lang::checked::{Module, Target};
use ptap_rt_core::script::meta::ModuleSpec;

use crate::points::Images;
use crate::ScriptOpts;

pub fn run(opts: &ScriptOpts) -> ExitCode {
    match list(opts) {
        Ok(lines) => {
            let mut text = lines.join("\n");
            text.push('\n');
            let written = match &opts.target.output {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
                    .context("cannot write the listing"),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ptap: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("ptap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `kprobe(T)`, `jprobe(T)`, `kretprobe(T)` or a bare `T` (a kprobe).
fn split_point(text: &str) -> anyhow::Result<(&str, &str)> {
    let text = text.trim();
    for kind in ["kprobe", "jprobe", "kretprobe"] {
        if let Some(rest) = text.strip_prefix(kind) {
            let rest = rest.trim_start();
            return match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
                Some(t) => Ok((kind, t)),
                None => Err(anyhow!("bad point `{text}`: write {kind}(TARGET)")),
            };
        }
    }
    Ok(("kprobe", text))
}

fn list(opts: &ScriptOpts) -> anyhow::Result<Vec<String>> {
    let (point, vars) = match (&opts.list, &opts.list_vars) {
        (Some(p), None) => (p.as_str(), false),
        (None, Some(p)) => (p.as_str(), true),
        _ => return Err(anyhow!("give one of -l POINT and -L POINT")),
    };
    let (kind, raw) = split_point(point)?;
    let target = ptap_lang::points::parse_target(raw, ptap_lang::Span::default())
        .map_err(|e| anyhow!(e.to_diagnostic_message()))?;
    // System calls need no program.
    match &target {
        // `sys_open*`: one line per matching call (and alias).
        Target::Syscall { name, .. } if name.contains(['*', '?', '[']) => {
            return Ok(syscall_pattern(kind, name, vars))
        }
        Target::Syscall { name, calls } => return Ok(vec![syscall_line(kind, name, calls, vars)]),
        Target::Pattern {
            module: None,
            pattern,
        } if pattern.starts_with("sys_") => return Ok(syscall_pattern(kind, pattern, vars)),
        _ => {}
    }
    let images = match (opts.target.pid, &opts.target.cmd, opts.rest.first()) {
        (Some(pid), _, _) => {
            if let Target::Line { .. } = &target {
                let exe = std::fs::read_link(format!("{}/exe", crate::inject::proc_of(pid)))
                    .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
                return line_points(kind, raw, &target, &exe, vars, opts.target.verbose > 0);
            }
            Images::from_pid(pid)?
        }
        (None, Some(cmd), _) => {
            let argv = shlex::split(cmd).with_context(|| format!("cannot split -c `{cmd}`"))?;
            let argv0 = argv.first().context("-c needs a command")?;
            let exe = crate::run::resolve_exe(argv0)
                .with_context(|| format!("cannot find `{argv0}` (searched PATH)"))?;
            if let Target::Line { .. } = &target {
                return line_points(kind, raw, &target, &exe, vars, opts.target.verbose > 0);
            }
            Images::load(&exe)?
        }
        (None, None, Some(path)) => {
            if let Target::Line { .. } = &target {
                return line_points(
                    kind,
                    raw,
                    &target,
                    Path::new(path),
                    vars,
                    opts.target.verbose > 0,
                );
            }
            Images::load(Path::new(path))?
        }
        (None, None, None) => {
            return Err(anyhow!(
                "what program? give -c CMD, -x PID or its path (ptap -l 'kprobe(f*)' /bin/ls)"
            ))
        }
    };
    let (module, query, pattern) = match &target {
        Target::Symbol {
            module,
            name,
            offset: 0,
        } => (module, name.as_str(), false),
        Target::Pattern { module, pattern } => (module, pattern.as_str(), true),
        _ => {
            return Err(anyhow!(
                "`{raw}`: -l lists functions: give a name or a wildcard"
            ))
        }
    };
    let module = module.as_ref().map(|m| match m {
        Module::Name(n) => ModuleSpec::Name(n.clone()),
        Module::Path(p) => ModuleSpec::Path(p.clone()),
    });
    let listed = images.list(&module, query, pattern);
    // A function of the executable that was only inlined: its copies.
    let none = listed.as_ref().map_or(true, |f| f.is_empty());
    if let (true, Target::Symbol { module: None, .. }, "kprobe") = (none, &target, kind) {
        if let Some(exe) = images.main_path() {
            if let Ok(d) = Debug::load(&exe) {
                let copies = d.line_addresses(Some(query), "", None).unwrap_or_default();
                if !copies.is_empty() && copies.iter().all(|a| a.inlined) {
                    let line = Target::Line {
                        module: None,
                        func: Some(query.to_string()),
                        file: String::new(),
                        line: None,
                    };
                    return line_points(kind, raw, &line, &exe, vars, opts.target.verbose > 0);
                }
            }
        }
    }
    let mut found = listed.map_err(|why| anyhow!("{kind}({raw}) {why:#}"))?;
    // Sorted by name within each object (the executable first).
    found.sort_by(|a, b| (!a.is_main, &a.label, &a.name).cmp(&(!b.is_main, &b.label, &b.name)));
    if found.is_empty() {
        return Err(anyhow!("{kind}({raw}) matches no function"));
    }
    let mut debug: HashMap<PathBuf, Option<Debug>> = HashMap::new();
    let mut lines: Vec<String> = Vec::new();
    for f in found {
        let written = if f.name.contains([':', '<', '>', ',', '~', ' ']) {
            format!("\"{}\"", f.name)
        } else {
            f.name.clone()
        };
        let mut line = if f.is_main {
            format!("{kind}({written})")
        } else {
            format!("{kind}({}:{written})", f.label)
        };
        if vars {
            let d = debug
                .entry(f.path.clone())
                .or_insert_with(|| Debug::load(&f.path).ok());
            if let Some(info) = d
                .as_ref()
                .and_then(|d| d.function_info(&f.name, Some(&f.symbol), Some(f.addr)).ok())
            {
                // A type the listing cannot spell (`?`) is left out.
                for (n, t) in info.params.iter().chain(&info.locals) {
                    if t != "?" {
                        line.push_str(&format!(" ${n}:{t}"));
                    }
                }
                if kind == "kretprobe" {
                    if let Some(r) = info.ret.as_ref().filter(|r| *r != "?") {
                        line.push_str(&format!(" $return:{r}"));
                    }
                }
            }
        }
        if opts.target.verbose > 0 {
            line.push_str(&format!(
                "  # {} [{}] at {:#x} in {}",
                f.full, f.symbol, f.addr, f.label
            ));
        }
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// `-l 'kprobe("file.c:42")'`: one line per address of the line (its
/// copies, inlined ones too), with `-L` the variables there.
fn line_points(
    kind: &str,
    raw: &str,
    target: &Target,
    exe: &Path,
    vars: bool,
    verbose: bool,
) -> anyhow::Result<Vec<String>> {
    let Target::Line {
        func, file, line, ..
    } = target
    else {
        return Ok(Vec::new());
    };
    let d = Debug::load(exe).map_err(anyhow::Error::msg)?;
    let addrs = d
        .line_addresses(func.as_deref(), file, *line)
        .map_err(|why| anyhow!("{kind}({raw}): {why}"))?;
    let written = if raw.starts_with('"') || !raw.contains([':', '@']) {
        raw.to_string()
    } else {
        format!("\"{raw}\"")
    };
    let mut out = Vec::new();
    for a in addrs {
        let mut l = format!("{kind}({written})");
        if vars {
            for (n, t) in d.vars_at(a.addr).unwrap_or_default() {
                if t != "?" {
                    l.push_str(&format!(" ${n}:{t}"));
                }
            }
        }
        if verbose || a.inlined {
            l.push_str(&format!(
                "  # {:#x} in {}{}",
                a.addr,
                a.func,
                if a.inlined { " (inlined)" } else { "" }
            ));
        }
        out.push(l);
    }
    Ok(out)
}

fn syscall_line(kind: &str, name: &str, calls: &[(String, u32)], vars: bool) -> String {
    let mut line = format!("{kind}({name})");
    // Arguments at entries; a kretprobe has `ret` (`@entry(argN)` for them).
    if vars && kind == "kretprobe" {
        let list: Vec<String> = calls.iter().map(|(c, nr)| format!("{c}({nr})")).collect();
        line.push_str(&format!(" ret:long # calls {}", list.join(" ")));
    } else if vars {
        // One call: its arguments after the point; several: per call.
        let args = |c: &str| {
            syscall_args(c)
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, (n, t))| format!("{n}=arg{}:{t}", i + 1))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        if let [(c, _)] = calls {
            let a = args(c);
            if !a.is_empty() {
                line.push(' ');
                line.push_str(&a);
            }
        }
        let list: Vec<String> = calls
            .iter()
            .map(|(c, nr)| match (calls.len(), args(c)) {
                (1, _) => format!("{c}({nr})"),
                (_, a) if a.is_empty() => format!("{c}({nr})"),
                (_, a) => format!("{c}({nr}: {a})"),
            })
            .collect();
        line.push_str(&format!(" # calls {}", list.join(" ")));
    }
    line
}

/// The arguments of system call `call` as the kernel describes them
/// (name, C type), from its `syscalls:sys_enter_CALL` tracepoint format;
/// None where tracefs is not readable (not root, not mounted: a listing
/// does not mount it).
fn syscall_args(call: &str) -> Option<Vec<(String, String)>> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/syscalls/sys_enter_{call}/format")).ok()
        })?;
    let mut out = Vec::new();
    for line in format.lines() {
        let Some(decl) = line
            .trim()
            .strip_prefix("field:")
            .and_then(|f| f.split(';').next())
        else {
            continue;
        };
        let Some((ty, name)) = decl.rsplit_once(' ') else {
            continue;
        };
        if name.starts_with("common_") || name == "__syscall_nr" {
            continue;
        }
        out.push((name.to_string(), ty.trim().replace(" *", "*")));
    }
    Some(out)
}

fn syscall_pattern(kind: &str, pattern: &str, vars: bool) -> Vec<String> {
    let mut out = Vec::new();
    for a in ptap_lang::stdlib::aliases() {
        if ptap_rt_core::proc::names::glob(pattern.as_bytes(), a.name.as_bytes()) {
            if let Ok(Target::Syscall { name, calls }) =
                ptap_lang::points::parse_target(&a.name, ptap_lang::Span::default())
            {
                out.push(syscall_line(kind, &name, &calls, vars));
            }
        }
    }
    for (n, nr) in ptap_lang::syscalls::SYSCALLS {
        let name = format!("sys_{n}");
        if ptap_rt_core::proc::names::glob(pattern.as_bytes(), name.as_bytes())
            && !out
                .iter()
                .any(|l| l.starts_with(&format!("{kind}({name})")))
        {
            out.push(syscall_line(kind, &name, &[(n.to_string(), *nr)], vars));
        }
    }
    out
}

trait Message {
    fn to_diagnostic_message(&self) -> String;
}

impl<T: ptap_lang::ToDiagnostic> Message for T {
    fn to_diagnostic_message(&self) -> String {
        let d = self.to_diagnostic();
        let labels: Vec<String> = d.labels.iter().map(|l| l.message.clone()).collect();
        if labels.is_empty() {
            d.message
        } else {
            format!("{} ({})", d.message, labels.join("; "))
        }
    }
}
