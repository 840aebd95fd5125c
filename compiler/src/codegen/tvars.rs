//! `$name` resolution per probe: every target variable a probe uses is
//! looked up once in the target's DWARF ([`super::dwarf`]) for each of the
//! probe's points; all points must agree on where it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ptap_lang::checked::{CheckedScript, ExprKind, LValue, Module, PointKind, Probe, Target};
use ptap_lang::Span;

use super::dwarf::{Debug, DwarfError, VarLoc};
use super::dwarf_access::{Op, TVar};
use super::CodegenError;
use ptap_lang::walk::{walk_expr, walk_stmt};

/// Why a probe's target variable has no value: the DWARF reader's
/// reasons, and the probe's own (its points, the objects they are in).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TVarError {
    #[error(transparent)]
    Dwarf(#[from] DwarfError),
    #[error("target variables need the target executable (-c CMD) with debug information")]
    NoExecutable,
    #[error("no library `{name}` among the objects {} loads", exe.display())]
    NoLibrary { name: String, exe: PathBuf },
    #[error("only available in a kretprobe of a named function, not in {point}")]
    NotReturn { point: String },
    /// `kretprobe`: the point is a return probe (a hint is added).
    #[error(
        "only available at the entry of a named function, not in {point}{}",
        if *kretprobe { NOT_KEPT } else { "" }
    )]
    NotEntry { point: String, kretprobe: bool },
    #[error("the probe's functions return different types")]
    ReturnTypesDiffer,
    #[error("the probe's points keep it in different places")]
    DifferentPlaces,
    #[error("the probe has no point")]
    NoPoint,
}

/// The hint of [`TVarError::NotEntry`] in a return probe.
const NOT_KEPT: &str = " (a pretty-printed value is not kept from the entry: print it in a kprobe)";

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
    loaded: HashMap<PathBuf, Result<Debug, DwarfError>>,
}

impl Debugs<'_> {
    /// The debug information of the object holding a point's function.
    fn of(&mut self, module: Option<&Module>) -> Result<&Debug, TVarError> {
        let Some(exe) = self.exe else {
            return Err(TVarError::NoExecutable);
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
                    TVarError::NoLibrary {
                        name: n.clone(),
                        exe: exe.into(),
                    }
                })?,
        };
        self.loaded
            .entry(path.clone())
            .or_insert_with(|| Debug::load(&path))
            .as_ref()
            .map_err(|e| e.clone().into())
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
fn return_loc(debugs: &mut Debugs<'_>, p: &Probe) -> Result<VarLoc, TVarError> {
    let mut loc: Option<VarLoc> = None;
    for pt in &p.points {
        let Some((module, func)) = returning_function(&pt.kind) else {
            return Err(TVarError::NotReturn {
                point: pt.text.clone(),
            });
        };
        let Some((size, signed)) = debugs.of(module)?.return_type(func)? else {
            return Err(DwarfError::ReturnsVoid { func: func.into() }.into());
        };
        let l = VarLoc {
            reg: ptap_arch::regs::offset::AX,
            size,
            signed,
        };
        if loc.is_some_and(|x| x != l) {
            return Err(TVarError::ReturnTypesDiffer);
        }
        loc = Some(l);
    }
    loc.ok_or(TVarError::NoPoint)
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

/// One variable read the same way at every point of a probe: `l` (one
/// point's) must match what the earlier points gave, else `why`.
fn agree(loc: &mut Option<TVar>, l: TVar, why: TVarError) -> Result<(), TVarError> {
    if loc.as_ref().is_some_and(|x| *x != l) {
        return Err(why);
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
    let fail = |why: TVarError| CodegenError::TargetVar {
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
                return Err(fail(TVarError::NotReturn {
                    point: pt.text.clone(),
                }));
            };
            let l = debugs
                .of(module)
                .and_then(|d| Ok(d.return_access(func, name)?))
                .map_err(&fail)?;
            agree(&mut loc, l, TVarError::ReturnTypesDiffer).map_err(&fail)?;
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
                .and_then(|d| Ok(d.access_at(*a, name)?))
                .map_err(&fail)?;
            agree(&mut loc, l, TVarError::DifferentPlaces).map_err(&fail)?;
            continue;
        }
        let Some((module, func)) = entry_function(&pt.kind, at_entry) else {
            return Err(fail(TVarError::NotEntry {
                point: pt.text.clone(),
                kretprobe: matches!(pt.kind, PointKind::Kretprobe { .. }),
            }));
        };
        let l = debugs
            .of(module)
            .and_then(|d| Ok(d.entry_access(func, name)?))
            .map_err(&fail)?;
        agree(&mut loc, l, TVarError::DifferentPlaces).map_err(&fail)?;
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
                    .and_then(|d| Ok(d.var_access(spec, &chain)?))
                    .map_err(|why| CodegenError::TargetVar {
                        what: format!("`@var(\"{spec}\"){chain}`: {why}"),
                        span,
                    })?,
                None => debugs
                    .of(m.as_ref())
                    .and_then(|d| Ok(d.cast_access(&ty, &chain)?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_before() {
        let e = TVarError::NotEntry {
            point: "kretprobe(f)".into(),
            kretprobe: true,
        };
        assert_eq!(
            e.to_string(),
            "only available at the entry of a named function, not in kretprobe(f) \
             (a pretty-printed value is not kept from the entry: print it in a kprobe)"
        );
        let e = TVarError::NotEntry {
            point: "kprobe(0x10)".into(),
            kretprobe: false,
        };
        assert_eq!(
            e.to_string(),
            "only available at the entry of a named function, not in kprobe(0x10)"
        );
        let e = TVarError::NoLibrary {
            name: "libz".into(),
            exe: "/bin/true".into(),
        };
        assert_eq!(
            e.to_string(),
            "no library `libz` among the objects /bin/true loads"
        );
        let e = TVarError::from(DwarfError::ReturnsVoid { func: "f".into() });
        assert_eq!(e.to_string(), "`f` returns void");
    }
}
