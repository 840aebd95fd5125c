//! The checker: name resolution, type inference, probe-context checks.
//! Produces a [`CheckedScript`].
//!
//! * `resolve.rs` - globals, locals, functions (with stdlib on demand);
//! * `infer.rs`   - type slots and unification;
//! * `expr.rs` / `calls.rs` / `stmt.rs` - one `check_*` per construct;
//! * `context.rs` - what each probe point allows;
//! * `finalize.rs` - unresolved types, callee needs, writing types back.
use std::collections::HashMap;

use crate::ast;
use crate::checked::{CheckedScript, Const, Expr, Function, Probe, ProbePoint};
use crate::diag::{Diagnostic, ToDiagnostic};
use crate::options::{Limits, Options};
use crate::points::Caps;
use crate::sources::Sources;
use crate::span::Span;

mod calls;
mod context;
pub mod errors;
mod expr;
mod finalize;
mod foreach_mut;
mod infer;
mod resolve;
mod stmt;

pub use errors::CheckError;
use infer::Infer;

/// A global while checking.
struct GlobalInfo {
    name: String,
    span: Span,
    /// `Some(None)`: an array of unknown arity (declared with a capacity).
    shape: Option<(Shape, Span)>,
    value: u32,
    keys: Vec<u32>,
    init: Option<Const>,
    capacity: Option<u64>,
    read: bool,
    written: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Scalar,
    Array(Option<usize>),
}

/// What a function body uses that not every probe offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Target,
    Syscall,
}

struct FuncInfo {
    def: ast::FunctionDef,
    params: Vec<u32>,
    /// `None`: the function returns no value.
    ret: Option<u32>,
    from_stdlib: bool,
    needs: Vec<(Need, Span, String)>,
    calls: Vec<(usize, Span)>,
    checked: Option<Function>,
    local_slots: Vec<u32>,
}

/// A checked probe with what finalize needs.
struct ProbeData {
    probe: Probe,
    /// N of `begin(N)`/`end(N)`: begin and end probes run in order of N,
    /// then in script order.
    priority: i64,
    calls: Vec<(usize, Span)>,
    points: Vec<(ProbePoint, Caps)>,
    local_slots: Vec<u32>,
}

struct LocalInfo {
    name: String,
    slot: u32,
    span: Span,
}

enum ScopeKind {
    Probe { points: Vec<(ProbePoint, Caps)> },
    Function(usize),
}

/// The body being checked.
struct Scope {
    kind: ScopeKind,
    locals: Vec<LocalInfo>,
    names: HashMap<String, usize>,
    loops: u32,
    in_entry: bool,
    /// Inside `@defined(...)`: a return probe's `$x` stays as it is (the
    /// compiler asks whether it resolves at the entry).
    in_defined: bool,
    entry_exprs: Vec<Expr>,
    /// Calls made from this probe body: (function, call site).
    calls: Vec<(usize, Span)>,
}

pub(crate) struct Checker<'a> {
    sources: &'a mut Sources,
    opts: &'a Options,
    errors: Vec<Diagnostic>,
    infer: Infer,
    globals: Vec<GlobalInfo>,
    global_names: HashMap<String, usize>,
    funcs: Vec<FuncInfo>,
    func_names: HashMap<String, usize>,
    stdlib_asts: HashMap<usize, ast::Script>,
    probes: Vec<ProbeData>,
    warnings: Vec<Diagnostic>,
    /// Deferred "must not be statistics" checks: (slot, span, name).
    not_stats: Vec<(u32, Span, String)>,
}

/// Checks a parsed script (stdlib functions are loaded into `sources` on demand).
pub fn check(
    sources: Sources,
    script: ast::Script,
    opts: &Options,
) -> Result<CheckedScript, (Sources, Vec<Diagnostic>)> {
    let mut sources = sources;
    let limits = match Limits::from_defines(&opts.defines) {
        Ok(l) => l,
        Err(errs) => {
            return Err((
                sources,
                errs.iter().map(ToDiagnostic::to_diagnostic).collect(),
            ));
        }
    };
    let mut c = Checker {
        sources: &mut sources,
        opts,
        errors: Vec::new(),
        infer: Infer::default(),
        globals: Vec::new(),
        global_names: HashMap::new(),
        funcs: Vec::new(),
        func_names: HashMap::new(),
        stdlib_asts: HashMap::new(),
        probes: Vec::new(),
        not_stats: Vec::new(),
        warnings: Vec::new(),
    };
    let mut probe_defs = Vec::new();
    let (mut items, alias_errors) = crate::alias::expand(script.items);
    c.errors.extend(alias_errors);
    let tapset_errors = crate::syscall_vars::add(&mut items, c.sources);
    c.errors.extend(tapset_errors);
    for item in items {
        match item {
            ast::Item::Global(g) => c.declare_global(g),
            ast::Item::Function(f) => c.declare_function(f, false),
            ast::Item::Probe(p) => probe_defs.push(p),
        }
    }
    if probe_defs.is_empty() {
        c.err(CheckError::NoProbes);
    }
    for p in probe_defs {
        c.check_probe(p);
    }
    c.check_pending_functions();
    let parts = c.finish();
    let mut errors = std::mem::take(&mut c.errors);
    if let (Some((globals, functions, probes)), true) = (&parts, errors.is_empty()) {
        errors.extend(foreach_mut::check(globals, functions, probes));
    }
    let warnings = std::mem::take(&mut c.warnings);
    drop(c);
    match parts {
        Some((globals, functions, probes)) if errors.is_empty() => Ok(CheckedScript {
            sources,
            globals,
            functions,
            probes,
            limits,
            guru: opts.guru,
            warnings,
        }),
        _ => Err((sources, errors)),
    }
}

impl Checker<'_> {
    fn err(&mut self, e: CheckError) {
        self.errors.push(e.to_diagnostic());
    }

    fn report(&mut self, r: Result<(), CheckError>) {
        if let Err(e) = r {
            self.err(e);
        }
    }

    /// Checks the bodies of all declared functions not yet checked (the list
    /// grows while stdlib functions are loaded).
    fn check_pending_functions(&mut self) {
        let mut i = 0;
        while i < self.funcs.len() {
            if self.funcs[i].checked.is_none() {
                self.check_function(i);
            }
            i += 1;
        }
    }

    fn check_probe(&mut self, p: ast::ProbeDef) {
        let mut points = Vec::new();
        for spec in &p.points {
            let text = self.sources.slice(spec.span).to_string();
            match crate::points::resolve(spec, &text) {
                Ok(pt) => {
                    let caps = Caps::of(&pt.kind);
                    points.push((pt, caps));
                }
                Err(e) => self.errors.push(e.to_diagnostic()),
            }
        }
        if points.len() != p.points.len() {
            return;
        }
        let mut scope = Scope::new(ScopeKind::Probe {
            points: points.clone(),
        });
        let body = self.check_block(&mut scope, &p.body);
        let (locals, local_slots) = self.locals_of(&scope);
        self.never_assigned(&p.body, &locals, &[], &p.points);
        let probe = Probe {
            points: points.iter().map(|(pt, _)| pt.clone()).collect(),
            locals,
            body,
            entry_exprs: std::mem::take(&mut scope.entry_exprs),
            span: p.span,
        };
        let priority = p
            .points
            .iter()
            .find(|s| matches!(s.components[0].name.name.as_str(), "begin" | "end"))
            .and_then(crate::points_stap::priority)
            .unwrap_or(0);
        self.probes.push(ProbeData {
            priority,
            probe,
            calls: scope.calls,
            points,
            local_slots,
        });
    }

    fn check_function(&mut self, id: usize) {
        let def = self.funcs[id].def.clone();
        let mut scope = Scope::new(ScopeKind::Function(id));
        for (i, p) in def.params.iter().enumerate() {
            let slot = self.funcs[id].params[i];
            if scope.names.contains_key(&p.name.name) {
                let first = scope.locals[scope.names[&p.name.name]].span;
                self.err(CheckError::Duplicate {
                    span: p.name.span,
                    what: "parameter",
                    name: p.name.name.clone(),
                    first,
                });
            }
            scope.names.insert(p.name.name.clone(), scope.locals.len());
            scope.locals.push(LocalInfo {
                name: p.name.name.clone(),
                slot,
                span: p.name.span,
            });
        }
        let body = self.check_block(&mut scope, &def.body);
        let (locals, local_slots) = self.locals_of(&scope);
        if !self.funcs[id].from_stdlib {
            let params: Vec<String> = def.params.iter().map(|p| p.name.name.clone()).collect();
            self.never_assigned(&def.body, &locals, &params, &[]);
        }
        let f = &mut self.funcs[id];
        f.local_slots = local_slots;
        f.checked = Some(Function {
            name: def.name.name.clone(),
            params: def.params.len(),
            locals,
            ret: crate::checked::Type::Void,
            body,
            span: def.span,
            from_stdlib: f.from_stdlib,
            used: false,
        });
    }

    /// Locals with placeholder types (finalize writes the inferred ones).
    /// SystemTap's "never-assigned local variable": a local read but never
    /// given a value is a warning (it reads as 0 or ""), or an error in a
    /// `syscall.*` probe when its name is close to a tapset variable.
    fn never_assigned(
        &mut self,
        body: &ast::Block,
        locals: &[crate::checked::Local],
        params: &[String],
        points: &[ast::PointSpec],
    ) {
        let mut read = std::collections::HashSet::new();
        let mut set = std::collections::HashSet::new();
        for s in &body.stmts {
            crate::syscall_vars::names_in_stmt(s, &mut read, &mut set);
        }
        let syscall = !points.is_empty()
            && points
                .iter()
                .all(|p| p.components[0].name.name == "syscall");
        let mut tapset: Vec<&str> = vec!["name", "argstr", "retstr"];
        if syscall {
            tapset.extend(crate::syscall_vars::all_arg_names());
        }
        for l in locals {
            if !read.contains(&l.name) || set.contains(&l.name) || params.contains(&l.name) {
                continue;
            }
            let similar = if syscall {
                crate::diag::suggest(&l.name, tapset.iter().copied())
            } else {
                None
            };
            match similar {
                Some(s) => self.errors.push(
                    crate::diag::error(format!(
                        "local variable `{}` is never assigned; did you mean the syscall tapset variable `{s}`?",
                        l.name
                    ))
                    .with_labels(vec![crate::diag::primary(l.span, "never assigned")]),
                ),
                None => self.warnings.push(
                    Diagnostic::warning()
                        .with_message(format!(
                            "never-assigned local variable `{}` (it reads as 0 or \"\")",
                            l.name
                        ))
                        .with_labels(vec![crate::diag::primary(l.span, "never assigned")]),
                ),
            }
        }
    }

    fn locals_of(&mut self, scope: &Scope) -> (Vec<crate::checked::Local>, Vec<u32>) {
        let locals = scope
            .locals
            .iter()
            .map(|l| crate::checked::Local {
                name: l.name.clone(),
                ty: crate::checked::ScalarType::Long,
                span: l.span,
            })
            .collect();
        (locals, scope.locals.iter().map(|l| l.slot).collect())
    }
}

impl Scope {
    fn new(kind: ScopeKind) -> Scope {
        Scope {
            kind,
            locals: Vec::new(),
            names: HashMap::new(),
            loops: 0,
            in_entry: false,
            in_defined: false,
            entry_exprs: Vec::new(),
            calls: Vec::new(),
        }
    }
}
