//! Node builders called by the grammar's actions. They compute each node's
//! nesting depth and cap it at [`MAX_DEPTH`] (a deeper node is reported and
//! replaced by a leaf, so no recursive pass and no drop can overflow the stack).
use std::convert::Infallible;

use lalrpop_util::ErrorRecovery;

use super::ParseError;
use crate::ast::*;
use crate::lexer::Tok;
use crate::span::{FileId, Span};

/// Mutable state threaded through the parser.
#[derive(Default)]
pub struct State {
    pub(super) recovered: Vec<ErrorRecovery<usize, Tok, Infallible>>,
    pub(super) errors: Vec<ParseError>,
    too_deep_reported: bool,
}

pub type ForHead = (Option<Expr>, Option<Expr>, Option<Expr>);

pub struct ForeachHead {
    pub vars: (Option<LoopVar>, Vec<LoopVar>, bool),
    pub array: Ident,
    pub slice: Option<Vec<Expr>>,
    pub agg: Option<Ident>,
    pub sort: Option<(SortMark, Span)>,
    pub limit: Option<Expr>,
}

pub fn sp(file: FileId, l: usize, r: usize) -> Span {
    Span::new(file, l, r.max(l))
}

pub fn point_arg(file: FileId, src: &str, l: usize, r: usize) -> (String, Span) {
    let r = r.max(l);
    (
        src.get(l..r).unwrap_or("").to_string(),
        Span::new(file, l, r),
    )
}

pub fn type_name(st: &mut State, name: String, span: Span) -> (TypeName, Span) {
    match name.as_str() {
        "long" => (TypeName::Long, span),
        "string" => (TypeName::String, span),
        _ => {
            st.errors.push(ParseError::BadTypeName { name, span });
            (TypeName::Long, span)
        }
    }
}

/// Whether `d` is within the caps; reports the first node beyond them.
fn within(st: &mut State, span: Span, d: Depth) -> bool {
    if d.level <= MAX_DEPTH && d.height <= MAX_HEIGHT {
        return true;
    }
    if !st.too_deep_reported {
        st.too_deep_reported = true;
        st.errors.push(if d.level > MAX_DEPTH {
            ParseError::TooDeep { span }
        } else {
            ParseError::TooLong { span }
        });
    }
    false
}

pub fn leaf(kind: ExprKind, span: Span) -> Expr {
    Expr {
        kind,
        span,
        depth: Depth::LEAF.pack(),
    }
}

pub fn expr(st: &mut State, kind: ExprKind, span: Span) -> Expr {
    let d = kind.depth();
    let depth = d.pack();
    if !within(st, span, d) {
        return leaf(ExprKind::Num(0), span);
    }
    Expr { kind, span, depth }
}

pub fn stmt(st: &mut State, kind: StmtKind, span: Span) -> Stmt {
    let d = kind.depth();
    let depth = d.pack();
    if !within(st, span, d) {
        return Stmt {
            kind: StmtKind::Break,
            span,
            depth: Depth::LEAF.pack(),
        };
    }
    Stmt { kind, span, depth }
}

pub fn paren(mut e: Expr, span: Span) -> Expr {
    e.span = span;
    e
}

pub fn unary(st: &mut State, op: UnOp, e: Expr, span: Span) -> Expr {
    // `-N` is a literal (so that -9223372036854775808 reads as i64::MIN).
    if let (UnOp::Neg, ExprKind::Num(n)) = (op, &e.kind) {
        return leaf(ExprKind::Num(n.wrapping_neg()), span);
    }
    expr(
        st,
        ExprKind::Unary {
            op,
            operand: Box::new(e),
        },
        span,
    )
}

pub fn binary(st: &mut State, op: BinOp, l: Expr, r: Expr, span: Span) -> Expr {
    expr(
        st,
        ExprKind::Binary {
            op,
            lhs: Box::new(l),
            rhs: Box::new(r),
        },
        span,
    )
}

pub fn assign(st: &mut State, op: AssignOp, t: Expr, v: Expr, span: Span) -> Expr {
    expr(
        st,
        ExprKind::Assign {
            op,
            target: Box::new(t),
            value: Box::new(v),
        },
        span,
    )
}

pub fn ternary(st: &mut State, c: Expr, t: Expr, e: Expr, span: Span) -> Expr {
    let kind = ExprKind::Ternary {
        cond: Box::new(c),
        then: Box::new(t),
        els: Box::new(e),
    };
    expr(st, kind, span)
}

pub fn incdec(st: &mut State, op: IncDec, prefix: bool, e: Expr, span: Span) -> Expr {
    expr(
        st,
        ExprKind::IncDec {
            op,
            prefix,
            target: Box::new(e),
        },
        span,
    )
}

pub fn in_(st: &mut State, keys: Vec<Expr>, array: Ident, span: Span) -> Expr {
    expr(st, ExprKind::In { keys, array }, span)
}

pub fn if_(st: &mut State, cond: Expr, then: Stmt, els: Option<Stmt>, span: Span) -> Stmt {
    let kind = StmtKind::If {
        cond,
        then: Box::new(then),
        els: els.map(Box::new),
    };
    stmt(st, kind, span)
}

pub fn while_(st: &mut State, cond: Expr, body: Stmt, span: Span) -> Stmt {
    stmt(
        st,
        StmtKind::While {
            cond,
            body: Box::new(body),
        },
        span,
    )
}

pub fn for_(st: &mut State, head: ForHead, body: Stmt, span: Span) -> Stmt {
    let (init, cond, step) = head;
    stmt(
        st,
        StmtKind::For {
            init,
            cond,
            step,
            body: Box::new(body),
        },
        span,
    )
}

pub fn foreach(st: &mut State, h: ForeachHead, body: Stmt, span: Span) -> Stmt {
    let (value, keys, bracketed) = h.vars;
    let f = Foreach {
        value,
        keys,
        bracketed,
        array: h.array,
        array_sort: h.sort,
        slice: h.slice,
        array_agg: h.agg,
        limit: h.limit,
        body: Box::new(body),
    };
    stmt(st, StmtKind::Foreach(f), span)
}

/// A statement the parser skipped after a syntax error (the error is kept
/// and reported; the placeholder never reaches the checker).
pub fn recovered(st: &mut State, e: ErrorRecovery<usize, Tok, Infallible>, span: Span) -> Stmt {
    st.recovered.push(e);
    Stmt {
        kind: StmtKind::Break,
        span,
        depth: Depth::LEAF.pack(),
    }
}
