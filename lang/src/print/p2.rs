//! `-p2`: the elaborated script. Globals with their inferred shapes and
//! types, each function's signature and locals, each probe's resolved points
//! (what they offer) and locals, and every body with resolved names:
//! variables, context values and calls carry `:type`.
use std::fmt::Write;

use super::p1::{paren, quote};
use crate::builtins;
use crate::checked::*;
use crate::points::Caps;

pub fn script(s: &CheckedScript) -> String {
    let mut out = String::new();
    let p = Printer { s };
    let d = crate::options::Limits::default();
    let l = &s.limits;
    let mut changed = Vec::new();
    for (name, v, dv) in [
        ("MAXACTION", Some(l.maxaction), Some(d.maxaction)),
        ("MAXSTRINGLEN", Some(l.maxstringlen), Some(d.maxstringlen)),
        (
            "MAXMAPENTRIES",
            Some(l.maxmapentries),
            Some(d.maxmapentries),
        ),
        ("MAXERRORS", Some(l.maxerrors), Some(d.maxerrors)),
        ("MAXSKIPPED", Some(l.maxskipped), Some(d.maxskipped)),
        ("KRETACTIVE", l.kretactive, d.kretactive),
        ("MAXNESTING", Some(l.maxnesting), Some(d.maxnesting)),
    ] {
        if v != dv {
            changed.push(format!("{name}={}", v.unwrap_or(0)));
        }
    }
    if !changed.is_empty() {
        let _ = writeln!(out, "# limits: {}", changed.join(" "));
    }
    if s.guru {
        out.push_str("# guru mode\n");
    }
    for g in &s.globals {
        out.push_str(&p.global(g));
        out.push('\n');
    }
    for f in &s.functions {
        let params: Vec<String> = f.locals[..f.params]
            .iter()
            .map(|l| format!("{}:{}", l.name, l.ty.name()))
            .collect();
        let origin = if f.from_stdlib {
            format!("  # from {}", s.sources.name(f.span.file))
        } else if !f.used {
            "  # unused".to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "function {}({}):{}{origin}",
            f.name,
            params.join(", "),
            f.ret.name()
        );
        if f.from_stdlib {
            continue;
        }
        for l in &f.locals[f.params..] {
            let _ = writeln!(out, "  local {}:{}", l.name, l.ty.name());
        }
        p.block(&mut out, &f.body, &f.locals, 0, &[]);
    }
    for pr in &s.probes {
        let texts: Vec<&str> = pr.points.iter().map(|p| p.text.as_str()).collect();
        let _ = writeln!(out, "probe {}", texts.join(", "));
        for pt in &pr.points {
            let _ = writeln!(out, "  # {}", describe_point(pt));
        }
        for l in &pr.locals {
            let _ = writeln!(out, "  local {}:{}", l.name, l.ty.name());
        }
        p.block(&mut out, &pr.body, &pr.locals, 0, &pr.entry_exprs);
    }
    out
}

fn target(t: &Target) -> String {
    let module = |m: &Option<Module>| match m {
        None => String::new(),
        Some(Module::Name(n)) => format!(" in {n}"),
        Some(Module::Path(p)) => format!(" in \"{p}\""),
    };
    match t {
        Target::Symbol {
            module: m,
            name,
            offset: 0,
        } => format!("function {name}{}", module(m)),
        Target::Symbol {
            module: m,
            name,
            offset,
        } => format!("{name}+{offset:#x}{}", module(m)),
        Target::Pattern { module: m, pattern } => {
            format!("functions matching {pattern}{}", module(m))
        }
        Target::Address(a) => format!("address {a:#x}"),
        Target::Line {
            module: m,
            func,
            file,
            line,
        } => {
            let f = func.as_ref().map(|f| format!("{f}@")).unwrap_or_default();
            match line {
                Some(l) => format!("line {f}{file}:{l}{}", module(m)),
                None => format!("function {f}{file}{}", module(m)),
            }
        }
        Target::Syscall { name, calls } if name == "sys_*" => {
            format!("every system call ({} numbers)", calls.len())
        }
        Target::Syscall { name, calls } => {
            let c: Vec<String> = calls.iter().map(|(n, nr)| format!("{n}({nr})")).collect();
            format!("{name} = syscalls {}", c.join(" "))
        }
    }
}

/// One line about a resolved point: what it is and what it offers.
pub fn describe_point(p: &ProbePoint) -> String {
    let what = match &p.kind {
        PointKind::Begin => "begin (runs in ptap)".to_string(),
        PointKind::End => "end (runs in ptap)".to_string(),
        PointKind::Timer { unit, n } => {
            let u = match unit {
                TimerUnit::S => "s",
                TimerUnit::Ms => "ms",
                TimerUnit::Us => "us",
                TimerUnit::Ns => "ns",
                TimerUnit::Hz => return format!("timer {n} times a second (runs in ptap)"),
            };
            format!("timer every {n} {u} (runs in ptap)")
        }
        PointKind::Kprobe { target: t } => format!("kprobe at {}", target(t)),
        PointKind::Jprobe { target: t } => format!("jprobe at {}", target(t)),
        PointKind::Kretprobe {
            target: t,
            maxactive,
        } => {
            let m = maxactive
                .map(|m| format!(", maxactive {m}"))
                .unwrap_or_default();
            format!("kretprobe on {}{m}", target(t))
        }
        PointKind::ProcessBegin { module } | PointKind::ProcessEnd { module } => {
            let when = if matches!(p.kind, PointKind::ProcessBegin { .. }) {
                "start"
            } else {
                "exit"
            };
            let of = match module {
                None => "each process of the session".to_string(),
                Some(Module::Path(m) | Module::Name(m)) => format!("each process of {m}"),
            };
            format!("at the {when} of {of} (runs in the target)")
        }
    };
    let caps = Caps::of(&p.kind);
    let mut offers = Vec::new();
    match caps.args {
        Some(ArgAbi::SysV) => offers.push("arg1..6 (SysV)"),
        Some(ArgAbi::Syscall) => offers.push("arg1..6 (syscall)"),
        None => {}
    }
    if caps.ret && caps.syscall {
        offers.push("ret");
    } else if caps.ret {
        offers.push("ret, @entry");
    }
    let offers = if offers.is_empty() {
        String::new()
    } else {
        format!("; offers {}", offers.join(", "))
    };
    let opt = if p.optional { "; optional" } else { "" };
    format!("{what}{offers}{opt}")
}

struct Printer<'a> {
    s: &'a CheckedScript,
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn value_type(v: ValueType) -> &'static str {
    v.name()
}

impl Printer<'_> {
    fn global(&self, g: &Global) -> String {
        let shape = match &g.shape {
            GlobalShape::Scalar(v) => format!("global {}:{}", g.name, value_type(*v)),
            GlobalShape::Array { keys, value } => {
                let k: Vec<&str> = keys.iter().map(|k| k.name()).collect();
                format!("global {}[{}]:{}", g.name, k.join(", "), value_type(*value))
            }
        };
        let mut extra = Vec::new();
        if let Some(c) = g.capacity {
            extra.push(format!("capacity {c}"));
        }
        match &g.init {
            Some(Const::Long(v)) => extra.push(format!("= {v}")),
            Some(Const::Str(s)) => extra.push(format!("= {}", quote(s))),
            None => {}
        }
        let usage = match (g.read, g.written) {
            (true, true) => "read, written",
            (true, false) => "read",
            (false, true) => "written (printed at end)",
            (false, false) => "unused",
        };
        extra.push(usage.to_string());
        format!("{shape}  # {}", extra.join(", "))
    }

    fn block(&self, out: &mut String, b: &[Stmt], locals: &[Local], depth: usize, entry: &[Expr]) {
        indent(out, depth);
        out.push_str("{\n");
        for s in b {
            self.stmt(out, s, locals, depth + 1, entry);
        }
        indent(out, depth);
        out.push_str("}\n");
    }

    fn nested(&self, out: &mut String, s: &Stmt, l: &[Local], depth: usize, en: &[Expr]) {
        match &s.kind {
            StmtKind::Block(b) => self.block(out, b, l, depth, en),
            _ => self.stmt(out, s, l, depth + 1, en),
        }
    }

    fn stmt(&self, out: &mut String, s: &Stmt, l: &[Local], depth: usize, en: &[Expr]) {
        let e = |x: &Expr| self.expr(x, l, en);
        match &s.kind {
            StmtKind::Block(b) => return self.block(out, b, l, depth, en),
            StmtKind::If { cond, then, els } => {
                indent(out, depth);
                let _ = writeln!(out, "if {}", paren(&e(cond)));
                self.nested(out, then, l, depth, en);
                if let Some(x) = els {
                    indent(out, depth);
                    out.push_str("else\n");
                    self.nested(out, x, l, depth, en);
                }
                return;
            }
            StmtKind::While { cond, body } => {
                indent(out, depth);
                let _ = writeln!(out, "while {}", paren(&e(cond)));
                return self.nested(out, body, l, depth, en);
            }
            StmtKind::For {
                init,
                cond,
                step,
                body,
            } => {
                indent(out, depth);
                let o = |x: &Option<Expr>| x.as_ref().map(e).unwrap_or_default();
                let _ = writeln!(out, "for ({}; {}; {})", o(init), o(cond), o(step));
                return self.nested(out, body, l, depth, en);
            }
            StmtKind::Foreach(f) => {
                indent(out, depth);
                let keys: Vec<String> = f.keys.iter().map(|k| self.local(*k, l)).collect();
                let value = f
                    .value
                    .map(|v| format!("{} = ", self.local(v, l)))
                    .unwrap_or_default();
                let sort = match f.sort {
                    None => String::new(),
                    Some(Sort { by, descending }) => {
                        let by = match by {
                            SortBy::Value => "value".to_string(),
                            SortBy::Key(i) => format!("key {}", i + 1),
                            SortBy::Agg(op) => format!("{op:?}").to_lowercase(),
                        };
                        format!(
                            " sorted by {by} {}",
                            if descending {
                                "descending"
                            } else {
                                "ascending"
                            }
                        )
                    }
                };
                let limit = f
                    .limit
                    .as_ref()
                    .map(|x| format!(" limit {}", e(x)))
                    .unwrap_or_default();
                let name = &self.s.globals[f.array].name;
                let slice = if f.slice.is_empty() {
                    String::new()
                } else {
                    let k: Vec<String> = f
                        .slice
                        .iter()
                        .map(|x| x.as_ref().map_or("*".to_string(), e))
                        .collect();
                    format!("[{}]", k.join(", "))
                };
                let _ = writeln!(
                    out,
                    "foreach ({value}[{}] in {name}{slice}{sort}{limit})",
                    keys.join(", ")
                );
                return self.nested(out, &f.body, l, depth, en);
            }
            StmtKind::Try { body, var, catch } => {
                indent(out, depth);
                out.push_str("try\n");
                self.block(out, body, l, depth, en);
                indent(out, depth);
                match var {
                    Some(v) => {
                        let _ = writeln!(out, "catch ({})", self.local(*v, l));
                    }
                    None => out.push_str("catch\n"),
                }
                return self.block(out, catch, l, depth, en);
            }
            _ => {}
        }
        indent(out, depth);
        match &s.kind {
            StmtKind::Expr(x) => out.push_str(&e(x)),
            StmtKind::Break => out.push_str("break"),
            StmtKind::Continue => out.push_str("continue"),
            StmtKind::Next => out.push_str("next"),
            StmtKind::Return(None) => out.push_str("return"),
            StmtKind::Return(Some(x)) => {
                let _ = write!(out, "return {}", e(x));
            }
            StmtKind::Delete(t) => {
                let t = match t {
                    DeleteTarget::Global(g) => self.s.globals[*g].name.clone(),
                    DeleteTarget::Element { global, keys } => self.element(*global, keys, l, en),
                    DeleteTarget::Local(v) => self.local(*v, l),
                };
                let _ = write!(out, "delete {t}");
            }
            StmtKind::Aggregate { target, value } => {
                let _ = write!(out, "{} <<< {}", self.agg(target, l, en), e(value));
            }
            _ => {}
        }
        out.push('\n');
    }

    fn local(&self, id: LocalId, l: &[Local]) -> String {
        l.get(id).map_or_else(
            || format!("local#{id}"),
            |v| format!("{}:{}", v.name, v.ty.name()),
        )
    }

    fn element(&self, g: GlobalId, keys: &[Expr], l: &[Local], en: &[Expr]) -> String {
        let k: Vec<String> = keys.iter().map(|k| self.expr(k, l, en)).collect();
        format!("{}[{}]", self.s.globals[g].name, k.join(", "))
    }

    fn agg(&self, t: &AggTarget, l: &[Local], en: &[Expr]) -> String {
        match t {
            AggTarget::Global(g) => self.s.globals[*g].name.clone(),
            AggTarget::Element { global, keys } => self.element(*global, keys, l, en),
        }
    }

    fn lvalue(&self, t: &LValue, l: &[Local], en: &[Expr]) -> String {
        match t {
            LValue::Local(v) => self.local(*v, l),
            LValue::Global(g) => format!("{}:{}", self.s.globals[*g].name, self.global_value(*g)),
            LValue::Element { global, keys } => {
                format!(
                    "{}:{}",
                    self.element(*global, keys, l, en),
                    self.global_value(*global)
                )
            }
            LValue::TargetVar(n) => format!("${n}:long"),
        }
    }

    fn global_value(&self, g: GlobalId) -> &'static str {
        match &self.s.globals[g].shape {
            GlobalShape::Scalar(v) | GlobalShape::Array { value: v, .. } => v.name(),
        }
    }

    fn expr(&self, x: &Expr, l: &[Local], en: &[Expr]) -> String {
        let e = |y: &Expr| self.expr(y, l, en);
        let list = |ys: &[Expr]| ys.iter().map(e).collect::<Vec<_>>().join(", ");
        let ty = x.ty.name();
        match &x.kind {
            ExprKind::Long(n) => n.to_string(),
            ExprKind::Str(s) => quote(s),
            ExprKind::Local(v) => self.local(*v, l),
            ExprKind::Global(g) => format!("{}:{ty}", self.s.globals[*g].name),
            ExprKind::Element { global, keys } => {
                format!("{}:{ty}", self.element(*global, keys, l, en))
            }
            ExprKind::Context(ContextValue::Ret) => "ret:long".to_string(),
            ExprKind::Context(ContextValue::Arg(n)) => format!("arg{n}:long"),
            ExprKind::TargetVar(n) => format!("${n}:{ty}"),
            ExprKind::Entry(i) => format!("@entry({}):{ty}", en.get(*i).map(e).unwrap_or_default()),
            ExprKind::Unary { op, operand } => format!("({}{})", op.text(), e(operand)),
            ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", e(lhs), op.text(), e(rhs)),
            ExprKind::Regex {
                negate,
                subject,
                pattern,
            } => {
                format!(
                    "({} {} {})",
                    e(subject),
                    if *negate { "!~" } else { "=~" },
                    quote(pattern)
                )
            }
            ExprKind::Ternary { cond, then, els } => {
                format!("({} ? {} : {})", e(cond), e(then), e(els))
            }
            ExprKind::Assign { target, op, value } => {
                format!(
                    "({} {} {})",
                    self.lvalue(target, l, en),
                    op.text(),
                    e(value)
                )
            }
            ExprKind::IncDec { target, op, prefix } => {
                let o = if *op == crate::ast::IncDec::Inc {
                    "++"
                } else {
                    "--"
                };
                let t = self.lvalue(target, l, en);
                if *prefix {
                    format!("({o}{t})")
                } else {
                    format!("({t}{o})")
                }
            }
            ExprKind::In { global, keys } => {
                format!("([{}] in {})", list(keys), self.s.globals[*global].name)
            }
            ExprKind::Call { func, args } => {
                format!("{}({}):{ty}", self.s.functions[*func].name, list(args))
            }
            ExprKind::Builtin {
                func: builtins::Builtin::TargetIndex,
                args,
            } if args.len() == 2 => {
                let path = match &args[1].kind {
                    ExprKind::Str(s) => s.clone(),
                    _ => String::new(),
                };
                format!(
                    "${}:{ty}",
                    path.replacen("[?]", &format!("[{}]", e(&args[0])), 1)
                )
            }
            ExprKind::Builtin {
                func: builtins::Builtin::Cast,
                args,
            } if args.len() == 4 => {
                let lit = |a: &Expr| match &a.kind {
                    ExprKind::Str(s) => s.clone(),
                    _ => String::new(),
                };
                if let Some(spec) = lit(&args[1]).strip_prefix("@var:") {
                    return format!("@var({}){}:{ty}", quote(spec), lit(&args[3]));
                }
                let module = match lit(&args[2]) {
                    m if m.is_empty() => String::new(),
                    m => format!(", {}", quote(&m)),
                };
                format!(
                    "@cast({}, {}{module}){}:{ty}",
                    e(&args[0]),
                    quote(&lit(&args[1])),
                    lit(&args[3])
                )
            }
            ExprKind::Builtin {
                func: builtins::Builtin::Defined,
                args,
            } => format!("@defined({}):{ty}", list(args)),
            ExprKind::Builtin { func, args } => {
                format!("{}({}):{ty}", builtins::name(*func), list(args))
            }
            ExprKind::Format { func, format, args } => {
                let n = if *func == FormatFn::Printf {
                    "printf"
                } else {
                    "sprintf"
                };
                let a = if args.is_empty() {
                    String::new()
                } else {
                    format!(", {}", list(args))
                };
                format!("{n}({}{a}):{ty}", quote(&format.to_source()))
            }
            ExprKind::Stat { op, target } => {
                let n = match op {
                    StatOp::Count => "count",
                    StatOp::Sum => "sum",
                    StatOp::Min => "min",
                    StatOp::Max => "max",
                    StatOp::Avg => "avg",
                    StatOp::Variance => "variance",
                };
                format!("@{n}({}):long", self.agg(target, l, en))
            }
            ExprKind::Hist { kind, target } => match kind {
                HistKind::Log => format!("@hist_log({})", self.agg(target, l, en)),
                HistKind::Linear { lo, hi, step } => {
                    format!(
                        "@hist_linear({}, {lo}, {hi}, {step})",
                        self.agg(target, l, en)
                    )
                }
                HistKind::SumSquares => format!("@sum_squares({})", self.agg(target, l, en)),
            },
        }
    }
}
