//! Code for a target-variable expression ([`super::dwarf_access::TVar`]):
//! registers, fault-safe reads of target memory (`user_read`, an error on
//! a bad address), and pretty-printed strings formatted by the runtime's
//! `sprintf` (quoted C strings through `user_string_quoted`).

use cranelift_codegen::ir::types::{I16, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_module::Module;
use ptap_lang::checked::Expr;
use ptap_lang::Span;
use ptap_rt_core::script::helper_table::Helper;
use ptap_rt_core::script::record::MAX_ARGS;

use super::dwarf_access::{NumFmt, Op, Piece, TVar};
use super::expr::unsupported;
use super::func::{FunctionTranslator, R};

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    pub(crate) fn translate_tvar(&mut self, t: &TVar, span: Span) -> R<Value> {
        let zero = self.iconst(0);
        self.translate_tvar_from(t, zero, span)
    }

    /// `start`: the value the ops start from (the pointer of `@cast`).
    fn translate_tvar_from(&mut self, t: &TVar, start: Value, span: Span) -> R<Value> {
        match t {
            TVar::Long(ops) => Ok(self.tvar_ops(ops, start, span)),
            TVar::Str(pieces) => self.tvar_pretty(pieces, start, span),
            TVar::Failed { what, span, .. } => Err(super::CodegenError::TargetVar {
                what: what.clone(),
                span: *span,
            }),
        }
    }

    /// `@cast(ptr, "type"[, "module"])->a->b`.
    pub(crate) fn translate_cast(&mut self, args: &[Expr], span: Span) -> R<Value> {
        let Some(t) = self.tvars.get(&super::tvars::cast_key(args)).cloned() else {
            return unsupported("`@cast` here (only in probe handlers)", span);
        };
        let base = self.translate_expr(&args[0])?;
        self.translate_tvar_from(&t, base, span)
    }

    /// `$arr[i]`: the path's code, with the index.
    pub(crate) fn translate_target_index(&mut self, args: &[Expr], span: Span) -> R<Value> {
        let path = match args.get(1).map(|a| &a.kind) {
            Some(ptap_lang::checked::ExprKind::Str(s)) => s.clone(),
            _ => return unsupported("this target variable", span),
        };
        let Some(t) = self.tvars.get(&path).cloned() else {
            return unsupported(&format!("`${path}` here (only in probe handlers)"), span);
        };
        let index = self.translate_expr(&args[0])?;
        self.translate_tvar_from(&t, index, span)
    }

    /// `start`: the first value (`@cast`'s pointer), and the index of
    /// `AddIndex` (`$a[i]`, whose ops start from a register).
    fn tvar_ops(&mut self, ops: &[Op], start: Value, span: Span) -> Value {
        let mut v = start;
        for op in ops {
            v = match *op {
                Op::Reg(r) => self.reg(r),
                Op::Const(c) => self.iconst(c),
                Op::Add(off) => self.b.ins().iadd_imm_s(v, off),
                Op::AddIndex(stride) => {
                    let scaled = self.b.ins().imul_imm_s(start, stride);
                    self.b.ins().iadd(v, scaled)
                }
                Op::Load { off, size, signed } => {
                    let a = self.b.ins().iadd_imm_s(v, off);
                    let (c, s) = (self.ctx, self.iconst(i64::from(size)));
                    let x = self.call_long(Helper::UserRead, &[c, a, s]);
                    self.check_helper(span);
                    // user_read sign-extends.
                    if signed || size == 8 {
                        x
                    } else {
                        self.narrow(x, size, false)
                    }
                }
                Op::Narrow { size, signed } => self.narrow(v, size, signed),
                Op::ExeBias => {
                    let c = self.ctx;
                    self.call_long(Helper::ExeBias, &[c])
                }
            };
        }
        v
    }

    fn narrow(&mut self, v: Value, size: u8, signed: bool) -> Value {
        let ty = match size {
            1 => I8,
            2 => I16,
            4 => I32,
            _ => return v,
        };
        let n = self.b.ins().ireduce(ty, v);
        if signed {
            self.b.ins().sextend(I64, n)
        } else {
            self.b.ins().uextend(I64, n)
        }
    }

    /// Numbers and texts formatted by `sprintf` (at most MAX_ARGS values
    /// per call), quoted strings by `user_string_quoted`, the parts
    /// concatenated (two buffers besides the result, whatever the count).
    fn tvar_pretty(&mut self, pieces: &[Piece], start: Value, span: Span) -> R<Value> {
        let out = self.str_buf();
        let part = self.str_buf();
        let zero = self.iconst(0);
        self.b.ins().store(super::func::flags(), zero, out, 0);
        let cap = self.cap();
        let mut fmt = String::new();
        let mut vals = Vec::new();
        for p in pieces {
            match p {
                Piece::Text(t) => fmt.push_str(&t.replace('%', "%%")),
                Piece::Num(ops, f) => {
                    if vals.len() == MAX_ARGS {
                        self.tvar_flush(&mut fmt, &mut vals, out, part)?;
                    }
                    fmt.push_str(match f {
                        NumFmt::Signed => "%ld",
                        NumFmt::Unsigned => "%lu",
                        NumFmt::Hex => "0x%lx",
                    });
                    vals.push(self.tvar_ops(ops, start, span));
                }
                Piece::Str(ops) => {
                    self.tvar_flush(&mut fmt, &mut vals, out, part)?;
                    let a = self.tvar_ops(ops, start, span);
                    let c = self.ctx;
                    self.call_helper(Helper::UserStringQuoted, &[c, part, a, cap]);
                    self.call_helper(Helper::StrConcat, &[out, out, part, cap]);
                }
            }
        }
        self.tvar_flush(&mut fmt, &mut vals, out, part)?;
        Ok(out)
    }

    /// `out .= sprintf(fmt, vals...)`, then both emptied.
    fn tvar_flush(
        &mut self,
        fmt: &mut String,
        vals: &mut Vec<Value>,
        out: Value,
        part: Value,
    ) -> R<()> {
        if fmt.is_empty() {
            return Ok(());
        }
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * vals.len().max(1)) as u32,
            3,
        ));
        for (i, v) in vals.iter().enumerate() {
            self.b.ins().stack_store(I64, *v, slot, (8 * i) as i32);
        }
        let arr = self.b.ins().stack_addr(I64, slot, 0);
        let text = self.data_string(fmt)?;
        let (n, cap) = (self.iconst(vals.len() as i64), self.cap());
        self.call_helper(Helper::Sprintf, &[part, text, arr, n, cap]);
        self.call_helper(Helper::StrConcat, &[out, out, part, cap]);
        fmt.clear();
        vals.clear();
        Ok(())
    }
}
