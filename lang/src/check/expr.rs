//! Expressions: one `check` function per construct.
use super::infer::{mk, ty_of, Ty};
use super::resolve::is_reserved;
use super::{CheckError, Checker, Scope, Shape};
use crate::ast::{self, BinOp, ExprKind as A, Ident};
use crate::checked::{Const, ContextValue, Expr, ExprKind, LValue, Type};
use crate::options::dollar_arg;
use crate::span::Span;

impl Checker<'_> {
    pub(super) fn unify_report(&mut self, a: Ty, b: Ty, span: Span) {
        let r = self.infer.unify(a, b, span);
        self.report(r);
    }

    /// An expression used as a value (not void, not a histogram).
    pub(super) fn value(&mut self, scope: &mut Scope, e: &ast::Expr) -> Expr {
        let x = self.expr(scope, e);
        if x.slot.is_none() && matches!(x.ty, Type::Void | Type::Hist) {
            let what = match &e.kind {
                A::Call { name, .. } => format!("`{}()`", name.name),
                A::AtCall { name, .. } => format!("`@{}(...)`", name.name),
                _ => "this expression".to_string(),
            };
            self.err(CheckError::NoValue { span: e.span, what });
            return mk(x.kind, Ty::K(Type::Long), x.span);
        }
        x
    }

    /// A value that must have type `want`.
    pub(super) fn expect(&mut self, scope: &mut Scope, e: &ast::Expr, want: Type) -> Expr {
        let x = self.value(scope, e);
        self.unify_report(ty_of(&x), Ty::K(want), x.span);
        x
    }

    pub(super) fn expr(&mut self, scope: &mut Scope, e: &ast::Expr) -> Expr {
        let span = e.span;
        match &e.kind {
            A::Num(n) => mk(ExprKind::Long(*n), Ty::K(Type::Long), span),
            A::Wildcard => {
                self.errors.push(
                    crate::diag::error("`*` (any key) is only allowed in `delete a[*, k]` and `foreach (... in a[*, k])`")
                        .with_labels(vec![crate::diag::primary(span, "not a value")]),
                );
                mk(ExprKind::Long(0), Ty::K(Type::Long), span)
            }
            A::Str(s) => mk(ExprKind::Str(s.clone()), Ty::K(Type::String), span),
            A::Name(id) => self.name(scope, id),
            A::Index { array, keys } => self.index(scope, array, keys, span),
            A::Call { name, args } => self.call(scope, name, args, span),
            A::AtCall { name, args } => self.at_call(scope, name, args, span),
            A::TargetVar(id) => {
                // SystemTap's `syscall.*.return` tapset names the result
                // `$return`: here it is the system call's `ret`.
                let syscall_returns = matches!(&scope.kind, super::ScopeKind::Probe { points }
                    if !points.is_empty() && points.iter().all(|(_, c)| c.syscall && c.ret));
                if id.name == "return" && syscall_returns {
                    self.need_ret(scope, span);
                    return mk(
                        ExprKind::Context(ContextValue::Ret),
                        Ty::K(Type::Long),
                        span,
                    );
                }
                self.need_target_var(scope, span, &id.name);
                // `$s$`, `$p->name$$` and `$$parms` are strings (SystemTap's
                // pretty printing); the others are numbers.
                let ty = if crate::checked::target_var_is_string(&id.name) {
                    Type::String
                } else {
                    Type::Long
                };
                let x = mk(ExprKind::TargetVar(id.name.clone()), Ty::K(ty), span);
                // As in SystemTap, `$name` in a kretprobe is its value at the
                // function's entry (`@entry($name)`); `$return` is the result.
                let returns = match &scope.kind {
                    super::ScopeKind::Probe { points } => {
                        !points.is_empty()
                            && points.iter().all(|(p, c)| {
                                matches!(p.kind, crate::checked::PointKind::Kretprobe { .. })
                                    && c.ret
                                    && !c.syscall
                            })
                    }
                    super::ScopeKind::Function(_) => false,
                };
                let base = id.name.split(['-', '[', '$']).next().unwrap_or_default();
                if returns && base != "return" && !scope.in_entry && !scope.in_defined {
                    scope.entry_exprs.push(x);
                    return mk(
                        ExprKind::Entry(scope.entry_exprs.len() - 1),
                        Ty::K(ty),
                        span,
                    );
                }
                x
            }
            A::ScriptArg { n, as_string } => self.script_arg(*n, *as_string, span),
            A::Unary { op, operand } => {
                let x = self.expect(scope, operand, Type::Long);
                mk(
                    ExprKind::Unary {
                        op: *op,
                        operand: Box::new(x),
                    },
                    Ty::K(Type::Long),
                    span,
                )
            }
            A::Binary { op, lhs, rhs } => self.binary(scope, *op, lhs, rhs, span),
            A::Ternary { cond, then, els } => {
                let c = self.expect(scope, cond, Type::Long);
                let t = self.value(scope, then);
                let f = self.value(scope, els);
                self.unify_report(ty_of(&t), ty_of(&f), span);
                let ty = ty_of(&t);
                let kind = ExprKind::Ternary {
                    cond: Box::new(c),
                    then: Box::new(t),
                    els: Box::new(f),
                };
                mk(kind, ty, span)
            }
            A::Assign { op, target, value } => self.assign(scope, *op, target, value, span),
            A::IncDec { op, prefix, target } => {
                let Some((lv, ty)) = self.lvalue(scope, target) else {
                    return mk(ExprKind::Long(0), Ty::K(Type::Long), span);
                };
                self.unify_report(ty, Ty::K(Type::Long), span);
                mk(
                    ExprKind::IncDec {
                        target: lv,
                        op: *op,
                        prefix: *prefix,
                    },
                    Ty::K(Type::Long),
                    span,
                )
            }
            A::In { keys, array } => {
                let keys: Vec<Expr> = keys.iter().map(|k| self.value(scope, k)).collect();
                let Some(g) = self.global(&array.name) else {
                    self.err(CheckError::LocalArray {
                        span: array.span,
                        name: array.name.clone(),
                    });
                    return mk(ExprKind::Long(0), Ty::K(Type::Long), span);
                };
                self.globals[g].read = true;
                self.array_keys(g, &keys, span);
                mk(ExprKind::In { global: g, keys }, Ty::K(Type::Long), span)
            }
        }
    }

    fn name(&mut self, scope: &mut Scope, id: &Ident) -> Expr {
        let span = id.span;
        let n = id.name.as_str();
        if n == "ret" {
            self.need_ret(scope, span);
            return mk(
                ExprKind::Context(ContextValue::Ret),
                Ty::K(Type::Long),
                span,
            );
        }
        if is_reserved(n) {
            self.need_arg(scope, span, n);
            let k = n.as_bytes()[3] - b'0';
            return mk(
                ExprKind::Context(ContextValue::Arg(k)),
                Ty::K(Type::Long),
                span,
            );
        }
        if let Some(&l) = scope.names.get(n) {
            return mk(ExprKind::Local(l), Ty::V(scope.locals[l].slot), span);
        }
        if let Some(g) = self.global(n) {
            self.use_shape(g, Shape::Scalar, span);
            self.globals[g].read = true;
            let slot = self.globals[g].value;
            self.not_stats.push((slot, span, n.to_string()));
            return mk(ExprKind::Global(g), Ty::V(slot), span);
        }
        let l = self.local(scope, n, span);
        mk(ExprKind::Local(l), Ty::V(scope.locals[l].slot), span)
    }

    /// Checks `keys` against array `g` (arity and key types).
    pub(super) fn array_keys(&mut self, g: usize, keys: &[Expr], span: Span) -> bool {
        if !self.use_shape(g, Shape::Array(Some(keys.len())), span) {
            return false;
        }
        for (i, k) in keys.iter().enumerate() {
            let slot = self.globals[g].keys[i];
            self.unify_report(ty_of(k), Ty::V(slot), k.span);
        }
        true
    }

    fn index(&mut self, scope: &mut Scope, array: &Ident, keys: &[ast::Expr], span: Span) -> Expr {
        let keys: Vec<Expr> = keys.iter().map(|k| self.value(scope, k)).collect();
        let Some(g) = self.global(&array.name) else {
            self.err(CheckError::LocalArray {
                span: array.span,
                name: array.name.clone(),
            });
            return mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        };
        self.array_keys(g, &keys, span);
        self.globals[g].read = true;
        let slot = self.globals[g].value;
        self.not_stats.push((slot, span, array.name.clone()));
        mk(ExprKind::Element { global: g, keys }, Ty::V(slot), span)
    }

    fn script_arg(&mut self, n: u32, as_string: bool, span: Span) -> Expr {
        if n == 0 {
            // `$#` (a long) and `@#` (a string): the number of arguments.
            let count = self.opts.args.len();
            return if as_string {
                mk(ExprKind::Str(count.to_string()), Ty::K(Type::String), span)
            } else {
                mk(ExprKind::Long(count as i64), Ty::K(Type::Long), span)
            };
        }
        let Some(text) = self.opts.args.get(n as usize - 1) else {
            self.err(CheckError::MissingScriptArg {
                span,
                n,
                given: self.opts.args.len(),
            });
            // A fresh slot, so that the missing value causes no second error.
            let slot = self.infer.slot(format!("script argument {n}"));
            return mk(ExprKind::Long(0), Ty::V(slot), span);
        };
        if as_string {
            return mk(ExprKind::Str(text.clone()), Ty::K(Type::String), span);
        }
        match dollar_arg(text) {
            Const::Long(v) => mk(ExprKind::Long(v), Ty::K(Type::Long), span),
            Const::Str(s) => mk(ExprKind::Str(s), Ty::K(Type::String), span),
        }
    }

    fn binary(
        &mut self,
        scope: &mut Scope,
        op: BinOp,
        l: &ast::Expr,
        r: &ast::Expr,
        span: Span,
    ) -> Expr {
        use BinOp::*;
        let (lhs, rhs, ty) = match op {
            Concat => (
                self.expect(scope, l, Type::String),
                self.expect(scope, r, Type::String),
                Type::String,
            ),
            Lt | Gt | Le | Ge | Eq | Ne => {
                let x = self.value(scope, l);
                let y = self.value(scope, r);
                self.unify_report(ty_of(&y), ty_of(&x), y.span);
                (x, y, Type::Long)
            }
            Match | NotMatch => {
                let subject = self.expect(scope, l, Type::String);
                let A::Str(pattern) = &r.kind else {
                    self.err(CheckError::RegexNotLiteral { span: r.span });
                    return mk(ExprKind::Long(0), Ty::K(Type::Long), span);
                };
                let kind = ExprKind::Regex {
                    negate: op == NotMatch,
                    subject: Box::new(subject),
                    pattern: pattern.clone(),
                };
                return mk(kind, Ty::K(Type::Long), span);
            }
            _ => {
                if matches!(op, Div | Mod) && matches!(r.kind, A::Num(0)) {
                    self.err(CheckError::DivisionByZero { span: r.span });
                }
                (
                    self.expect(scope, l, Type::Long),
                    self.expect(scope, r, Type::Long),
                    Type::Long,
                )
            }
        };
        mk(
            ExprKind::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            Ty::K(ty),
            span,
        )
    }

    fn assign(
        &mut self,
        scope: &mut Scope,
        op: ast::AssignOp,
        target: &ast::Expr,
        value: &ast::Expr,
        span: Span,
    ) -> Expr {
        if matches!(op.0, Some(BinOp::Div | BinOp::Mod)) && matches!(value.kind, A::Num(0)) {
            self.err(CheckError::DivisionByZero { span: value.span });
        }
        let v = self.value(scope, value);
        let Some((lv, ty)) = self.lvalue(scope, target) else {
            return v;
        };
        match op.0 {
            None => self.unify_report(ty, ty_of(&v), span),
            Some(BinOp::Concat) => {
                self.unify_report(ty, Ty::K(Type::String), span);
                self.unify_report(ty_of(&v), Ty::K(Type::String), v.span);
            }
            Some(_) => {
                self.unify_report(ty, Ty::K(Type::Long), span);
                self.unify_report(ty_of(&v), Ty::K(Type::Long), v.span);
            }
        }
        mk(
            ExprKind::Assign {
                target: lv,
                op,
                value: Box::new(v),
            },
            ty,
            span,
        )
    }

    /// An assignable place and its type. Marks globals written.
    pub(super) fn lvalue(&mut self, scope: &mut Scope, e: &ast::Expr) -> Option<(LValue, Ty)> {
        match &e.kind {
            A::Name(id) if is_reserved(&id.name) => {
                self.err(CheckError::ReadOnly {
                    span: e.span,
                    name: id.name.clone(),
                });
                None
            }
            A::Name(id) => {
                if let Some(&l) = scope.names.get(&id.name) {
                    return Some((LValue::Local(l), Ty::V(scope.locals[l].slot)));
                }
                if let Some(g) = self.global(&id.name) {
                    self.use_shape(g, Shape::Scalar, e.span);
                    self.globals[g].written = true;
                    return Some((LValue::Global(g), Ty::V(self.globals[g].value)));
                }
                let l = self.local(scope, &id.name, id.span);
                Some((LValue::Local(l), Ty::V(scope.locals[l].slot)))
            }
            A::Index { array, keys } => {
                let keys: Vec<Expr> = keys.iter().map(|k| self.value(scope, k)).collect();
                let Some(g) = self.global(&array.name) else {
                    self.err(CheckError::LocalArray {
                        span: array.span,
                        name: array.name.clone(),
                    });
                    return None;
                };
                self.array_keys(g, &keys, e.span);
                self.globals[g].written = true;
                Some((
                    LValue::Element { global: g, keys },
                    Ty::V(self.globals[g].value),
                ))
            }
            A::TargetVar(id) if id.name.contains(['$', '[']) || id.name.contains("->") => {
                self.err(CheckError::NotAssignable { span: e.span });
                None
            }
            A::TargetVar(id) => {
                let ok = self.need_target_var(scope, e.span, &id.name);
                let guru = self.need_guru(e.span, &format!("assigning to `${}`", id.name));
                (ok && guru).then(|| (LValue::TargetVar(id.name.clone()), Ty::K(Type::Long)))
            }
            _ => {
                self.err(CheckError::NotAssignable { span: e.span });
                None
            }
        }
    }
}
