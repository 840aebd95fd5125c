//! `$name` resolution per probe: every target variable a probe uses is
//! looked up once in the target's DWARF ([`super::dwarf`]) for each of the
//! probe's points; all points must agree on where it is.

use std::collections::HashMap;
use std::path::Path;

use ptap_lang::checked::{CheckedScript, ExprKind, LValue, PointKind, Probe, Target};
use ptap_lang::Span;

use super::dwarf::{Debug, VarLoc};
use super::CodegenError;
use ptap_lang::walk::{walk_expr, walk_stmt};

/// Per probe: (variables of its body, variables of its `@entry` expressions).
pub(crate) type ProbeVars = Vec<(HashMap<String, VarLoc>, HashMap<String, VarLoc>)>;

fn used(exprs: impl FnOnce(&mut dyn FnMut(&ptap_lang::checked::Expr))) -> Vec<(String, Span)> {
    let mut out: Vec<(String, Span)> = Vec::new();
    exprs(&mut |e| {
        let name = match &e.kind {
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

/// The function whose entry a point probes, for target variables.
fn entry_function(kind: &PointKind, at_entry: bool) -> Option<&str> {
    let t = match kind {
        PointKind::Kprobe { target } | PointKind::Jprobe { target } if !at_entry => target,
        PointKind::Kretprobe { target, .. } if at_entry => target,
        _ => return None,
    };
    match t {
        Target::Symbol {
            module: None,
            name,
            offset: 0,
        } => Some(name),
        _ => None,
    }
}

/// The function a kretprobe point returns from.
fn returning_function(kind: &PointKind) -> Option<&str> {
    match kind {
        PointKind::Kretprobe {
            target:
                Target::Symbol {
                    module: None,
                    name,
                    offset: 0,
                },
            ..
        } => Some(name),
        _ => None,
    }
}

/// `$return` (and `ret` typed by DWARF): the return register with the
/// size and signedness of the function's return type, the same at every
/// point of the probe.
fn return_loc(d: &Debug, p: &Probe) -> Result<VarLoc, String> {
    let mut loc: Option<VarLoc> = None;
    for pt in &p.points {
        let Some(func) = returning_function(&pt.kind) else {
            return Err(format!(
                "only available in a kretprobe of a named function, not in {}",
                pt.text
            ));
        };
        let Some((size, signed)) = d.return_type(func)? else {
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

fn resolve(
    debug: &mut Option<Result<Debug, String>>,
    exe: Option<&Path>,
    p: &Probe,
    vars: &[(String, Span)],
    at_entry: bool,
) -> Result<HashMap<String, VarLoc>, CodegenError> {
    let mut out = HashMap::new();
    for (name, span) in vars {
        let fail = |why: String| CodegenError::TargetVar {
            what: format!("`${name}`: {why}"),
            span: *span,
        };
        let Some(exe) = exe else {
            return Err(fail(
                "target variables need the target executable (-c CMD) with debug information"
                    .into(),
            ));
        };
        let d = match debug.get_or_insert_with(|| Debug::load(exe)) {
            Ok(d) => d,
            Err(e) => return Err(fail(e.clone())),
        };
        if name == "return" && !at_entry {
            let l = return_loc(d, p).map_err(fail)?;
            out.insert(name.clone(), l);
            continue;
        }
        let mut loc: Option<VarLoc> = None;
        for pt in &p.points {
            let Some(func) = entry_function(&pt.kind, at_entry) else {
                return Err(fail(format!(
                    "only available at the entry of a function of the main executable, not in {}",
                    pt.text
                )));
            };
            let l = d.entry_var(func, name).map_err(&fail)?;
            if loc.is_some_and(|x| x != l) {
                return Err(fail(
                    "the probe's points keep it in different places".into(),
                ));
            }
            loc = Some(l);
        }
        if let Some(l) = loc {
            out.insert(name.clone(), l);
        }
    }
    Ok(out)
}

/// Resolve every `$name` of every probe against `exe`'s DWARF.
pub(crate) fn resolve_all(
    script: &CheckedScript,
    exe: Option<&Path>,
) -> Result<ProbeVars, CodegenError> {
    let mut debug = None;
    let mut all = Vec::new();
    for p in &script.probes {
        let body = used(|mut f| p.body.iter().for_each(|s| walk_stmt(s, &mut f)));
        let entry = used(|mut f| p.entry_exprs.iter().for_each(|e| walk_expr(e, &mut f)));
        let mut b = resolve(&mut debug, exe, p, &body, false)?;
        // `ret` of a kretprobe takes the function's DWARF return type when
        // the target has debug information for it (else the raw register).
        if !b.contains_key("return") && uses_ret(p) {
            if let Some(exe) = exe {
                if let Ok(d) = debug.get_or_insert_with(|| Debug::load(exe)) {
                    if let Ok(l) = return_loc(d, p) {
                        b.insert("return".to_string(), l);
                    }
                }
            }
        }
        let e = resolve(&mut debug, exe, p, &entry, true)?;
        all.push((b, e));
    }
    Ok(all)
}
