//! Statements. Every statement (but a block) and every loop iteration
//! takes one unit of the MAXACTION budget.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I8};
use cranelift_codegen::ir::InstBuilder;
use cranelift_module::Module;
use ptap_lang::checked::{DeleteTarget, Expr, Stmt, StmtKind};
use ptap_lang::Span;
use ptap_rt_core::script::ctx::{offset, ERR_MAXACTION, ERR_NEXT};
use ptap_rt_core::script::helper_table::Helper;
use ptap_rt_core::script::meta::GlobalKind;

use super::expr::unsupported;
use super::func::{flags, FunctionTranslator, Kind, LocalSlot, R};

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    pub(crate) fn translate_block(&mut self, stmts: &[Stmt]) -> R<()> {
        stmts.iter().try_for_each(|s| self.translate_stmt(s))
    }

    pub(crate) fn translate_stmt(&mut self, s: &Stmt) -> R<()> {
        if !matches!(s.kind, StmtKind::Block(_)) {
            self.count_action(s.span);
        }
        match &s.kind {
            StmtKind::Expr(e) => self.translate_expr(e).map(drop),
            StmtKind::Block(ss) => self.translate_block(ss),
            StmtKind::If { cond, then, els } => self.translate_if(cond, then, els.as_deref()),
            StmtKind::While { cond, body } => {
                self.translate_loop(None, Some(cond), None, body, s.span)
            }
            StmtKind::For {
                init,
                cond,
                step,
                body,
            } => self.translate_loop(init.as_ref(), cond.as_ref(), step.as_ref(), body, s.span),
            StmtKind::Break => self.translate_break_continue(true, s.span),
            StmtKind::Continue => self.translate_break_continue(false, s.span),
            StmtKind::Next => self.translate_next(),
            StmtKind::Return(v) => self.translate_return(v.as_ref()),
            StmtKind::Delete(t) => self.translate_delete(t, s.span),
            StmtKind::Foreach(f) => self.translate_foreach_stmt(f, s),
            StmtKind::Try { body, var, catch } => self.translate_try(body, *var, catch),
            StmtKind::Aggregate { target, value } => {
                self.translate_aggregate(target, value, s.span)
            }
        }
    }

    fn translate_if(&mut self, cond: &Expr, then: &Stmt, els: Option<&Stmt>) -> R<()> {
        // `if (@defined($x))`: only the branch taken (defined.rs).
        if let Some(t) = self.static_truth(cond) {
            return match (t, els) {
                (true, _) => self.translate_stmt(then),
                (false, Some(e)) => self.translate_stmt(e),
                (false, None) => Ok(()),
            };
        }
        let (tb, eb, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let c = self.translate_expr(cond)?;
        self.b.ins().brif(c, tb, &[], eb, &[]);
        self.b.switch_to_block(tb);
        self.translate_stmt(then)?;
        self.jump(merge, &[]);
        self.b.switch_to_block(eb);
        if let Some(e) = els {
            self.translate_stmt(e)?;
        }
        self.jump(merge, &[]);
        self.b.switch_to_block(merge);
        Ok(())
    }

    /// `while` and `for`: header (budget, condition) -> body -> step -> header.
    /// `continue` jumps to the step, `break` to the exit.
    fn translate_loop(
        &mut self,
        init: Option<&Expr>,
        cond: Option<&Expr>,
        step: Option<&Expr>,
        body: &Stmt,
        span: Span,
    ) -> R<()> {
        if let Some(i) = init {
            self.translate_expr(i)?;
        }
        let (header, body_b, step_b, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.jump(header, &[]);
        self.b.switch_to_block(header);
        self.count_action(span);
        match cond {
            Some(c) => {
                let v = self.translate_expr(c)?;
                self.b.ins().brif(v, body_b, &[], exit, &[]);
            }
            None => self.jump(body_b, &[]),
        }
        self.b.switch_to_block(body_b);
        self.loops.push((step_b, exit));
        let r = self.translate_stmt(body);
        self.loops.pop();
        r?;
        self.jump(step_b, &[]);
        self.b.switch_to_block(step_b);
        if let Some(s) = step {
            self.translate_expr(s)?;
        }
        self.jump(header, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// `try { body } catch (msg) { handler }`: inside `body`, errors go to
    /// `catch_b` instead of leaving the function. MAXACTION and `next`
    /// cannot be caught: they continue to the outer error target.
    fn translate_try(&mut self, body: &[Stmt], var: Option<usize>, catch: &[Stmt]) -> R<()> {
        let (catch_b, handle, after) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let outer = std::mem::replace(&mut self.error_target, catch_b);
        let r = self.translate_block(body);
        self.error_target = outer;
        r?;
        self.jump(after, &[]);
        self.b.switch_to_block(catch_b);
        let e = self.b.ins().load(I32, flags(), self.ctx, offset::ERROR);
        let budget = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, e, i64::from(ERR_MAXACTION));
        let next = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, e, i64::from(ERR_NEXT));
        let uncatchable = self.b.ins().bor(budget, next);
        self.b.ins().brif(uncatchable, outer, &[], handle, &[]);
        self.b.switch_to_block(handle);
        if let Some(v) = var {
            if let LocalSlot::Str(p) = self.locals[v] {
                let (c, cap) = (self.ctx, self.cap());
                self.call_helper(Helper::ErrMsg, &[c, p, cap]);
            }
        }
        let none = self.b.ins().iconst(I32, 0);
        self.b.ins().store(flags(), none, self.ctx, offset::ERROR);
        self.translate_block(catch)?;
        self.jump(after, &[]);
        self.b.switch_to_block(after);
        Ok(())
    }

    fn translate_break_continue(&mut self, is_break: bool, span: Span) -> R<()> {
        let Some(&(cont, brk)) = self.loops.last() else {
            return unsupported("`break`/`continue` outside a loop", span);
        };
        self.jump(if is_break { brk } else { cont }, &[]);
        self.dead_block();
        Ok(())
    }

    /// `next`: leave the probe handler. Inside a function it unwinds like an
    /// error (ERR_NEXT) that the runtime does not report.
    fn translate_next(&mut self) -> R<()> {
        match self.kind {
            Kind::Handler { .. } => {
                let z = self.iconst(0);
                let e = self.exit;
                self.jump(e, &[z]);
            }
            Kind::Function { .. } => {
                let n = self.b.ins().iconst(I32, i64::from(ERR_NEXT));
                self.b.ins().store(flags(), n, self.ctx, offset::ERROR);
                let e = self.error_exit;
                self.jump(e, &[]);
            }
        }
        self.dead_block();
        Ok(())
    }

    fn translate_return(&mut self, v: Option<&Expr>) -> R<()> {
        let r = match (v, &self.kind) {
            (None, _) | (Some(_), Kind::Handler { .. }) => self.iconst(0),
            (Some(e), Kind::Function { ret_buf: Some(buf) }) => {
                let buf = *buf;
                let s = self.translate_expr(e)?;
                let cap = self.cap();
                self.call_helper(Helper::StrCopy, &[buf, s, cap]);
                buf
            }
            (Some(e), Kind::Function { ret_buf: None }) => self.translate_expr(e)?,
        };
        let e = self.exit;
        self.jump(e, &[r]);
        self.dead_block();
        Ok(())
    }

    fn translate_delete(&mut self, t: &DeleteTarget, span: Span) -> R<()> {
        match t {
            DeleteTarget::Local(id) => match self.locals[*id] {
                LocalSlot::Long(var) => {
                    let z = self.iconst(0);
                    self.b.def_var(var, z);
                }
                LocalSlot::Str(p) => {
                    let z = self.b.ins().iconst(I8, 0);
                    self.b.ins().store(flags(), z, p, 0);
                }
            },
            DeleteTarget::Global(id) if self.shared.layout.kinds[*id] == GlobalKind::Array => {
                return self.clear_array(*id, span)
            }
            DeleteTarget::Global(id) => {
                let (kind, off) = (
                    self.shared.layout.kinds[*id],
                    self.shared.layout.offsets[*id] as i64,
                );
                let g = self.globals();
                let p = self.b.ins().iadd_imm_s(g, off);
                match kind {
                    GlobalKind::Long => {
                        let z = self.iconst(0);
                        self.b.ins().store(flags(), z, p, 0);
                    }
                    GlobalKind::Str => {
                        let empty = self.str_buf();
                        let (c, o, cap) = (self.ctx, self.iconst(off), self.cap());
                        self.call_helper(Helper::GStrStore, &[c, o, empty, cap]);
                    }
                    GlobalKind::Stats => self.reset_stats(*id, p),
                    GlobalKind::Array => {}
                }
            }
            DeleteTarget::Element { global, keys } => {
                return self.delete_element(*global, keys, span)
            }
        }
        Ok(())
    }
}
