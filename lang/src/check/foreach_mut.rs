//! SystemTap's rule that an array may not be changed inside a `foreach` over
//! it (its iteration order and the entries it visits would be undefined):
//! an assignment, `++`/`--`, `<<<` or `delete` on the array, directly or
//! through a function that does one, is an error with SystemTap's wording.
use std::collections::BTreeSet;

use crate::checked::{
    AggTarget, DeleteTarget, Expr, ExprKind, Function, Global, GlobalId, LValue, Probe, Stmt,
    StmtKind,
};
use crate::diag::{self, primary, secondary, Diagnostic};
use crate::span::Span;
use crate::walk::walk_expr;

/// One place that changes an array, or calls a function.
enum Event {
    Modifies(GlobalId, Span),
    Calls(usize, Span),
}

/// The changes and calls of the expressions directly under `s` (not of
/// nested statements), in order.
fn expr_events(e: &Expr, out: &mut Vec<Event>) {
    walk_expr(e, &mut |x: &Expr| match &x.kind {
        ExprKind::Assign {
            target: LValue::Element { global, .. },
            ..
        }
        | ExprKind::IncDec {
            target: LValue::Element { global, .. },
            ..
        } => out.push(Event::Modifies(*global, x.span)),
        ExprKind::Call { func, .. } => out.push(Event::Calls(*func, x.span)),
        _ => {}
    });
}

/// Every change and call in a statement list, with the `foreach` loops that
/// enclose it (array, span of the loop).
struct Walker {
    loops: Vec<(GlobalId, Span)>,
    /// (event, the loops around it)
    found: Vec<(Event, Vec<(GlobalId, Span)>)>,
}

impl Walker {
    fn push(&mut self, events: Vec<Event>) {
        for ev in events {
            self.found.push((ev, self.loops.clone()));
        }
    }

    fn expr(&mut self, e: &Expr) {
        let mut ev = Vec::new();
        expr_events(e, &mut ev);
        self.push(ev);
    }

    fn stmts(&mut self, ss: &[Stmt]) {
        for s in ss {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Expr(e) | StmtKind::Return(Some(e)) => self.expr(e),
            StmtKind::Block(b) => self.stmts(b),
            StmtKind::If { cond, then, els } => {
                self.expr(cond);
                self.stmt(then);
                if let Some(e) = els {
                    self.stmt(e);
                }
            }
            StmtKind::While { cond, body } => {
                self.expr(cond);
                self.stmt(body);
            }
            StmtKind::For {
                init,
                cond,
                step,
                body,
            } => {
                for e in [init, cond, step].into_iter().flatten() {
                    self.expr(e);
                }
                self.stmt(body);
            }
            StmtKind::Foreach(f) => {
                for x in f.limit.iter().chain(f.slice.iter().flatten()) {
                    self.expr(x);
                }
                if f.deletes {
                    // `delete a[*, k]`: one change of `a`.
                    self.push(vec![Event::Modifies(f.array, s.span)]);
                    return;
                }
                self.loops.push((f.array, s.span));
                self.stmt(&f.body);
                self.loops.pop();
            }
            StmtKind::Break | StmtKind::Continue | StmtKind::Next | StmtKind::Return(None) => {}
            StmtKind::Delete(t) => match t {
                DeleteTarget::Element { global, keys } => {
                    for k in keys {
                        self.expr(k);
                    }
                    self.push(vec![Event::Modifies(*global, s.span)]);
                }
                DeleteTarget::Global(g) => self.push(vec![Event::Modifies(*g, s.span)]),
                DeleteTarget::Local(_) => {}
            },
            StmtKind::Try { body, catch, .. } => {
                self.stmts(body);
                self.stmts(catch);
            }
            StmtKind::Aggregate { target, value } => {
                if let AggTarget::Element { global, keys } = target {
                    for k in keys {
                        self.expr(k);
                    }
                    self.push(vec![Event::Modifies(*global, s.span)]);
                }
                self.expr(value);
            }
        }
    }
}

fn events(body: &[Stmt]) -> Vec<(Event, Vec<(GlobalId, Span)>)> {
    let mut w = Walker {
        loops: Vec::new(),
        found: Vec::new(),
    };
    w.stmts(body);
    w.found
}

/// The errors of the whole script.
pub(super) fn check(
    globals: &[Global],
    functions: &[Function],
    probes: &[Probe],
) -> Vec<Diagnostic> {
    let per_func: Vec<_> = functions.iter().map(|f| events(&f.body)).collect();
    // The arrays each function changes, itself or through its callees.
    let mut mutates: Vec<BTreeSet<GlobalId>> = per_func
        .iter()
        .map(|ev| {
            ev.iter()
                .filter_map(|(e, _)| match e {
                    Event::Modifies(g, _) => Some(*g),
                    Event::Calls(..) => None,
                })
                .collect()
        })
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for (f, ev) in per_func.iter().enumerate() {
            for (e, _) in ev {
                if let Event::Calls(callee, _) = e {
                    let add: Vec<GlobalId> = mutates
                        .get(*callee)
                        .map(|s| s.difference(&mutates[f]).copied().collect())
                        .unwrap_or_default();
                    if !add.is_empty() {
                        mutates[f].extend(add);
                        changed = true;
                    }
                }
            }
        }
    }
    let bodies = probes
        .iter()
        .map(|p| &p.body)
        .chain(functions.iter().filter(|f| !f.from_stdlib).map(|f| &f.body));
    let mut out = Vec::new();
    for body in bodies {
        for (e, loops) in events(body) {
            for (array, loop_span) in loops {
                let name = globals.get(array).map_or("?", |g| g.name.as_str());
                let d = match &e {
                    Event::Modifies(g, span) if *g == array => diag::error(format!(
                        "variable `{name}` modified during `foreach` iteration"
                    ))
                    .with_labels(vec![
                        primary(*span, format!("this changes `{name}`")),
                        secondary(loop_span, format!("inside this loop over `{name}`")),
                    ]),
                    Event::Calls(f, span)
                        if mutates.get(*f).is_some_and(|s| s.contains(&array)) =>
                    {
                        let fname = functions.get(*f).map_or("?", |f| f.name.as_str());
                        diag::error(format!(
                            "function call modifies var `{name}` during `foreach` iteration"
                        ))
                        .with_labels(vec![
                            primary(*span, format!("`{fname}` changes `{name}`")),
                            secondary(loop_span, format!("inside this loop over `{name}`")),
                        ])
                    }
                    _ => continue,
                };
                out.push(d.with_notes(vec![format!(
                    "help: collect the keys to change in another array and change `{name}` after the loop"
                )]));
            }
        }
    }
    out
}
