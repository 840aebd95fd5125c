//! Expressions: one `check` function per construct.
use super::infer::{mk, ty_of, Ty};
use super::resolve::is_reserved;
use super::{CheckError, Checker, Need, Scope, ScopeKind, Shape};
use crate::ast::{self, BinOp, ExprKind as A, Ident};
use crate::builtins::{self, Builtin, Needs, Params};
use crate::checked::{
    AggTarget, Const, ContextValue, Expr, ExprKind, FormatFn, HistKind, LValue, ScalarType, StatOp,
    Type,
};
use crate::diag;
use crate::options::dollar_arg;
use crate::span::Span;

fn scalar(t: ScalarType) -> Type {
    match t {
        ScalarType::Long => Type::Long,
        ScalarType::String => Type::String,
    }
}

/// An integer literal, possibly negated.
fn const_int(e: &ast::Expr) -> Option<i64> {
    match &e.kind {
        A::Num(n) => Some(*n),
        A::Unary {
            op: ast::UnOp::Neg,
            operand,
        } => const_int(operand).map(i64::wrapping_neg),
        _ => None,
    }
}

impl Checker<'_> {
    fn unify_report(&mut self, a: Ty, b: Ty, span: Span) {
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
            A::Str(s) => mk(ExprKind::Str(s.clone()), Ty::K(Type::String), span),
            A::Name(id) => self.name(scope, id),
            A::Index { array, keys } => self.index(scope, array, keys, span),
            A::Call { name, args } => self.call(scope, name, args, span),
            A::AtCall { name, args } => self.at_call(scope, name, args, span),
            A::TargetVar(id) => {
                self.need_target_var(scope, span, &id.name);
                mk(
                    ExprKind::TargetVar(id.name.clone()),
                    Ty::K(Type::Long),
                    span,
                )
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
    fn array_keys(&mut self, g: usize, keys: &[Expr], span: Span) -> bool {
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
            _ => (
                self.expect(scope, l, Type::Long),
                self.expect(scope, r, Type::Long),
                Type::Long,
            ),
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

    fn record_call(&mut self, scope: &mut Scope, f: usize, span: Span) {
        match scope.kind {
            ScopeKind::Probe { .. } => scope.calls.push((f, span)),
            ScopeKind::Function(cur) => self.funcs[cur].calls.push((f, span)),
        }
    }

    fn call(&mut self, scope: &mut Scope, name: &Ident, args: &[ast::Expr], span: Span) -> Expr {
        let n = name.name.as_str();
        if n == "printf" || n == "sprintf" {
            return self.format_call(scope, n, args, span);
        }
        if let Some(b) = builtins::lookup(n) {
            return self.builtin(scope, b, args, span);
        }
        if let Some(f) = self.function(n) {
            let params = self.funcs[f].params.clone();
            if args.len() != params.len() {
                let decl = Some(self.funcs[f].def.name.span);
                self.err(CheckError::WrongArgCount {
                    span,
                    name: n.to_string(),
                    expected: params.len().to_string(),
                    found: args.len(),
                    decl,
                });
            }
            let mut checked = Vec::new();
            for (i, a) in args.iter().enumerate() {
                let x = self.value(scope, a);
                if let Some(&p) = params.get(i) {
                    self.unify_report(ty_of(&x), Ty::V(p), x.span);
                }
                checked.push(x);
            }
            self.record_call(scope, f, span);
            let ty = self.funcs[f].ret.map_or(Ty::K(Type::Void), Ty::V);
            return mk(
                ExprKind::Call {
                    func: f,
                    args: checked,
                },
                ty,
                span,
            );
        }
        let names = self.callable_names();
        let suggestion = diag::suggest(n, names.iter().map(String::as_str)).map(str::to_string);
        self.err(CheckError::UnknownFunction {
            span: name.span,
            name: n.to_string(),
            suggestion,
        });
        mk(ExprKind::Long(0), Ty::K(Type::Long), span)
    }

    fn builtin(
        &mut self,
        scope: &mut Scope,
        b: &builtins::BuiltinInfo,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
        let what = format!("`{}()`", b.name);
        match b.needs {
            Needs::Anywhere => true,
            Needs::Target => self.need(scope, Need::Target, span, &what),
            Needs::Syscall => self.need(scope, Need::Syscall, span, &what),
            Needs::GuruTarget => {
                self.need_guru(span, &what) && self.need(scope, Need::Target, span, &what)
            }
        };
        let mut checked = Vec::new();
        match b.params {
            Params::Fixed(types) => {
                if args.len() != types.len() {
                    self.err(CheckError::WrongArgCount {
                        span,
                        name: b.name.to_string(),
                        expected: types.len().to_string(),
                        found: args.len(),
                        decl: None,
                    });
                }
                for (a, t) in args.iter().zip(types.iter()) {
                    checked.push(self.expect(scope, a, scalar(*t)));
                }
                if matches!(b.builtin, Builtin::Register | Builtin::SetRegister) {
                    if let Some(a) = args.first() {
                        self.register_name(a);
                    }
                }
            }
            Params::Values => {
                for a in args {
                    let x = self.expr(scope, a);
                    let bad = x.slot.is_none()
                        && (x.ty == Type::Void
                            || (x.ty == Type::Hist && b.builtin != Builtin::Print));
                    if bad {
                        self.err(CheckError::NoValue {
                            span: a.span,
                            what: "this expression".into(),
                        });
                    }
                    checked.push(x);
                }
            }
        }
        mk(
            ExprKind::Builtin {
                func: b.builtin,
                args: checked,
            },
            Ty::K(b.ret),
            span,
        )
    }

    fn register_name(&mut self, a: &ast::Expr) {
        match &a.kind {
            A::Str(r) if builtins::REGISTERS.contains(&r.as_str()) => {}
            A::Str(r) => {
                let suggestion = diag::suggest(r, builtins::REGISTERS.iter().copied());
                self.err(CheckError::BadRegister {
                    span: a.span,
                    name: r.clone(),
                    suggestion,
                });
            }
            _ => self.err(CheckError::RegisterNotLiteral { span: a.span }),
        }
    }

    fn format_call(&mut self, scope: &mut Scope, n: &str, args: &[ast::Expr], span: Span) -> Expr {
        let func = if n == "printf" {
            FormatFn::Printf
        } else {
            FormatFn::Sprintf
        };
        let ret = if func == FormatFn::Printf {
            Type::Void
        } else {
            Type::String
        };
        let Some(first) = args.first() else {
            self.err(CheckError::WrongArgCount {
                span,
                name: n.to_string(),
                expected: "at least 1".into(),
                found: 0,
                decl: None,
            });
            return mk(ExprKind::Long(0), Ty::K(ret), span);
        };
        let rest = &args[1..];
        let format = match &first.kind {
            A::Str(s) => match crate::printf::parse(s) {
                Ok(f) => Some(f),
                Err(error) => {
                    self.err(CheckError::Format {
                        span: first.span,
                        error,
                    });
                    None
                }
            },
            _ => {
                self.err(CheckError::FormatNotLiteral { span: first.span });
                None
            }
        };
        let Some(format) = format else {
            for a in rest {
                self.value(scope, a);
            }
            return mk(ExprKind::Long(0), Ty::K(ret), span);
        };
        let specs: Vec<_> = format.specs().copied().collect();
        if specs.len() != rest.len() {
            self.err(CheckError::FormatArgCount {
                span,
                expected: specs.len(),
                found: rest.len(),
            });
        }
        let mut checked = Vec::new();
        for (i, a) in rest.iter().enumerate() {
            let x = match specs.get(i) {
                Some(s) if s.conv.wants_string() => self.expect(scope, a, Type::String),
                Some(_) => self.expect(scope, a, Type::Long),
                None => self.value(scope, a),
            };
            checked.push(x);
        }
        mk(
            ExprKind::Format {
                func,
                format,
                args: checked,
            },
            Ty::K(ret),
            span,
        )
    }

    /// The statistics `e` names (a global or a global array element).
    pub(super) fn agg_target(
        &mut self,
        scope: &mut Scope,
        e: &ast::Expr,
        at: Span,
    ) -> Option<AggTarget> {
        match &e.kind {
            A::Name(id) if self.global(&id.name).is_some() => {
                let g = self.global(&id.name)?;
                self.use_shape(g, Shape::Scalar, e.span);
                let slot = self.globals[g].value;
                self.unify_report(Ty::V(slot), Ty::K(Type::Stats), at);
                Some(AggTarget::Global(g))
            }
            A::Index { array, keys } if self.global(&array.name).is_some() => {
                let g = self.global(&array.name)?;
                let keys: Vec<Expr> = keys.iter().map(|k| self.value(scope, k)).collect();
                self.array_keys(g, &keys, e.span);
                let slot = self.globals[g].value;
                self.unify_report(Ty::V(slot), Ty::K(Type::Stats), at);
                Some(AggTarget::Element { global: g, keys })
            }
            _ => {
                self.err(CheckError::AggregateTarget { span: e.span });
                None
            }
        }
    }

    fn at_call(&mut self, scope: &mut Scope, name: &Ident, args: &[ast::Expr], span: Span) -> Expr {
        let n = name.name.as_str();
        let bad = mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        let want = match n {
            "entry" | "count" | "sum" | "min" | "max" | "avg" | "hist_log" => 1,
            "hist_linear" => 4,
            _ => {
                let suggestion = diag::suggest(n, builtins::AT_FUNCTIONS.iter().copied());
                self.err(CheckError::UnknownAt {
                    span: name.span,
                    name: n.to_string(),
                    suggestion,
                });
                return bad;
            }
        };
        if args.len() != want {
            self.err(CheckError::WrongArgCount {
                span,
                name: format!("@{n}"),
                expected: want.to_string(),
                found: args.len(),
                decl: None,
            });
            return bad;
        }
        if n == "entry" {
            if scope.in_entry {
                self.err(CheckError::NestedEntry { span });
                return bad;
            }
            if !self.need_entry(scope, span) {
                return bad;
            }
            scope.in_entry = true;
            let x = self.value(scope, &args[0]);
            scope.in_entry = false;
            let ty = ty_of(&x);
            scope.entry_exprs.push(x);
            return mk(ExprKind::Entry(scope.entry_exprs.len() - 1), ty, span);
        }
        let Some(target) = self.agg_target(scope, &args[0], span) else {
            return bad;
        };
        let mark_read = |c: &mut Self, t: &AggTarget| {
            let g = match t {
                AggTarget::Global(g) | AggTarget::Element { global: g, .. } => *g,
            };
            c.globals[g].read = true;
        };
        mark_read(self, &target);
        let op = match n {
            "count" => StatOp::Count,
            "sum" => StatOp::Sum,
            "min" => StatOp::Min,
            "max" => StatOp::Max,
            "avg" => StatOp::Avg,
            "hist_log" => {
                return mk(
                    ExprKind::Hist {
                        kind: HistKind::Log,
                        target,
                    },
                    Ty::K(Type::Hist),
                    span,
                )
            }
            _ => {
                let vals: Vec<Option<i64>> = args[1..].iter().map(const_int).collect();
                let (Some(lo), Some(hi), Some(step)) = (vals[0], vals[1], vals[2]) else {
                    self.err(CheckError::BadHistArg {
                        span,
                        why: "lo, hi and step must be integer literals",
                    });
                    return bad;
                };
                if step <= 0 || hi <= lo {
                    self.err(CheckError::BadHistArg {
                        span,
                        why: "need lo < hi and step > 0",
                    });
                    return bad;
                }
                if hi.checked_sub(lo).is_none_or(|d| d / step > 1000) {
                    self.err(CheckError::BadHistArg {
                        span,
                        why: "at most 1000 buckets",
                    });
                    return bad;
                }
                let kind = HistKind::Linear { lo, hi, step };
                return mk(ExprKind::Hist { kind, target }, Ty::K(Type::Hist), span);
            }
        };
        mk(ExprKind::Stat { op, target }, Ty::K(Type::Long), span)
    }
}
