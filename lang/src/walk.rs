//! Walkers over the checked tree: call a closure on every expression under
//! a statement or an expression, children first. One macro writes both the
//! shared (`walk_stmt`, `walk_expr`) and the mutable (`walk_stmt_mut`,
//! `walk_expr_mut`) forms, so the two cannot drift apart when the tree
//! grows a node.
use crate::checked::{AggTarget, DeleteTarget, Expr, ExprKind, LValue, Stmt, StmtKind};

macro_rules! walkers {
    ($stmt:ident, $expr:ident, $agg:ident, $lvalue:ident $(, $m:tt)?) => {
        /// Calls `f` on every expression under `s` (children first).
        pub fn $stmt(s: &$($m)? Stmt, f: &mut impl FnMut(&$($m)? Expr)) {
            match &$($m)? s.kind {
                StmtKind::Expr(e) => $expr(e, f),
                StmtKind::Block(b) => {
                    for s in b {
                        $stmt(s, f);
                    }
                }
                StmtKind::If { cond, then, els } => {
                    $expr(cond, f);
                    $stmt(then, f);
                    if let Some(e) = els {
                        $stmt(e, f);
                    }
                }
                StmtKind::While { cond, body } => {
                    $expr(cond, f);
                    $stmt(body, f);
                }
                StmtKind::For {
                    init,
                    cond,
                    step,
                    body,
                } => {
                    for e in [init, cond, step].into_iter().flatten() {
                        $expr(e, f);
                    }
                    $stmt(body, f);
                }
                StmtKind::Foreach(fe) => {
                    if let Some(l) = &$($m)? fe.limit {
                        $expr(l, f);
                    }
                    for x in (&$($m)? fe.slice).into_iter().flatten() {
                        $expr(x, f);
                    }
                    $stmt(&$($m)? fe.body, f);
                }
                StmtKind::Break | StmtKind::Continue | StmtKind::Next | StmtKind::Return(None) => {}
                StmtKind::Return(Some(e)) => $expr(e, f),
                StmtKind::Delete(t) => match t {
                    DeleteTarget::Element { keys, .. } => {
                        for k in keys {
                            $expr(k, f);
                        }
                    }
                    DeleteTarget::Global(_) | DeleteTarget::Local(_) => {}
                },
                StmtKind::Try { body, catch, .. } => {
                    for s in body {
                        $stmt(s, f);
                    }
                    for s in catch {
                        $stmt(s, f);
                    }
                }
                StmtKind::Aggregate { target, value } => {
                    $agg(target, f);
                    $expr(value, f);
                }
            }
        }

        /// Calls `f` on `e` and every expression under it (children first).
        pub fn $expr(e: &$($m)? Expr, f: &mut impl FnMut(&$($m)? Expr)) {
            match &$($m)? e.kind {
                ExprKind::Long(_)
                | ExprKind::Str(_)
                | ExprKind::Local(_)
                | ExprKind::Global(_)
                | ExprKind::Context(_)
                | ExprKind::TargetVar(_)
                | ExprKind::Entry(_) => {}
                ExprKind::Element { keys, .. } | ExprKind::In { keys, .. } => {
                    for k in keys {
                        $expr(k, f);
                    }
                }
                ExprKind::Unary { operand, .. } => $expr(operand, f),
                ExprKind::Binary { lhs, rhs, .. } => {
                    $expr(lhs, f);
                    $expr(rhs, f);
                }
                ExprKind::Regex { subject, .. } => $expr(subject, f),
                ExprKind::Ternary { cond, then, els } => {
                    $expr(cond, f);
                    $expr(then, f);
                    $expr(els, f);
                }
                ExprKind::Assign { target, value, .. } => {
                    $lvalue(target, f);
                    $expr(value, f);
                }
                ExprKind::IncDec { target, .. } => $lvalue(target, f),
                ExprKind::Call { args, .. }
                | ExprKind::Builtin { args, .. }
                | ExprKind::Format { args, .. } => {
                    for a in args {
                        $expr(a, f);
                    }
                }
                ExprKind::Stat { target, .. } | ExprKind::Hist { target, .. } => $agg(target, f),
            }
            f(e);
        }

        fn $agg(t: &$($m)? AggTarget, f: &mut impl FnMut(&$($m)? Expr)) {
            if let AggTarget::Element { keys, .. } = t {
                for k in keys {
                    $expr(k, f);
                }
            }
        }

        fn $lvalue(t: &$($m)? LValue, f: &mut impl FnMut(&$($m)? Expr)) {
            if let LValue::Element { keys, .. } = t {
                for k in keys {
                    $expr(k, f);
                }
            }
        }
    };
}

walkers!(walk_stmt, walk_expr, walk_agg, walk_lvalue);
walkers!(
    walk_stmt_mut,
    walk_expr_mut,
    walk_agg_mut,
    walk_lvalue_mut,
    mut
);
