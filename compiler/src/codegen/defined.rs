//! `@defined(e)` (SystemTap): 1 when every target variable `e` uses
//! resolves in the probe (`tvars.rs` keeps the ones that do not as
//! `TVar::Failed`), decided when compiling. A condition made of `@defined`,
//! literals, `!`, `&&` and `||` is known when compiling too: `if` and `?:`
//! then compile only the branch taken, so `@defined($x) ? $x : 0` compiles
//! where `$x` does not resolve.

use cranelift_module::Module;
use ptap_lang::ast::{BinOp, UnOp};
use ptap_lang::builtins::Builtin;
use ptap_lang::checked::{Expr, ExprKind};
use ptap_lang::walk::walk_expr;

use super::dwarf_access::TVar;
use super::func::FunctionTranslator;

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// `@defined(e)`: every `$name`, `$a[i]` and `@cast` of `e` resolves.
    pub(crate) fn defined(&self, e: &Expr) -> bool {
        let mut ok = true;
        walk_expr(e, &mut |x: &Expr| {
            let key = match &x.kind {
                ExprKind::TargetVar(n) => n.clone(),
                ExprKind::Builtin {
                    func: Builtin::TargetIndex,
                    args,
                } => match args.get(1).map(|a| &a.kind) {
                    Some(ExprKind::Str(p)) => p.clone(),
                    _ => return,
                },
                ExprKind::Builtin {
                    func: Builtin::Cast,
                    args,
                } => super::tvars::cast_key(args),
                _ => return,
            };
            let resolves = match self.tvars.get(&key) {
                Some(TVar::Failed { entry_ok, .. }) => *entry_ok,
                Some(_) => true,
                None => false,
            };
            if !resolves {
                ok = false;
            }
        });
        ok
    }

    /// The value of a condition known when compiling (built from
    /// `@defined`, integer literals, `!`, `&&` and `||`), else None.
    pub(crate) fn static_truth(&self, e: &Expr) -> Option<bool> {
        match &e.kind {
            ExprKind::Builtin {
                func: Builtin::Defined,
                args,
            } => Some(args.first().is_some_and(|a| self.defined(a))),
            ExprKind::Long(n) => Some(*n != 0),
            ExprKind::Unary {
                op: UnOp::Not,
                operand,
            } => self.static_truth(operand).map(|b| !b),
            ExprKind::Binary {
                op: BinOp::And,
                lhs,
                rhs,
            } => match (self.static_truth(lhs)?, self.static_truth(rhs)) {
                (false, _) => Some(false),
                (true, r) => r,
            },
            ExprKind::Binary {
                op: BinOp::Or,
                lhs,
                rhs,
            } => match (self.static_truth(lhs)?, self.static_truth(rhs)) {
                (true, _) => Some(true),
                (false, r) => r,
            },
            _ => None,
        }
    }
}
