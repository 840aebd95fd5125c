//! What system-wide mode learns from the checked script before it is
//! compiled away: the condition a handler starts with (pushed into the
//! kernel as a tracepoint filter).
//!
//! The filter is an optimisation only: the handler still tests its own
//! condition, so a filter must let through at least every event the
//! condition accepts. Only conditions on `ret` and `argN` against integer
//! constants are pushed; anything else (or a module run with `ptap run`,
//! which has no script) installs no filter.

use std::sync::OnceLock;

use ptap_lang::ast::{BinOp, UnOp};
use ptap_lang::checked::{CheckedScript, ContextValue, Expr, ExprKind, Stmt, StmtKind};

use super::tracefs::Tracepoint;

/// A condition on tracepoint fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `operand OP constant`.
    Cmp(ContextValue, BinOp, i64),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    /// Something the kernel cannot test (`pid() > 0`); `pure`: evaluating
    /// it has no effect (no assignment, output, call, or possible error).
    Other {
        pure: bool,
    },
}

/// Per probe (in script order, as the module's probes).
#[derive(Debug, Clone, Default)]
pub struct ProbeFacts {
    /// Point texts, to check that the module matches the script.
    pub points: Vec<String>,
    pub cond: Option<Cond>,
}

static FACTS: OnceLock<Vec<ProbeFacts>> = OnceLock::new();

/// Called by the driver with the checked script, before it runs.
pub fn remember(script: &CheckedScript) {
    let _ = FACTS.set(facts(script));
}

/// Facts of probe `i` whose point texts are `points` (None: unknown, as
/// for `ptap run NAME.o`).
pub fn of(i: usize, points: &[String]) -> Option<&'static ProbeFacts> {
    FACTS.get()?.get(i).filter(|f| f.points == points)
}

pub fn facts(script: &CheckedScript) -> Vec<ProbeFacts> {
    script
        .probes
        .iter()
        .map(|p| ProbeFacts {
            points: p.points.iter().map(|q| q.text.clone()).collect(),
            cond: leading_cond(&p.body),
        })
        .collect()
}

/// The condition every run of the body needs: a body that is one `if`
/// without `else` (`if ret<0 print(ret)`), or that starts with
/// `if (C) next`.
fn leading_cond(body: &[Stmt]) -> Option<Cond> {
    let body = flatten(body);
    let first = body.first()?;
    let StmtKind::If {
        cond,
        then,
        els: None,
    } = &first.kind
    else {
        return None;
    };
    let is_next = matches!(flatten(std::slice::from_ref(then.as_ref())), [s] if matches!(s.kind, StmtKind::Next));
    if is_next {
        return Some(Cond::Not(Box::new(cond_of(cond)?)));
    }
    if body.len() == 1 {
        return cond_of(cond);
    }
    None
}

/// A body whose only statement is a block: the block's statements.
fn flatten(body: &[Stmt]) -> &[Stmt] {
    match body {
        [Stmt {
            kind: StmtKind::Block(b),
            ..
        }] => flatten(b),
        b => b,
    }
}

fn constant(e: &Expr) -> Option<i64> {
    match &e.kind {
        ExprKind::Long(v) => Some(*v),
        ExprKind::Unary {
            op: UnOp::Neg,
            operand,
        } => constant(operand)?.checked_neg(),
        ExprKind::Unary {
            op: UnOp::Plus,
            operand,
        } => constant(operand),
        _ => None,
    }
}

fn operand(e: &Expr) -> Option<ContextValue> {
    match &e.kind {
        ExprKind::Context(c) => Some(*c),
        _ => None,
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Gt => BinOp::Lt,
        BinOp::Le => BinOp::Ge,
        BinOp::Ge => BinOp::Le,
        o => o,
    }
}

/// Evaluating `e` has no effect and cannot fail.
fn pure(e: &Expr) -> bool {
    use ptap_lang::builtins::Builtin as B;
    let mut ok = true;
    ptap_lang::walk::walk_expr(e, &mut |x: &Expr| {
        ok &= match &x.kind {
            ExprKind::Long(_)
            | ExprKind::Str(_)
            | ExprKind::Local(_)
            | ExprKind::Global(_)
            | ExprKind::Context(_)
            | ExprKind::Ternary { .. }
            | ExprKind::Unary { .. } => true,
            ExprKind::Binary { op, .. } => !matches!(op, BinOp::Div | BinOp::Mod),
            ExprKind::Builtin { func, .. } => matches!(
                func,
                B::Pid
                    | B::Tid
                    | B::Ppid
                    | B::Uid
                    | B::Execname
                    | B::Cpu
                    | B::Target
                    | B::Probefunc
                    | B::Pp
                    | B::Nsecs
                    | B::GettimeofdayUs
                    | B::SyscallName
                    | B::Strlen
                    | B::Isinstr
            ),
            _ => false,
        };
    });
    ok
}

fn cond_of(e: &Expr) -> Option<Cond> {
    let c = cond_in(e);
    (!matches!(c, Cond::Other { .. })).then_some(c)
}

fn cond_in(e: &Expr) -> Cond {
    let other = || Cond::Other { pure: pure(e) };
    match &e.kind {
        ExprKind::Binary { op, lhs, rhs } => match op {
            BinOp::And => Cond::And(Box::new(cond_in(lhs)), Box::new(cond_in(rhs))),
            BinOp::Or => Cond::Or(Box::new(cond_in(lhs)), Box::new(cond_in(rhs))),
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge | BinOp::Eq | BinOp::Ne => {
                if let (Some(o), Some(c)) = (operand(lhs), constant(rhs)) {
                    Cond::Cmp(o, *op, c)
                } else if let (Some(c), Some(o)) = (constant(lhs), operand(rhs)) {
                    Cond::Cmp(o, flip(*op), c)
                } else {
                    other()
                }
            }
            _ => other(),
        },
        ExprKind::Unary {
            op: UnOp::Not,
            operand,
        } => Cond::Not(Box::new(cond_in(operand))),
        _ => other(),
    }
}

impl Cond {
    /// The filter text for tracepoint `tp` whose record has the syscall's
    /// arguments (`sys_enter`) or its `ret` (`sys_exit`). None: not
    /// expressible there (then no filter, or a weaker one for `&&`).
    pub fn render(&self, tp: &Tracepoint) -> Option<String> {
        self.render_as(tp, false)
    }

    /// `exact`: the text must accept exactly what the condition accepts
    /// (under a `!`); else it may accept more.
    fn render_as(&self, tp: &Tracepoint, exact: bool) -> Option<String> {
        match self {
            Cond::Cmp(o, op, c) => {
                let field = match o {
                    ContextValue::Ret => tp.field("ret")?,
                    ContextValue::Arg(n) if tp.name.starts_with("sys_enter_") => {
                        tp.fields.get(usize::from(*n).checked_sub(1)?)?
                    }
                    ContextValue::Arg(_) => return None,
                };
                // The script compares 64-bit signed values: the kernel must
                // compare the same way.
                let ordered = !matches!(op, BinOp::Eq | BinOp::Ne);
                if field.size != 8 || (ordered && !field.signed) {
                    return None;
                }
                Some(format!("{} {} {c}", field.name, op.text()))
            }
            Cond::And(a, b) => match (a.render_as(tp, exact), b.render_as(tp, exact)) {
                (Some(a), Some(b)) => Some(format!("({a}) && ({b})")),
                // Letting more through is safe (the handler tests again),
                // skipping effects is not: `b` alone only after a pure `a`.
                (Some(x), None) if !exact => Some(x),
                (None, Some(x)) if !exact && a.is_pure() => Some(x),
                _ => None,
            },
            Cond::Or(a, b) => Some(format!(
                "({}) || ({})",
                a.render_as(tp, exact)?,
                b.render_as(tp, exact)?
            )),
            Cond::Not(a) => Some(format!("!({})", a.render_as(tp, true)?)),
            Cond::Other { .. } => None,
        }
    }

    fn is_pure(&self) -> bool {
        match self {
            Cond::Cmp(..) => true,
            Cond::And(a, b) | Cond::Or(a, b) => a.is_pure() && b.is_pure(),
            Cond::Not(a) => a.is_pure(),
            Cond::Other { pure } => *pure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemwide::tracefs::Field;

    fn checked(src: &str) -> CheckedScript {
        let mut sources = ptap_lang::sources::Sources::new();
        let file = sources.add("t", src);
        let script = ptap_lang::parse(&sources, file).expect("parses");
        let opts = ptap_lang::options::Options {
            guru: false,
            args: Vec::new(),
            defines: Vec::new(),
        };
        ptap_lang::check(sources, script, &opts).expect("checks")
    }

    fn field(name: &str, offset: usize, signed: bool) -> Field {
        Field {
            name: name.into(),
            offset,
            size: 8,
            signed,
        }
    }

    fn exit_tp() -> Tracepoint {
        Tracepoint {
            name: "sys_exit_openat".into(),
            id: 1,
            fields: vec![field("ret", 16, true)],
        }
    }

    fn enter_tp() -> Tracepoint {
        Tracepoint {
            name: "sys_enter_openat".into(),
            id: 2,
            fields: vec![field("dfd", 16, false), field("filename", 24, false)],
        }
    }

    /// The filter of the script's first probe on `tp`.
    fn filter(src: &str, tp: &Tracepoint) -> Option<String> {
        facts(&checked(src))[0].cond.as_ref()?.render(tp)
    }

    #[test]
    fn a_leading_if_on_ret_is_pushed() {
        let f = |s| filter(s, &exit_tp());
        assert_eq!(
            f("probe kretprobe(sys_openat) < if ret<0 print(ret) >").as_deref(),
            Some("ret < 0")
        );
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (-2 == ret || ret > 100) print(ret) }").as_deref(),
            Some("(ret == -2) || (ret > 100)")
        );
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (ret >= 0) next; print(ret) }").as_deref(),
            Some("!(ret >= 0)")
        );
    }

    #[test]
    fn what_the_handler_does_unconditionally_keeps_every_event() {
        let f = |s| filter(s, &exit_tp());
        // Something after the if runs for every event.
        assert_eq!(
            f("global n probe kretprobe(sys_openat) { if (ret < 0) print(ret); n++ }"),
            None
        );
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (ret < 0) print(ret) else print(1) }"),
            None
        );
        // An effect before the pushed part must still happen.
        assert_eq!(
            f("global n probe kretprobe(sys_openat) { if (n++ > 0 && ret < 0) print(ret) }"),
            None
        );
        // `x && pure` filters on x; `pure && x` too.
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (pid() > 1 && ret < 0) print(ret) }").as_deref(),
            Some("ret < 0")
        );
        // A part the kernel cannot test under `!` or `||`: nothing.
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (!(ret < 0 && pid() > 1)) print(ret) }"),
            None
        );
        assert_eq!(
            f("probe kretprobe(sys_openat) { if (ret < 0 || pid() > 1) print(ret) }"),
            None
        );
    }

    #[test]
    fn argument_fields_compare_as_the_script_does() {
        let f = |s| filter(s, &enter_tp());
        // Equality is the same signed or unsigned; an order is not.
        assert_eq!(
            f("probe kprobe(sys_openat) { if (arg1 == -100) print(1) }").as_deref(),
            Some("dfd == -100")
        );
        assert_eq!(
            f("probe kprobe(sys_openat) { if (arg1 < 0) print(1) }"),
            None
        );
        // `ret` is not in a sys_enter record.
        assert_eq!(
            filter(
                "probe kretprobe(sys_openat) < if ret<0 print(ret) >",
                &enter_tp()
            ),
            None
        );
    }
}
