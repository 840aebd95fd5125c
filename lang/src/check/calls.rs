//! Calls: script and stdlib functions, builtins, printf/sprintf, and the
//! `@` forms (`@entry`, aggregate extractors, histograms).
use super::infer::{mk, ty_of, Ty};
use super::{CheckError, Checker, Need, Scope, ScopeKind, Shape};
use crate::ast::{self, ExprKind as A, Ident};
use crate::builtins::{self, Builtin, Needs, Params};
use crate::checked::{AggTarget, Expr, ExprKind, FormatFn, HistKind, ScalarType, StatOp, Type};
use crate::diag;
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
    pub(super) fn record_call(&mut self, scope: &mut Scope, f: usize, span: Span) {
        match scope.kind {
            ScopeKind::Probe { .. } => scope.calls.push((f, span)),
            ScopeKind::Function(cur) => self.funcs[cur].calls.push((f, span)),
        }
    }

    pub(super) fn call(
        &mut self,
        scope: &mut Scope,
        name: &Ident,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
        let n = name.name.as_str();
        if n == "printf" || n == "sprintf" {
            return self.format_call(scope, n, args, span);
        }
        if matches!(n, "printd" | "printdln" | "sprintd" | "sprintln") && self.function(n).is_none()
        {
            return self.delimited(scope, name, args, span);
        }
        // SystemTap's `println(a, b)` joins its values with nothing between
        // them (`print(a, b)` is ptap's one-liner: separated by spaces).
        if n == "println" && args.len() > 1 && self.function(n).is_none() {
            return self.delimited(scope, name, args, span);
        }
        if let Some(b) = builtins::lookup(n) {
            return self.builtin(scope, b, args, span);
        }
        // SystemTap's `is_return()`: known from the probe's points.
        if n == "is_return" && self.function(n).is_none() {
            return self.is_return(scope, args, span);
        }
        // SystemTap's name for `register`.
        if n == "u_register" && self.function(n).is_none() {
            if let Some(b) = builtins::lookup("register") {
                return self.builtin(scope, b, args, span);
            }
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

    pub(super) fn builtin(
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

    /// `is_return()`: 1 in a probe whose points are all return probes, 0 in
    /// one without return points; a probe mixing both, or a function, is an
    /// error (the answer would depend on the point that fired).
    fn is_return(&mut self, scope: &mut Scope, args: &[ast::Expr], span: Span) -> Expr {
        if !args.is_empty() {
            self.err(CheckError::WrongArgCount {
                span,
                name: "is_return".into(),
                expected: "0".into(),
                found: args.len(),
                decl: None,
            });
        }
        let value = match &scope.kind {
            ScopeKind::Probe { points } => {
                let rets = points.iter().filter(|(_, c)| c.ret).count();
                if rets == points.len() {
                    Some(1)
                } else if rets == 0 {
                    Some(0)
                } else {
                    None
                }
            }
            ScopeKind::Function(_) => None,
        };
        let Some(v) = value else {
            self.errors.push(
                diag::error("`is_return()` is only known in a probe whose points are all entries or all returns")
                    .with_labels(vec![diag::primary(span, "here")])
                    .with_notes(vec!["help: write the entry and return probes separately, or pass the answer to a function as an argument".to_string()]),
            );
            return mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        };
        mk(ExprKind::Long(v), Ty::K(Type::Long), span)
    }

    /// SystemTap's `printd(DELIM, v...)`, `printdln`, `sprintd`,
    /// `sprintln(v...)` and `println(v...)`: the values (each as `sprint`
    /// writes it) joined by DELIM (nothing for `sprintln` and `println`),
    /// then a newline for the `ln` forms;
    /// rewritten into `sprint`, `.` and `printf("%s", ...)`.
    fn delimited(
        &mut self,
        scope: &mut Scope,
        name: &Ident,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
        let n = name.name.as_str();
        let with_delim = !matches!(n, "sprintln" | "println");
        let (delim, values) = if with_delim {
            match args.split_first() {
                Some((d, rest)) if !rest.is_empty() => (Some(d), rest),
                _ => {
                    self.err(CheckError::WrongArgCount {
                        span,
                        name: n.to_string(),
                        expected: "a delimiter and at least 1 value".into(),
                        found: args.len(),
                        decl: None,
                    });
                    return mk(ExprKind::Long(0), Ty::K(Type::Void), span);
                }
            }
        } else {
            (None, args)
        };
        let node = |kind: ast::ExprKind, sp: Span| ast::Expr {
            kind,
            span: sp,
            depth: 0,
        };
        let ident = |s: &str| Ident {
            name: s.to_string(),
            span: name.span,
        };
        let mut joined: Option<ast::Expr> = None;
        for v in values {
            let piece = node(
                ast::ExprKind::Call {
                    name: ident("sprint"),
                    args: vec![v.clone()],
                },
                v.span,
            );
            joined = Some(match joined {
                None => piece,
                Some(acc) => {
                    let acc = match delim {
                        Some(d) => node(
                            ast::ExprKind::Binary {
                                op: ast::BinOp::Concat,
                                lhs: Box::new(acc),
                                rhs: Box::new(d.clone()),
                            },
                            span,
                        ),
                        None => acc,
                    };
                    node(
                        ast::ExprKind::Binary {
                            op: ast::BinOp::Concat,
                            lhs: Box::new(acc),
                            rhs: Box::new(piece),
                        },
                        span,
                    )
                }
            });
        }
        let mut text = joined.unwrap_or_else(|| node(ast::ExprKind::Str(String::new()), span));
        if n.ends_with("ln") {
            text = node(
                ast::ExprKind::Binary {
                    op: ast::BinOp::Concat,
                    lhs: Box::new(text),
                    rhs: Box::new(node(ast::ExprKind::Str("\n".into()), span)),
                },
                span,
            );
        }
        if n.starts_with('s') {
            return self.expr(scope, &text);
        }
        let fmt = node(ast::ExprKind::Str("%s".into()), span);
        self.format_call(scope, "printf", &[fmt, text], span)
    }

    pub(super) fn register_name(&mut self, a: &ast::Expr) {
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

    pub(super) fn format_call(
        &mut self,
        scope: &mut Scope,
        n: &str,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
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
        let kinds = format.arg_kinds();
        if kinds.len() != rest.len() {
            self.err(CheckError::FormatArgCount {
                span,
                expected: kinds.len(),
                found: rest.len(),
            });
        }
        let mut checked = Vec::new();
        for (i, a) in rest.iter().enumerate() {
            let x = match kinds.get(i) {
                Some(true) => self.expect(scope, a, Type::String),
                Some(false) => self.expect(scope, a, Type::Long),
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

    /// `$arr[i]` with an index the script computes.
    fn target_index(
        &mut self,
        scope: &mut Scope,
        path: &str,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
        let ok = self.need_target_var(scope, span, path);
        let idx = self.expect(scope, &args[0], Type::Long);
        let ty = if crate::checked::target_var_is_string(path) {
            Type::String
        } else {
            Type::Long
        };
        if !ok {
            return mk(ExprKind::Long(0), Ty::K(ty), span);
        }
        let p = mk(ExprKind::Str(path.to_string()), Ty::K(Type::String), span);
        mk(
            ExprKind::Builtin {
                func: builtins::Builtin::TargetIndex,
                args: vec![idx, p],
            },
            Ty::K(ty),
            span,
        )
    }

    /// `@cast(ptr, "type"[, "module"])->a->b` (SystemTap): members of the
    /// object `ptr` points to, typed by the DWARF of the executable (or of
    /// the library named), read when the probe runs.
    /// SystemTap's `@var("name@file.c")->chain`: a global or file-static
    /// variable of the executable, read in the target. Encoded as a
    /// `@cast` whose type is `@var:name@file.c` (codegen resolves it from
    /// the DWARF, at the variable's address plus the load bias).
    fn var(&mut self, scope: &mut Scope, chain: &str, args: &[ast::Expr], span: Span) -> Expr {
        let bad = mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        let spec = match args {
            [a] => match &a.kind {
                ast::ExprKind::Str(s) => s.clone(),
                _ => {
                    self.err(CheckError::CastNotLiteral { span: a.span });
                    return bad;
                }
            },
            [_, m] => {
                self.errors.push(
                    crate::diag::error("`@var` of a library's variable is not supported yet")
                        .with_labels(vec![crate::diag::primary(m.span, "a module")])
                        .with_notes(vec![
                            "help: `@var(\"name@file.c\")` reads the executable's globals and file statics".to_string(),
                        ]),
                );
                return bad;
            }
            _ => {
                self.err(CheckError::WrongArgCount {
                    span,
                    name: "@var".into(),
                    expected: "1".into(),
                    found: args.len(),
                    decl: None,
                });
                return bad;
            }
        };
        if !self.need(scope, Need::Target, span, "@var") {
            return bad;
        }
        let ptr = mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        cast_expr(ptr, format!("@var:{spec}"), String::new(), chain, span)
    }

    fn cast(&mut self, scope: &mut Scope, chain: &str, args: &[ast::Expr], span: Span) -> Expr {
        let bad = mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        if !(2..=3).contains(&args.len()) {
            self.err(CheckError::WrongArgCount {
                span,
                name: "@cast".into(),
                expected: "2 or 3".into(),
                found: args.len(),
                decl: None,
            });
            return bad;
        }
        let ptr = self.expect(scope, &args[0], Type::Long);
        let mut lits = Vec::new();
        for a in &args[1..] {
            match &a.kind {
                ast::ExprKind::Str(s) => lits.push(s.clone()),
                _ => {
                    self.err(CheckError::CastNotLiteral { span: a.span });
                    return bad;
                }
            }
        }
        if !self.need(scope, Need::Target, span, "@cast") {
            return bad;
        }
        let module = lits.get(1).cloned().unwrap_or_default();
        cast_expr(ptr, lits[0].clone(), module, chain, span)
    }

    pub(super) fn at_call(
        &mut self,
        scope: &mut Scope,
        name: &Ident,
        args: &[ast::Expr],
        span: Span,
    ) -> Expr {
        let n = name.name.as_str();
        let bad = mk(ExprKind::Long(0), Ty::K(Type::Long), span);
        if let Some(path) = n.strip_prefix("tvar:") {
            return self.target_index(scope, path, args, span);
        }
        if let Some(chain) = n
            .strip_prefix("cast")
            .filter(|c| c.starts_with("->") || c.starts_with(['$', '[']))
        {
            return self.cast(scope, chain, args, span);
        }
        if let Some(chain) = n
            .strip_prefix("var")
            .filter(|c| c.is_empty() || c.starts_with("->") || c.starts_with(['$', '[']))
        {
            return self.var(scope, chain, args, span);
        }
        let want = match n {
            "entry" | "count" | "sum" | "min" | "max" | "avg" | "hist_log" => 1,
            "hist_linear" => 4,
            // `@variance(s, N)`: SystemTap's bit shift N (0 to 62) only buys
            // precision in its running estimate; ptap's is exact.
            "variance" if args.len() == 2 => {
                if !const_int(&args[1]).is_some_and(|n| (0..=62).contains(&n)) {
                    self.err(CheckError::BadVarianceShift { span: args[1].span });
                    return bad;
                }
                2
            }
            "variance" | "defined" => 1,
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
                expected: if n == "variance" {
                    "1 or 2".to_string()
                } else {
                    want.to_string()
                },
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
        if n == "defined" {
            let was = std::mem::replace(&mut scope.in_defined, true);
            let x = self.value(scope, &args[0]);
            scope.in_defined = was;
            return mk(
                ExprKind::Builtin {
                    func: builtins::Builtin::Defined,
                    args: vec![x],
                },
                Ty::K(Type::Long),
                span,
            );
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
            "variance" => StatOp::Variance,
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

/// The `Builtin::Cast` node: `ptr`, then the type, the module ("" for the
/// executable) and the members as strings; a string when the members end
/// in `$` (pretty printing), else a number.
fn cast_expr(ptr: Expr, ty: String, module: String, chain: &str, span: Span) -> Expr {
    let s = |t: String| mk(ExprKind::Str(t), Ty::K(Type::String), span);
    let result = if chain.ends_with('$') {
        Type::String
    } else {
        Type::Long
    };
    mk(
        ExprKind::Builtin {
            func: builtins::Builtin::Cast,
            args: vec![ptr, s(ty), s(module), s(chain.to_string())],
        },
        Ty::K(result),
        span,
    )
}
