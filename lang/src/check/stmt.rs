//! Statements: one `check` per construct.
use super::infer::{ty_of, Ty};
use super::{CheckError, Checker, Scope, ScopeKind, Shape};
use crate::ast::{self, ExprKind as A, SortMark, StmtKind as S};
use crate::checked::{DeleteTarget, Foreach, Sort, SortBy, StatOp, Stmt, StmtKind, Type};
use crate::span::Span;

impl Checker<'_> {
    pub(super) fn check_block(&mut self, scope: &mut Scope, b: &ast::Block) -> Vec<Stmt> {
        b.stmts.iter().map(|s| self.stmt(scope, s)).collect()
    }

    fn cond(&mut self, scope: &mut Scope, e: &ast::Expr) -> crate::checked::Expr {
        self.expect(scope, e, Type::Long)
    }

    fn body(&mut self, scope: &mut Scope, s: &ast::Stmt) -> Box<Stmt> {
        scope.loops += 1;
        let b = self.stmt(scope, s);
        scope.loops -= 1;
        Box::new(b)
    }

    fn stmt(&mut self, scope: &mut Scope, s: &ast::Stmt) -> Stmt {
        let span = s.span;
        let kind = match &s.kind {
            S::Expr(e) => StmtKind::Expr(self.expr(scope, e)),
            S::Block(b) => StmtKind::Block(self.check_block(scope, b)),
            S::If { cond, then, els } => StmtKind::If {
                cond: self.cond(scope, cond),
                then: Box::new(self.stmt(scope, then)),
                els: els.as_ref().map(|e| Box::new(self.stmt(scope, e))),
            },
            S::While { cond, body } => StmtKind::While {
                cond: self.cond(scope, cond),
                body: self.body(scope, body),
            },
            S::For {
                init,
                cond,
                step,
                body,
            } => StmtKind::For {
                init: init.as_ref().map(|e| self.expr(scope, e)),
                cond: cond.as_ref().map(|e| self.cond(scope, e)),
                step: step.as_ref().map(|e| self.expr(scope, e)),
                body: self.body(scope, body),
            },
            S::Foreach(f) => match self.foreach(scope, f, span) {
                Some(f) => StmtKind::Foreach(Box::new(f)),
                None => StmtKind::Block(vec![]),
            },
            S::Break | S::Continue => {
                let what = if matches!(s.kind, S::Break) {
                    "break"
                } else {
                    "continue"
                };
                if scope.loops == 0 {
                    self.err(CheckError::NotInLoop { span, what });
                }
                if what == "break" {
                    StmtKind::Break
                } else {
                    StmtKind::Continue
                }
            }
            S::Next => {
                if let ScopeKind::Function(_) = scope.kind {
                    self.err(CheckError::OnlyInProbe {
                        span,
                        what: "`next`".into(),
                        help: "a function ends with `return`",
                    });
                }
                StmtKind::Next
            }
            S::Return(e) => self.ret(scope, e.as_ref(), span),
            S::Delete(e) if is_slice(e) => self.delete_slice(scope, e, span),
            S::Delete(e) => match self.delete(scope, e) {
                Some(t) => StmtKind::Delete(t),
                None => StmtKind::Block(vec![]),
            },
            S::Try { body, var, catch } => {
                let body = self.check_block(scope, body);
                let var = var.as_ref().map(|v| {
                    let l = self.local(scope, &v.name, v.span);
                    let slot = scope.locals[l].slot;
                    let r = self.infer.unify(Ty::V(slot), Ty::K(Type::String), v.span);
                    self.report(r);
                    l
                });
                let catch = self.check_block(scope, catch);
                StmtKind::Try { body, var, catch }
            }
            S::Aggregate { target, value } => {
                let v = self.expect(scope, value, Type::Long);
                match self.agg_target(scope, target, span) {
                    Some(t) => {
                        let g = match &t {
                            crate::checked::AggTarget::Global(g)
                            | crate::checked::AggTarget::Element { global: g, .. } => *g,
                        };
                        self.globals[g].written = true;
                        StmtKind::Aggregate {
                            target: t,
                            value: v,
                        }
                    }
                    None => StmtKind::Expr(v),
                }
            }
        };
        Stmt { kind, span }
    }

    fn ret(&mut self, scope: &mut Scope, e: Option<&ast::Expr>, span: Span) -> StmtKind {
        let ScopeKind::Function(f) = scope.kind else {
            self.err(CheckError::ReturnValue {
                span,
                why: "`return` in a probe handler (use `next` to leave a probe)",
            });
            return StmtKind::Next;
        };
        match (e, self.funcs[f].ret) {
            (Some(e), Some(slot)) => {
                let x = self.expr(scope, e);
                if x.slot.is_none() && matches!(x.ty, Type::Void | Type::Hist) {
                    // Usually `return` then a call on the next line.
                    self.err(CheckError::ReturnValue {
                        span,
                        why: "`return` takes the value of what follows it, which has none (write `return;` to return nothing)",
                    });
                    return StmtKind::Return(None);
                }
                let r = self.infer.unify(ty_of(&x), Ty::V(slot), x.span);
                self.report(r);
                StmtKind::Return(Some(x))
            }
            (None, Some(_)) => {
                self.err(CheckError::ReturnValue {
                    span,
                    why: "this function returns a value: `return` needs one",
                });
                StmtKind::Return(None)
            }
            (Some(_), None) => StmtKind::Return(None),
            (None, None) => StmtKind::Return(None),
        }
    }

    fn delete(&mut self, scope: &mut Scope, e: &ast::Expr) -> Option<DeleteTarget> {
        match &e.kind {
            A::Name(id) => {
                if let Some(&l) = scope.names.get(&id.name) {
                    return Some(DeleteTarget::Local(l));
                }
                if let Some(g) = self.global(&id.name) {
                    self.globals[g].written = true;
                    if self.globals[g].shape.is_none() {
                        self.use_shape(g, Shape::Scalar, e.span);
                    }
                    return Some(DeleteTarget::Global(g));
                }
                Some(DeleteTarget::Local(self.local(scope, &id.name, id.span)))
            }
            A::Index { .. } => match self.lvalue(scope, e)? {
                (crate::checked::LValue::Element { global, keys }, _) => {
                    Some(DeleteTarget::Element { global, keys })
                }
                _ => None,
            },
            _ => {
                self.err(CheckError::NotAssignable { span: e.span });
                None
            }
        }
    }

    /// `delete a[*, k]`: a loop over the slice that deletes each entry.
    fn delete_slice(&mut self, scope: &mut Scope, e: &ast::Expr, span: Span) -> StmtKind {
        let A::Index { array, keys } = &e.kind else {
            return StmtKind::Block(vec![]);
        };
        let node = |kind: A| ast::Expr {
            kind,
            span,
            depth: 0,
        };
        let vars: Vec<ast::Ident> = (0..keys.len())
            .map(|i| ast::Ident {
                name: format!("__delete{}_k{i}", span.start),
                span,
            })
            .collect();
        let body = ast::Stmt {
            kind: S::Delete(node(A::Index {
                array: array.clone(),
                keys: vars.iter().map(|v| node(A::Name(v.clone()))).collect(),
            })),
            span,
            depth: 0,
        };
        let f = ast::Foreach {
            value: None,
            keys: vars
                .into_iter()
                .map(|name| ast::LoopVar { name, sort: None })
                .collect(),
            bracketed: true,
            array: array.clone(),
            array_sort: None,
            slice: Some(keys.clone()),
            array_agg: None,
            limit: None,
            body: Box::new(body),
        };
        scope.loops += 1;
        let checked = self.foreach(scope, &f, span);
        scope.loops -= 1;
        match checked {
            Some(mut f) => {
                f.deletes = true;
                StmtKind::Foreach(Box::new(f))
            }
            None => StmtKind::Block(vec![]),
        }
    }

    fn foreach(&mut self, scope: &mut Scope, f: &ast::Foreach, span: Span) -> Option<Foreach> {
        let Some(g) = self.global(&f.array.name) else {
            self.err(CheckError::LocalArray {
                span: f.array.span,
                name: f.array.name.clone(),
            });
            return None;
        };
        self.globals[g].read = true;
        // Sort mark: at most one.
        let mut sort: Option<(Sort, Span)> = None;
        let mut marks: Vec<(SortBy, SortMark, Span)> = Vec::new();
        if let Some(v) = &f.value {
            if let Some((m, s)) = v.sort {
                marks.push((SortBy::Value, m, s));
            }
        }
        for (i, k) in f.keys.iter().enumerate() {
            if let Some((m, s)) = k.sort {
                marks.push((SortBy::Key(i), m, s));
            }
        }
        let by_value = match &f.array_agg {
            None => SortBy::Value,
            Some(a) => {
                let op = match a.name.as_str() {
                    "count" => Some(StatOp::Count),
                    "sum" => Some(StatOp::Sum),
                    "min" => Some(StatOp::Min),
                    "max" => Some(StatOp::Max),
                    "avg" => Some(StatOp::Avg),
                    _ => None,
                };
                match op {
                    Some(op) => {
                        let vs = self.globals[g].value;
                        let r = self.infer.unify(Ty::V(vs), Ty::K(Type::Stats), a.span);
                        self.report(r);
                        SortBy::Agg(op)
                    }
                    None => {
                        self.errors.push(
                            crate::diag::error(format!(
                                "`@{}` cannot sort a foreach; use `@count`, `@sum`, `@min`, `@max` or `@avg`",
                                a.name
                            ))
                            .with_labels(vec![crate::diag::primary(a.span, "here")]),
                        );
                        SortBy::Value
                    }
                }
            }
        };
        if let Some((m, s)) = f.array_sort {
            marks.push((by_value, m, s));
        }
        marks.sort_by_key(|m| m.2.start);
        for (by, m, s) in marks {
            match sort {
                Some((_, first)) => self.err(CheckError::TwoSortMarks { span: s, first }),
                None => {
                    sort = Some((
                        Sort {
                            by,
                            descending: m == SortMark::Desc,
                        },
                        s,
                    ))
                }
            }
        }
        // Keys: the array's arity must match.
        let n = f.keys.len();
        let arity_ok = match self.globals[g].shape {
            Some((Shape::Array(Some(a)), _)) if a != n => {
                self.err(CheckError::ForeachArity {
                    span: f.array.span,
                    array: f.array.name.clone(),
                    expected: a,
                    found: n,
                });
                false
            }
            _ => self.use_shape(g, Shape::Array(Some(n)), f.array.span),
        };
        let mut keys = Vec::new();
        for (i, k) in f.keys.iter().enumerate() {
            let l = self.local(scope, &k.name.name, k.name.span);
            if arity_ok {
                let (ls, ks) = (scope.locals[l].slot, self.globals[g].keys[i]);
                let r = self.infer.unify(Ty::V(ls), Ty::V(ks), k.name.span);
                self.report(r);
            }
            keys.push(l);
        }
        let value = f.value.as_ref().map(|v| {
            let l = self.local(scope, &v.name.name, v.name.span);
            let (ls, vs) = (scope.locals[l].slot, self.globals[g].value);
            let r = self.infer.unify(Ty::V(ls), Ty::V(vs), v.name.span);
            self.report(r);
            self.not_stats.push((vs, v.name.span, f.array.name.clone()));
            l
        });
        let limit = f.limit.as_ref().map(|e| self.expect(scope, e, Type::Long));
        let mut slice = Vec::new();
        if let Some(sl) = &f.slice {
            if sl.len() != n && arity_ok {
                let at = sl
                    .first()
                    .map_or(f.array.span, |k| k.span)
                    .to(sl.last().map_or(f.array.span, |k| k.span));
                self.errors.push(
                    crate::diag::error(format!(
                        "array `{}` has {n} key(s) but the slice gives {}",
                        f.array.name,
                        sl.len()
                    ))
                    .with_labels(vec![crate::diag::primary(
                        at,
                        "one key or `*` per key of the array",
                    )]),
                );
            }
            for (i, k) in sl.iter().enumerate() {
                if matches!(k.kind, A::Wildcard) {
                    slice.push(None);
                    continue;
                }
                let x = self.value(scope, k);
                if let Some(&ks) = self.globals[g].keys.get(i) {
                    self.unify_report(ty_of(&x), Ty::V(ks), x.span);
                }
                slice.push(Some(x));
            }
            if slice.iter().all(Option::is_none) {
                slice.clear();
            }
        }
        let body = *self.body(scope, &f.body);
        let _ = span;
        Some(Foreach {
            array: g,
            keys,
            value,
            sort: sort.map(|s| s.0),
            limit,
            slice,
            deletes: false,
            body,
        })
    }
}

/// `delete a[..., *, ...]`.
fn is_slice(e: &ast::Expr) -> bool {
    matches!(&e.kind, A::Index { keys, .. } if keys.iter().any(|k| matches!(k.kind, A::Wildcard)))
}
