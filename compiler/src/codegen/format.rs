//! Output: `printf`/`print` (one record: format id + values, formatted by
//! ptap) and `sprintf`/`sprint` (formatted in the handler).

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_module::Module;
use ptap_lang::checked::{Expr, Type};
use ptap_lang::printf::{Conv, Flags, Format, MemLen, Piece, Spec};
use ptap_lang::Span;
use ptap_rt_core::script::helper_table::Helper;
use ptap_rt_core::script::record::MAX_ARGS;

use super::expr::unsupported;
use super::func::{FunctionTranslator, R};
use super::CodegenError;

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// `print(a, b, ...)`: a synthesized format, `%d`/`%s` separated by spaces, then `\n`.
    pub(crate) fn translate_print(&mut self, args: &[Expr], span: Span) -> R<Value> {
        if let Some(h) = args.iter().find(|a| a.ty == Type::Hist) {
            if args.len() != 1 {
                return unsupported("printing a histogram together with other values", h.span);
            }
            return self.translate_hist_print(h, span);
        }
        let f = value_format(args, "\n")?;
        self.translate_printf(&f, args, span)
    }

    /// The arguments of printf/sprintf in a stack array (longs, or string
    /// pointers flagged in the returned bit mask). `mem`: the `%m` / `%M`
    /// arguments ([`Format::mem_args`]), whose memory is read here and
    /// passed on as hex text.
    pub(crate) fn translate_values(
        &mut self,
        args: &[Expr],
        span: Span,
        mem: &[(usize, MemLen)],
    ) -> R<(Value, i64)> {
        if args.len() > MAX_ARGS {
            return Err(CodegenError::Unsupported {
                what: format!("more than {MAX_ARGS} values in one printf/print"),
                span,
            });
        }
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * args.len().max(1)) as u32,
            3,
        ));
        let mut mask = 0i64;
        let mut vals = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            let mut v = self.translate_expr(a)?;
            if a.ty == Type::String {
                mask |= 1 << i;
            }
            if let Some(&(_, len)) = mem.iter().find(|(at, _)| *at == i) {
                let n = match len {
                    MemLen::Const(n) => self.iconst(i64::from(n)),
                    MemLen::Arg(k) => vals[k],
                };
                let (c, dst, cap) = (self.ctx, self.str_buf(), self.cap());
                self.call_helper(Helper::UserHex, &[c, dst, v, n, cap]);
                self.check_helper(a.span);
                mask |= 1 << i;
                v = dst;
            }
            vals.push(v);
            self.b.ins().stack_store(I64, v, slot, (8 * i) as i32);
        }
        Ok((self.b.ins().stack_addr(I64, slot, 0), mask))
    }

    /// printf: one output record (format id + values) through the helper.
    pub(crate) fn translate_printf(
        &mut self,
        format: &Format,
        args: &[Expr],
        span: Span,
    ) -> R<Value> {
        let id = self.shared.formats.id(format);
        let (arr, mask) = self.translate_values(args, span, &format.mem_args())?;
        let (c, f, n, m) = (
            self.ctx,
            self.iconst(i64::from(id)),
            self.iconst(args.len() as i64),
            self.iconst(mask),
        );
        self.call_helper(Helper::Printf, &[c, f, arr, n, m]);
        Ok(self.iconst(0))
    }

    /// sprintf: formatted in the handler (the runtime's formatter) into a
    /// fresh string buffer; the format travels as its C-printf text.
    pub(crate) fn translate_sprintf(
        &mut self,
        format: &Format,
        args: &[Expr],
        span: Span,
    ) -> R<Value> {
        let text = self.data_string(&format.to_runtime())?;
        let (arr, _) = self.translate_values(args, span, &format.mem_args())?;
        let (dst, n, cap) = (self.str_buf(), self.iconst(args.len() as i64), self.cap());
        self.call_helper(Helper::Sprintf, &[dst, text, arr, n, cap]);
        Ok(dst)
    }
}

/// The format `print`/`sprint` use: `%d`/`%s` per value, separated by one
/// space, followed by `end`.
pub(crate) fn value_format(args: &[Expr], end: &str) -> R<Format> {
    let mut pieces = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            pieces.push(Piece::Text(" ".into()));
        }
        let conv = match a.ty {
            Type::Long => Conv::Signed,
            Type::String => Conv::Str,
            _ => return unsupported("printing this histogram", a.span),
        };
        pieces.push(Piece::Spec(Spec {
            flags: Flags::default(),
            width: None,
            precision: None,
            conv,
        }));
    }
    if !end.is_empty() {
        pieces.push(Piece::Text(end.into()));
    }
    Ok(Format { pieces })
}
