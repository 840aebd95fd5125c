//! `$name` resolution per probe: every target variable a probe uses is
//! looked up once in the target's DWARF ([`super::dwarf`]) for each of the
//! probe's points; all points must agree on where it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ptap_lang::checked::{CheckedScript, ExprKind, LValue, Module, PointKind, Probe, Target};
use ptap_lang::Span;

use super::dwarf::{Debug, VarLoc};
use super::dwarf_access::{Op, TVar};
use super::CodegenError;
use ptap_lang::walk::{walk_expr, walk_stmt};

/// Per probe: (variables of its body, variables of its `@entry` expressions).
pub(crate) type ProbeVars = Vec<(HashMap<String, TVar>, HashMap<String, TVar>)>;

fn used(exprs: impl FnOnce(&mut dyn FnMut(&ptap_lang::checked::Expr))) -> Vec<(String, Span)> {
    let mut out: Vec<(String, Span)> = Vec::new();
    exprs(&mut |e| {
        let name = match &e.kind {
            // `$a[i]`: the path with `[?]` (args: the index, the path).
            ExprKind::Builtin {
                func: ptap_lang::builtins::Builtin::TargetIndex,
                args,
            } => match args.get(1).map(|a| &a.kind) {
                Some(ExprKind::Str(p)) => p,
                _ => return,
            },
            ExprKind::TargetVar(n)
            | ExprKind::Assign {
                target: LValue::TargetVar(n),
                ..
            }
            | ExprKind::IncDec {
                target: LValue::TargetVar(n),
                ..
            } => n,
            _ => return,
        };
        if !out.iter().any(|(m, _)| m == name) {
            out.push((name.clone(), e.span));
        }
    });
    out
}

/// The key of a `@cast(ptr, "type", "module")->chain` in a probe's
/// target variables (its arguments after the pointer are literals).
pub(crate) fn cast_key(args: &[ptap_lang::checked::Expr]) -> String {
    let lit = |i: usize| match args.get(i).map(|a| &a.kind) {
        Some(ExprKind::Str(s)) => s.as_str(),
        _ => "",
    };
    format!("@cast\0{}\0{}\0{}", lit(1), lit(2), lit(3))
}

/// `@cast`s a probe uses: (key, type, module, chain, span).
fn casts(
    exprs: impl FnOnce(&mut dyn FnMut(&ptap_lang::checked::Expr)),
) -> Vec<(String, [String; 3], Span)> {
    let mut out: Vec<(String, [String; 3], Span)> = Vec::new();
    exprs(&mut |e| {
        if let ExprKind::Builtin {
            func: ptap_lang::builtins::Builtin::Cast,
            args,
        } = &e.kind
        {
            let key = cast_key(args);
            if !out.iter().any(|(k, _, _)| *k == key) {
                let parts: Vec<String> = key.split('\0').skip(1).map(str::to_string).collect();
                if let [t, m, c] = parts.as_slice() {
                    out.push((key, [t.clone(), m.clone(), c.clone()], e.span));
                }
            }
        }
    });
    out
}

/// Finds the file of a library a point names (`libc` in `libc:write`)
/// among the objects `exe` loads. Set by the ptap driver, which knows how
/// the dynamic loader finds libraries (`compiler/src/points/libraries.rs`).
pub type LibraryFinder = fn(exe: &Path, module: &Module) -> Option<PathBuf>;

static LIBRARY_FINDER: std::sync::OnceLock<LibraryFinder> = std::sync::OnceLock::new();

/// Let `$name` and `$return` of library functions find their library.
pub fn set_library_finder(f: LibraryFinder) {
    let _ = LIBRARY_FINDER.set(f);
}

/// The DWARF of each object a probe's points are in, read once.
struct Debugs<'a> {
    exe: Option<&'a Path>,
    loaded: HashMap<PathBuf, Result<Debug, String>>,
}

impl Debugs<'_> {
    /// The debug information of the object holding a point's function.
    fn of(&mut self, module: Option<&Module>) -> Result<&Debug, String> {
        let Some(exe) = self.exe else {
            return Err(
                "target variables need the target executable (-c CMD) with debug information"
                    .into(),
            );
        };
        let is_exe = |m: &Module| match m {
            Module::Name(n) => exe.file_name().is_some_and(|f| f.to_string_lossy() == *n),
            Module::Path(p) => {
                let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                real(Path::new(p)) == real(exe)
            }
        };
        let path = match module {
            None => exe.to_path_buf(),
            Some(m) if is_exe(m) => exe.to_path_buf(),
            Some(m) => LIBRARY_FINDER
                .get()
                .and_then(|f| f(exe, m))
                .ok_or_else(|| {
                    let (Module::Name(n) | Module::Path(n)) = m;
                    format!("no library `{n}` among the objects {} loads", exe.display())
                })?,
        };
        self.loaded
            .entry(path.clone())
            .or_insert_with(|| Debug::load(&path))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The function whose entry a point probes, for target variables.
fn entry_function(kind: &PointKind, at_entry: bool) -> Option<(Option<&Module>, &str)> {
    let t = match kind {
        PointKind::Kprobe { target } | PointKind::Jprobe { target } if !at_entry => target,
        PointKind::Kretprobe { target, .. } if at_entry => target,
        _ => return None,
    };
    match t {
        Target::Symbol {
            module,
            name,
            offset: 0,
        } => Some((module.as_ref(), name)),
        _ => None,
    }
}

/// The function a kretprobe point returns from.
fn returning_function(kind: &PointKind) -> Option<(Option<&Module>, &str)> {
    match kind {
        PointKind::Kretprobe {
            target:
                Target::Symbol {
                    module,
                    name,
                    offset: 0,
                },
            ..
        } => Some((module.as_ref(), name)),
        _ => None,
    }
}

/// `$return` (and `ret` typed by DWARF): the return register with the
/// size and signedness of the function's return type, the same at every
/// point of the probe.
fn return_loc(debugs: &mut Debugs<'_>, p: &Probe) -> Result<VarLoc, String> {
    let mut loc: Option<VarLoc> = None;
    for pt in &p.points {
        let Some((module, func)) = returning_function(&pt.kind) else {
            return Err(format!(
                "only available in a kretprobe of a named function, not in {}",
                pt.text
            ));
        };
        let Some((size, signed)) = debugs.of(module)?.return_type(func)? else {
            return Err(format!("`{func}` returns void"));
        };
        let l = VarLoc {
            reg: ptap_arch::regs::offset::AX,
            size,
            signed,
        };
        if loc.is_some_and(|x| x != l) {
            return Err("the probe's functions return different types".into());
        }
        loc = Some(l);
    }
    loc.ok_or_else(|| "the probe has no point".to_string())
}

/// Does the probe's body read `ret`?
fn uses_ret(p: &Probe) -> bool {
    let mut found = false;
    let mut f = |e: &ptap_lang::checked::Expr| {
        if matches!(
            e.kind,
            ExprKind::Context(ptap_lang::checked::ContextValue::Ret)
        ) {
            found = true;
        }
    };
    p.body.iter().for_each(|s| walk_stmt(s, &mut f));
    found
}

/// `$return`'s code: the return register, narrowed to its type.
fn return_code(l: VarLoc) -> TVar {
    let mut ops = vec![Op::Reg(l.reg)];
    if l.size < 8 {
        ops.push(Op::Narrow {
            size: l.size,
            signed: l.signed,
        });
    }
    TVar::Long(ops)
}

const DIFFERENT_PLACES: &str = "the probe's points keep it in different places";

/// One variable read the same way at every point of a probe: `l` (one
/// point's) must match what the earlier points gave, else `why`.
fn agree(loc: &mut Option<TVar>, l: TVar, why: &str) -> Result<(), String> {
    if loc.as_ref().is_some_and(|x| *x != l) {
        return Err(why.to_string());
    }
    *loc = Some(l);
    Ok(())
}

/// The code of each variable; one that does not resolve becomes
/// [`TVar::Failed`]: using it is the error, `@defined` of it is 0.
fn resolve(
    debugs: &mut Debugs<'_>,
    p: &Probe,
    vars: &[(String, Span)],
    at_entry: bool,
) -> Result<HashMap<String, TVar>, CodegenError> {
    let mut out = HashMap::new();
    for (name, span) in vars {
        match resolve_one(debugs, p, name, *span, at_entry) {
            Ok(Some(l)) => {
                out.insert(name.clone(), l);
            }
            Ok(None) => {}
            Err(CodegenError::TargetVar { what, span }) => {
                // `@defined($x)` in a return probe: `$x` is read at the entry.
                let entry_ok = !at_entry
                    && !name.starts_with("return")
                    && matches!(resolve_one(debugs, p, name, span, true), Ok(Some(_)));
                out.insert(
                    name.clone(),
                    TVar::Failed {
                        what,
                        span,
                        entry_ok,
                    },
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn resolve_one(
    debugs: &mut Debugs<'_>,
    p: &Probe,
    name: &str,
    span: Span,
    at_entry: bool,
) -> Result<Option<TVar>, CodegenError> {
    let fail = |why: String| CodegenError::TargetVar {
        what: format!("`${name}`: {why}"),
        span,
    };
    if name == "return" && !at_entry {
        let l = return_loc(debugs, p).map_err(fail)?;
        return Ok(Some(return_code(l)));
    }
    // `$return->m`, `$return$`: the path from the typed return value.
    if name.starts_with("return") && !at_entry {
        let mut loc: Option<TVar> = None;
        for pt in &p.points {
            let Some((module, func)) = returning_function(&pt.kind) else {
                return Err(fail(format!(
                    "only available in a kretprobe of a named function, not in {}",
                    pt.text
                )));
            };
            let l = debugs
                .of(module)
                .and_then(|d| d.return_access(func, name))
                .map_err(&fail)?;
            agree(&mut loc, l, "the probe's functions return different types").map_err(&fail)?;
        }
        return Ok(loc);
    }
    let mut loc: Option<TVar> = None;
    for pt in &p.points {
        // A source line or `0xADDR` of the executable: the variables there.
        if let (
            PointKind::Kprobe {
                target: Target::Address(a),
            },
            false,
        ) = (&pt.kind, at_entry)
        {
            let l = debugs
                .of(None)
                .and_then(|d| d.access_at(*a, name))
                .map_err(&fail)?;
            agree(&mut loc, l, DIFFERENT_PLACES).map_err(&fail)?;
            continue;
        }
        let Some((module, func)) = entry_function(&pt.kind, at_entry) else {
            let hint = if matches!(pt.kind, PointKind::Kretprobe { .. }) {
                " (a pretty-printed value is not kept from the entry: print it in a kprobe)"
                    .to_string()
            } else {
                String::new()
            };
            return Err(fail(format!(
                "only available at the entry of a named function, not in {}{hint}",
                pt.text
            )));
        };
        let l = debugs
            .of(module)
            .and_then(|d| d.entry_access(func, name))
            .map_err(&fail)?;
        agree(&mut loc, l, DIFFERENT_PLACES).map_err(&fail)?;
    }
    Ok(loc)
}

/// Resolve every `$name` of every probe against the DWARF of the objects
/// of `exe` (the executable, or the library a point names).
pub(crate) fn resolve_all(
    script: &CheckedScript,
    exe: Option<&Path>,
) -> Result<ProbeVars, CodegenError> {
    let mut debugs = Debugs {
        exe,
        loaded: HashMap::new(),
    };
    let mut all = Vec::new();
    for p in &script.probes {
        let body = used(|mut f| p.body.iter().for_each(|s| walk_stmt(s, &mut f)));
        let entry = used(|mut f| p.entry_exprs.iter().for_each(|e| walk_expr(e, &mut f)));
        let mut b = resolve(&mut debugs, p, &body, false)?;
        // `ret` of a kretprobe takes the function's DWARF return type when
        // the target has debug information for it (else the raw register).
        if !b.contains_key("return") && uses_ret(p) && exe.is_some() {
            if let Ok(l) = return_loc(&mut debugs, p) {
                b.insert("return".to_string(), return_code(l));
            }
        }
        for (key, [ty, module, chain], span) in
            casts(|mut f| p.body.iter().for_each(|s| walk_stmt(s, &mut f)))
        {
            let m = (!module.is_empty()).then(|| {
                if module.contains('/') {
                    Module::Path(module.clone())
                } else {
                    Module::Name(module.clone())
                }
            });
            // `@var("name@file")->chain` travels as a cast whose type is
            // `@var:name@file` (the checker's encoding).
            let t = match ty.strip_prefix("@var:") {
                Some(spec) => debugs
                    .of(m.as_ref())
                    .and_then(|d| d.var_access(spec, &chain))
                    .map_err(|why| CodegenError::TargetVar {
                        what: format!("`@var(\"{spec}\"){chain}`: {why}"),
                        span,
                    })?,
                None => debugs
                    .of(m.as_ref())
                    .and_then(|d| d.cast_access(&ty, &chain))
                    .map_err(|why| CodegenError::TargetVar {
                        what: format!("`@cast(..., \"{ty}\"){chain}`: {why}"),
                        span,
                    })?,
            };
            b.insert(key, t);
        }
        let e = resolve(&mut debugs, p, &entry, true)?;
        all.push((b, e));
    }
    Ok(all)
}
