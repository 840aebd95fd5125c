//! Expressions. A long is an i64 value; a string is an i64 pointer to a
//! NUL-terminated buffer of `cap` bytes (a stack buffer, a local's buffer or
//! a literal in the module's data); `void` is a dummy 0.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, Value};
use cranelift_module::{DataDescription, Linkage, Module};
use ptap_arch::regs::offset as regoff;
use ptap_lang::ast::{AssignOp, BinOp, IncDec, UnOp};
use ptap_lang::checked::{ArgAbi, ContextValue, Expr, ExprKind, FormatFn, LValue, Type};
use ptap_lang::Span;
use ptap_rt_core::script::ctx::{offset, ABI_SYSCALL, ERR_DIV0, ERR_NESTING};
use ptap_rt_core::script::helper_table::Helper;
use ptap_rt_core::script::meta::GlobalKind;

use super::func::{flags, ArgSel, FunctionTranslator, Kind, LocalSlot, R};
use super::CodegenError;

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    pub(crate) fn translate_expr(&mut self, e: &Expr) -> R<Value> {
        match &e.kind {
            ExprKind::Long(v) => Ok(self.iconst(*v)),
            ExprKind::Str(s) => self.translate_string(s),
            ExprKind::Local(id) => Ok(self.read_local(*id)),
            ExprKind::Global(id) => {
                self.scalar_global(*id, e.span)?;
                Ok(self.read_global(*id))
            }
            ExprKind::Context(cv) => Ok(self.translate_context(*cv)),
            ExprKind::Entry(i) => Ok(self.translate_entry(*i, e.ty)),
            ExprKind::Unary { op, operand } => self.translate_unary(*op, operand),
            ExprKind::Binary { op, lhs, rhs } => self.translate_binary(*op, lhs, rhs, e.span),
            ExprKind::Ternary { cond, then, els } => self.translate_ternary(cond, then, els),
            ExprKind::Assign { target, op, value } => {
                self.translate_assign(target, *op, value, e.span)
            }
            ExprKind::IncDec { target, op, prefix } => {
                self.translate_incdec(target, *op, *prefix, e.span)
            }
            ExprKind::Call { func, args } => self.translate_call(*func, args, e.span),
            ExprKind::Builtin { func, args } => self.translate_builtin(*func, args, e.span),
            ExprKind::Format {
                func: FormatFn::Printf,
                format,
                args,
            } => self.translate_printf(format, args, e.span),
            ExprKind::Format {
                func: FormatFn::Sprintf,
                format,
                args,
            } => self.translate_sprintf(format, args, e.span),
            ExprKind::Element { global, keys } => self.translate_element(*global, keys, e.span),
            ExprKind::In { global, keys } => self.translate_in(*global, keys, e.span),
            ExprKind::Stat { op, target } => self.translate_stat(*op, target, e.span),
            ExprKind::Hist { .. } => unsupported("histograms here", e.span),
            ExprKind::Regex {
                negate,
                subject,
                pattern,
            } => self.translate_regex(*negate, subject, pattern, e.span),
            ExprKind::TargetVar(name) => self.translate_target_var(name, e.span),
        }
    }

    /// A string literal (truncated to MAXSTRINGLEN, as every string value).
    pub(crate) fn translate_string(&mut self, s: &str) -> R<Value> {
        let mut end = s.len().min(self.shared.cap as usize - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.data_string(&s[..end])
    }

    /// `s =~ "re"` / `s !~ "re"`: the pattern is compiled now; the handler
    /// runs the program (`ptap_rt_core::script::regex`).
    pub(crate) fn translate_regex(
        &mut self,
        negate: bool,
        subject: &Expr,
        pattern: &str,
        span: Span,
    ) -> R<Value> {
        let prog = super::regex::compile(pattern).map_err(|why| CodegenError::Unsupported {
            what: format!("the regular expression `{pattern}`: {why}"),
            span,
        })?;
        let s = self.translate_expr(subject)?;
        let len = self.iconst(prog.len() as i64);
        let p = self.data_bytes(prog)?;
        let c = self.ctx;
        let m = self.call_long(Helper::Regex, &[c, s, p, len]);
        Ok(if negate {
            self.b.ins().bxor_imm_s(m, 1)
        } else {
            m
        })
    }

    /// A data object holding `bytes` (not shared).
    fn data_bytes(&mut self, bytes: Vec<u8>) -> R<Value> {
        let name = format!("ptap_data_{}", self.shared.blobs);
        self.shared.blobs += 1;
        let id = self
            .module
            .declare_data(&name, Linkage::Local, false, false)?;
        let mut d = DataDescription::new();
        d.set_align(4);
        d.define(bytes.into_boxed_slice());
        self.module.define_data(id, &d)?;
        let gv = self.module.declare_data_in_func(id, self.b.func);
        Ok(self.b.ins().symbol_value(I64, gv))
    }

    /// A NUL-terminated data object holding `s`, shared by equal strings.
    pub(crate) fn data_string(&mut self, s: &str) -> R<Value> {
        let id = match self.shared.strings.get(s) {
            Some(id) => *id,
            None => {
                let name = format!("ptap_str_{}", self.shared.strings.len());
                let id = self
                    .module
                    .declare_data(&name, Linkage::Local, false, false)?;
                let mut bytes: Vec<u8> = s.bytes().collect();
                bytes.push(0);
                let mut d = DataDescription::new();
                d.define(bytes.into_boxed_slice());
                self.module.define_data(id, &d)?;
                self.shared.strings.insert(s.to_string(), id);
                id
            }
        };
        let gv = self.module.declare_data_in_func(id, self.b.func);
        Ok(self.b.ins().symbol_value(I64, gv))
    }

    pub(crate) fn read_local(&mut self, id: usize) -> Value {
        match self.locals[id] {
            LocalSlot::Long(v) => self.b.use_var(v),
            LocalSlot::Str(p) => p,
        }
    }

    pub(crate) fn global_slot(&self, id: usize) -> (GlobalKind, i64) {
        (
            self.shared.layout.kinds[id],
            self.shared.layout.offsets[id] as i64,
        )
    }

    /// Statistics are used only through `<<<` and `@...` (the checker
    /// enforces it; this keeps the code generator honest if it did not).
    pub(crate) fn scalar_global(&self, id: usize, span: Span) -> R<()> {
        match self.shared.layout.kinds[id] {
            GlobalKind::Stats => unsupported("a statistics global used as a value", span),
            GlobalKind::Array => unsupported("an array used as a value", span),
            _ => Ok(()),
        }
    }

    /// Address of global `id` in the session.
    pub(crate) fn global_addr(&mut self, id: usize) -> Value {
        let (_, off) = self.global_slot(id);
        let g = self.globals();
        self.b.ins().iadd_imm_s(g, off)
    }

    /// The value of a long or string global (callers check [`Self::scalar_global`]).
    pub(crate) fn read_global(&mut self, id: usize) -> Value {
        match self.global_slot(id) {
            (GlobalKind::Long | GlobalKind::Stats | GlobalKind::Array, _) => {
                let p = self.global_addr(id);
                self.b.ins().load(I64, flags(), p, 0)
            }
            (GlobalKind::Str, off) => {
                let buf = self.str_buf();
                let (c, o, cap) = (self.ctx, self.iconst(off), self.cap());
                self.call_helper(Helper::GStrLoad, &[c, o, buf, cap]);
                buf
            }
        }
    }

    pub(crate) fn regs(&mut self) -> Value {
        self.b.ins().load(I64, flags(), self.ctx, offset::REGS)
    }

    pub(crate) fn reg(&mut self, off: usize) -> Value {
        let r = self.regs();
        self.b.ins().load(I64, flags(), r, off as i32)
    }

    pub(crate) fn translate_context(&mut self, cv: ContextValue) -> Value {
        match cv {
            // Typed by the function's DWARF return type when known
            // (`$return`, see tvars.rs), else the raw register.
            ContextValue::Ret => match self.tvars.get("return") {
                Some(_) => self
                    .translate_target_var("return", Span::default())
                    .unwrap_or_else(|_| self.reg(regoff::AX)),
                None => self.reg(regoff::AX),
            },
            ContextValue::Arg(n) => self.translate_arg(n),
        }
    }

    /// `argN`: SysV `rdi rsi rdx rcx r8 r9`, syscall `rdi rsi rdx r10 r8 r9`.
    pub(crate) fn translate_arg(&mut self, n: u8) -> Value {
        const COMMON: [usize; 6] = [
            regoff::DI,
            regoff::SI,
            regoff::DX,
            regoff::CX,
            regoff::R8,
            regoff::R9,
        ];
        let args = match self.kind {
            Kind::Handler { args } => args,
            Kind::Function { .. } => ArgSel::Fixed(ArgAbi::SysV),
        };
        let i = usize::from(n.clamp(1, 6) - 1);
        if i != 3 {
            return self.reg(COMMON[i]);
        }
        match args {
            ArgSel::Fixed(ArgAbi::SysV) => self.reg(regoff::CX),
            ArgSel::Fixed(ArgAbi::Syscall) => self.reg(regoff::R10),
            ArgSel::Dynamic => {
                let (cx, r10) = (self.reg(regoff::CX), self.reg(regoff::R10));
                let abi = self.b.ins().load(I32, flags(), self.ctx, offset::ABI);
                let sys = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::Equal, abi, i64::from(ABI_SYSCALL));
                self.b.ins().select(sys, r10, cx)
            }
        }
    }

    /// `$name`: its register, sign- or zero-extended from its type's size.
    pub(crate) fn translate_target_var(&mut self, name: &str, span: Span) -> R<Value> {
        let Some(t) = self.tvars.get(name).cloned() else {
            return unsupported(&format!("`${name}` here (only in probe handlers)"), span);
        };
        self.translate_tvar(&t, span)
    }

    /// `$name = v` (guru mode): the register the target resumes with.
    pub(crate) fn assign_target_var(
        &mut self,
        name: &str,
        op: AssignOp,
        v: Value,
        span: Span,
    ) -> R<Value> {
        let new = match op.0 {
            None => v,
            Some(bop) => {
                let old = self.translate_target_var(name, span)?;
                self.long_binop(bop, old, v, span)
            }
        };
        let Some(reg) = self.tvars.get(name).and_then(|t| t.register()) else {
            return unsupported(&format!("assigning `${name}` (not in a register)"), span);
        };
        let r = self.regs();
        self.b.ins().store(flags(), new, r, reg as i32);
        Ok(new)
    }

    /// `@entry(e)` in the return handler: a long, or the address of the
    /// string saved in the kretprobe instance's data.
    pub(crate) fn translate_entry(&mut self, i: usize, ty: Type) -> Value {
        let p = self.b.ins().load(I64, flags(), self.ctx, offset::ENTRY);
        let at = self.entry_offsets.get(i).copied().unwrap_or(8 * i as i32);
        if ty == Type::String {
            self.b.ins().iadd_imm_s(p, i64::from(at))
        } else {
            self.b.ins().load(I64, flags(), p, at)
        }
    }

    pub(crate) fn translate_unary(&mut self, op: UnOp, operand: &Expr) -> R<Value> {
        let v = self.translate_expr(operand)?;
        Ok(match op {
            UnOp::Neg => self.b.ins().ineg(v),
            UnOp::Plus => v,
            UnOp::Not => self.bool_to_long_eq0(v),
            UnOp::BitNot => self.b.ins().bnot(v),
        })
    }

    pub(crate) fn bool_to_long_eq0(&mut self, v: Value) -> Value {
        let c = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
        self.b.ins().uextend(I64, c)
    }

    pub(crate) fn translate_binary(
        &mut self,
        op: BinOp,
        lhs: &Expr,
        rhs: &Expr,
        span: Span,
    ) -> R<Value> {
        // (`=~` and `!~` reach here as `ExprKind::Regex`: the checker
        // rewrites them.)
        if matches!(op, BinOp::And | BinOp::Or) {
            return self.translate_logical(op, lhs, rhs);
        }
        let a = self.translate_expr(lhs)?;
        let b = self.translate_expr(rhs)?;
        if lhs.ty == Type::String {
            return Ok(self.string_binop(op, a, b, span));
        }
        Ok(self.long_binop(op, a, b, span))
    }

    pub(crate) fn string_binop(&mut self, op: BinOp, a: Value, b: Value, span: Span) -> Value {
        if op == BinOp::Concat {
            let dst = self.str_buf();
            let cap = self.cap();
            self.call_helper(Helper::StrConcat, &[dst, a, b, cap]);
            return dst;
        }
        let c = self.call_long(Helper::StrCmp, &[a, b]);
        let zero = self.iconst(0);
        self.compare(op, c, zero, span)
    }

    pub(crate) fn compare(&mut self, op: BinOp, a: Value, b: Value, _span: Span) -> Value {
        let cc = match op {
            BinOp::Lt => IntCC::SignedLessThan,
            BinOp::Gt => IntCC::SignedGreaterThan,
            BinOp::Le => IntCC::SignedLessThanOrEqual,
            BinOp::Ge => IntCC::SignedGreaterThanOrEqual,
            BinOp::Eq => IntCC::Equal,
            _ => IntCC::NotEqual,
        };
        let c = self.b.ins().icmp(cc, a, b);
        self.b.ins().uextend(I64, c)
    }

    /// Arithmetic on longs. Division by zero is a runtime error; `x / -1`
    /// and `x % -1` are computed without the machine instruction (which
    /// traps on `i64::MIN / -1`).
    pub(crate) fn long_binop(&mut self, op: BinOp, a: Value, b: Value, span: Span) -> Value {
        match op {
            BinOp::Add => self.b.ins().iadd(a, b),
            BinOp::Sub => self.b.ins().isub(a, b),
            BinOp::Mul => self.b.ins().imul(a, b),
            BinOp::Div | BinOp::Mod => self.translate_division(op, a, b, span),
            BinOp::Shl => self.b.ins().ishl(a, b),
            BinOp::Shr => self.b.ins().sshr(a, b),
            BinOp::BitAnd => self.b.ins().band(a, b),
            BinOp::BitOr => self.b.ins().bor(a, b),
            BinOp::BitXor => self.b.ins().bxor(a, b),
            _ => self.compare(op, a, b, span),
        }
    }

    pub(crate) fn translate_division(
        &mut self,
        op: BinOp,
        a: Value,
        b: Value,
        span: Span,
    ) -> Value {
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        self.fail_if(is0, ERR_DIV0, span);
        let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let one = self.iconst(1);
        let d = self.b.ins().select(m1, one, b);
        if op == BinOp::Div {
            let q = self.b.ins().sdiv(a, d);
            let neg = self.b.ins().ineg(a);
            self.b.ins().select(m1, neg, q)
        } else {
            self.b.ins().srem(a, d)
        }
    }

    /// `a && b`, `a || b` with short-circuit; `done`'s block parameter is the 0/1 result.
    pub(crate) fn translate_logical(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr) -> R<Value> {
        let rhs_b = self.b.create_block();
        let done = self.b.create_block();
        let res = self.b.append_block_param(done, I64);
        let a = self.translate_expr(lhs)?;
        let short = self.iconst(i64::from(op == BinOp::Or));
        if op == BinOp::And {
            self.b.ins().brif(a, rhs_b, &[], done, &[short.into()]);
        } else {
            self.b.ins().brif(a, done, &[short.into()], rhs_b, &[]);
        }
        self.b.switch_to_block(rhs_b);
        let v = self.translate_expr(rhs)?;
        let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
        let c = self.b.ins().uextend(I64, c);
        self.jump(done, &[c]);
        self.b.switch_to_block(done);
        Ok(res)
    }

    /// `c ? x : y`; `merge`'s block parameter is the chosen value (a long or a string pointer).
    pub(crate) fn translate_ternary(&mut self, cond: &Expr, then: &Expr, els: &Expr) -> R<Value> {
        // `@defined($x) ? $x : 0`: only the branch taken (defined.rs).
        if let Some(t) = self.static_truth(cond) {
            return self.translate_expr(if t { then } else { els });
        }
        let (tb, eb, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let res = self.b.append_block_param(merge, I64);
        let c = self.translate_expr(cond)?;
        self.b.ins().brif(c, tb, &[], eb, &[]);
        self.b.switch_to_block(tb);
        let t = self.translate_expr(then)?;
        self.jump(merge, &[t]);
        self.b.switch_to_block(eb);
        let e = self.translate_expr(els)?;
        self.jump(merge, &[e]);
        self.b.switch_to_block(merge);
        Ok(res)
    }

    pub(crate) fn translate_assign(
        &mut self,
        target: &LValue,
        op: AssignOp,
        value: &Expr,
        span: Span,
    ) -> R<Value> {
        let v = self.translate_expr(value)?;
        match target {
            LValue::Local(id) => Ok(self.assign_local(*id, op, v, span)),
            LValue::Global(id) => {
                self.scalar_global(*id, span)?;
                Ok(self.assign_global(*id, op, v, span))
            }
            LValue::Element { global, keys } => self.assign_element(*global, keys, op, v, span),
            LValue::TargetVar(name) => self.assign_target_var(name, op, v, span),
        }
    }

    pub(crate) fn assign_local(&mut self, id: usize, op: AssignOp, v: Value, span: Span) -> Value {
        match self.locals[id] {
            LocalSlot::Long(var) => {
                let new = match op.0 {
                    None => v,
                    Some(bop) => {
                        let old = self.b.use_var(var);
                        self.long_binop(bop, old, v, span)
                    }
                };
                self.b.def_var(var, new);
                new
            }
            LocalSlot::Str(p) => {
                let cap = self.cap();
                match op.0 {
                    None => self.call_helper(Helper::StrCopy, &[p, v, cap]),
                    Some(_) => self.call_helper(Helper::StrConcat, &[p, p, v, cap]),
                };
                p
            }
        }
    }

    /// Globals: `=` stores; `+= -= &= |= ^=` are one atomic read-modify-write;
    /// the other operators retry a compare-and-swap until no other thread
    /// interfered, so no update is ever lost.
    pub(crate) fn assign_global(&mut self, id: usize, op: AssignOp, v: Value, span: Span) -> Value {
        let (kind, off) = self.global_slot(id);
        if kind == GlobalKind::Str {
            let (c, o, cap) = (self.ctx, self.iconst(off), self.cap());
            let src = match op.0 {
                None => v,
                Some(_) => {
                    let cur = self.read_global(id);
                    self.call_helper(Helper::StrConcat, &[cur, cur, v, cap]);
                    cur
                }
            };
            self.call_helper(Helper::GStrStore, &[c, o, src, cap]);
            return src;
        }
        let p = self.global_addr(id);
        let Some(bop) = op.0 else {
            self.b.ins().store(flags(), v, p, 0);
            return v;
        };
        let rmw = match bop {
            BinOp::Add => Some(AtomicRmwOp::Add),
            BinOp::Sub => Some(AtomicRmwOp::Sub),
            BinOp::BitAnd => Some(AtomicRmwOp::And),
            BinOp::BitOr => Some(AtomicRmwOp::Or),
            BinOp::BitXor => Some(AtomicRmwOp::Xor),
            _ => None,
        };
        if let Some(r) = rmw {
            let old = self.b.ins().atomic_rmw(I64, flags(), r, p, v);
            return self.long_binop(bop, old, v, span);
        }
        if matches!(bop, BinOp::Div | BinOp::Mod) {
            let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
            self.fail_if(is0, ERR_DIV0, span);
        }
        // CAS loop: `retry`'s block parameter is the value we believe is stored.
        let retry = self.b.create_block();
        let done = self.b.create_block();
        let old = self.b.append_block_param(retry, I64);
        let first = self.b.ins().load(I64, flags(), p, 0);
        self.jump(retry, &[first]);
        self.b.switch_to_block(retry);
        let new = self.long_binop(bop, old, v, span);
        let seen = self.b.ins().atomic_cas(flags(), p, old, new);
        let same = self.b.ins().icmp(IntCC::Equal, seen, old);
        self.b.ins().brif(same, done, &[], retry, &[seen.into()]);
        self.b.switch_to_block(done);
        new
    }

    pub(crate) fn translate_incdec(
        &mut self,
        target: &LValue,
        op: IncDec,
        prefix: bool,
        span: Span,
    ) -> R<Value> {
        let delta = if op == IncDec::Inc { 1 } else { -1 };
        let old = match target {
            LValue::Local(id) => match self.locals[*id] {
                LocalSlot::Long(var) => {
                    let old = self.b.use_var(var);
                    let new = self.b.ins().iadd_imm_s(old, delta);
                    self.b.def_var(var, new);
                    old
                }
                LocalSlot::Str(_) => return unsupported("`++`/`--` on a string", span),
            },
            LValue::Global(id) => {
                self.scalar_global(*id, span)?;
                let p = self.global_addr(*id);
                let d = self.iconst(delta);
                self.b
                    .ins()
                    .atomic_rmw(I64, flags(), AtomicRmwOp::Add, p, d)
            }
            LValue::Element { global, keys } => {
                return self.incdec_element(*global, keys, op, prefix, span)
            }
            LValue::TargetVar(name) => {
                let d = self.iconst(delta);
                let new = self.assign_target_var(name, AssignOp(Some(BinOp::Add)), d, span)?;
                return Ok(if prefix {
                    new
                } else {
                    self.b.ins().iadd_imm_s(new, -delta)
                });
            }
        };
        Ok(if prefix {
            self.b.ins().iadd_imm_s(old, delta)
        } else {
            old
        })
    }

    /// A script function call: the callee gets the ctx, a result buffer
    /// when it returns a string, then its arguments. Calls nest at most
    /// MAXNESTING deep (a runtime error, never a stack overflow).
    pub(crate) fn translate_call(&mut self, func: usize, args: &[Expr], span: Span) -> R<Value> {
        let mut vals = vec![self.ctx];
        let ret_string = self.shared.script.functions[func].ret == Type::String;
        if ret_string {
            let buf = self.str_buf();
            vals.push(buf);
        }
        for a in args {
            let v = self.translate_expr(a)?;
            vals.push(v);
        }
        let depth = self.b.ins().load(I32, flags(), self.ctx, offset::NESTING);
        let deeper = self.b.ins().iadd_imm_s(depth, 1);
        let max = self.shared.script.limits.maxnesting as i64;
        let too_deep = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, deeper, max);
        self.fail_if(too_deep, ERR_NESTING, span);
        self.b
            .ins()
            .store(flags(), deeper, self.ctx, offset::NESTING);
        let id = self.shared.functions[func];
        self.shared.calls.push(func);
        let r = self.call_function(id, &vals);
        self.b
            .ins()
            .store(flags(), depth, self.ctx, offset::NESTING);
        self.check_callee();
        Ok(r)
    }

    pub(crate) fn translate_args(&mut self, args: &[Expr]) -> R<Vec<Value>> {
        args.iter().map(|a| self.translate_expr(a)).collect()
    }
}

pub(crate) fn unsupported<T>(what: &str, span: Span) -> R<T> {
    Err(CodegenError::Unsupported {
        what: what.to_string(),
        span,
    })
}

/// Where a probe's `@entry` values live in a kretprobe instance's data:
/// each one's byte offset, and the number of 8-byte words in all (the
/// metadata's `entry_values`). A long takes a word, a string `cap`
/// (MAXSTRINGLEN + 1) bytes rounded up to words.
pub(crate) fn entry_layout(p: &ptap_lang::checked::Probe, cap: u64) -> (Vec<i32>, u32) {
    let mut at = 0u64;
    let offsets = p
        .entry_exprs
        .iter()
        .map(|e| {
            let o = at;
            at += if e.ty == Type::String {
                cap.div_ceil(8) * 8
            } else {
                8
            };
            o as i32
        })
        .collect();
    (offsets, (at / 8) as u32)
}
