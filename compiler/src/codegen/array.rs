//! Associative arrays: every access is a helper call on the array's offset
//! in the session's globals area with the keys in a stack array (one i64
//! per key: a long, or a string pointer). See `ptap_rt_core::script::map`.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::Variable;
use cranelift_module::Module;
use ptap_lang::ast::{AssignOp, BinOp, IncDec};
use ptap_lang::checked::{AggTarget, Expr, Foreach, SortBy, StatOp, Stmt};
use ptap_lang::Span;
use ptap_rt_core::script::helper_table::Helper;
use ptap_rt_core::script::map::Kind as MapKind;
use ptap_rt_core::script::meta::GlobalKind;

use super::expr::unsupported;
use super::func::{flags, FunctionTranslator, LocalSlot, R};

/// Largest array a foreach walks: its index buffer (4 bytes per entry) is
/// on the handler's stack, which in a target may be a signal stack.
const MAX_FOREACH: u64 = 4096;
/// The same in begin/end/timer probes, which run on ptap's main thread
/// (1 MiB of index buffer).
const MAX_FOREACH_PTAP: u64 = 1 << 18;

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// The array's offset (as a value) and its value kind.
    fn array(&mut self, global: usize, span: Span) -> R<(Value, MapKind, u64)> {
        let Some(a) = self.shared.layout.arrays[global].clone() else {
            return unsupported("indexing a global that is not an array", span);
        };
        debug_assert_eq!(self.shared.layout.kinds[global], GlobalKind::Array);
        let off = self.shared.layout.offsets[global] as i64;
        Ok((self.iconst(off), a.value, a.capacity))
    }

    /// The keys in a stack array.
    pub(crate) fn keys(&mut self, keys: &[Expr]) -> R<Value> {
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * keys.len().max(1)) as u32,
            3,
        ));
        for (i, k) in keys.iter().enumerate() {
            let v = self.translate_expr(k)?;
            self.b.ins().stack_store(I64, v, slot, (8 * i) as i32);
        }
        Ok(self.b.ins().stack_addr(I64, slot, 0))
    }

    /// `a[k]` (0 / "" when absent).
    pub(crate) fn translate_element(
        &mut self,
        global: usize,
        keys: &[Expr],
        span: Span,
    ) -> R<Value> {
        let (off, kind, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let c = self.ctx;
        if kind == MapKind::Str {
            let (dst, cap) = (self.str_buf(), self.cap());
            self.call_helper(Helper::MapGet, &[c, off, k, dst, cap]);
            return Ok(dst);
        }
        let z = self.iconst(0);
        Ok(self.call_long(Helper::MapGet, &[c, off, k, z, z]))
    }

    /// `a[k] = v`, `a[k] op= v`. `+=`/`-=` on longs are atomic; other
    /// operators read, compute and store.
    pub(crate) fn assign_element(
        &mut self,
        global: usize,
        keys: &[Expr],
        op: AssignOp,
        v: Value,
        span: Span,
    ) -> R<Value> {
        let (off, kind, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let c = self.ctx;
        let result = match (op.0, kind) {
            (None, _) => {
                self.call_helper(Helper::MapSet, &[c, off, k, v]);
                v
            }
            (Some(BinOp::Add), MapKind::Long) => self.call_long(Helper::MapAdd, &[c, off, k, v]),
            (Some(BinOp::Sub), MapKind::Long) => {
                let d = self.b.ins().ineg(v);
                self.call_long(Helper::MapAdd, &[c, off, k, d])
            }
            (Some(_), MapKind::Str) => {
                let (cur, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::MapGet, &[c, off, k, cur, cap]);
                self.call_helper(Helper::StrConcat, &[cur, cur, v, cap]);
                self.call_helper(Helper::MapSet, &[c, off, k, cur]);
                cur
            }
            (Some(bop), _) => {
                let z = self.iconst(0);
                let old = self.call_long(Helper::MapGet, &[c, off, k, z, z]);
                let new = self.long_binop(bop, old, v, span);
                self.call_helper(Helper::MapSet, &[c, off, k, new]);
                new
            }
        };
        self.check_helper(span);
        Ok(result)
    }

    /// `a[k]++` and friends: one atomic add.
    pub(crate) fn incdec_element(
        &mut self,
        global: usize,
        keys: &[Expr],
        op: IncDec,
        prefix: bool,
        span: Span,
    ) -> R<Value> {
        let (off, _, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let delta = if op == IncDec::Inc { 1 } else { -1 };
        let (c, d) = (self.ctx, self.iconst(delta));
        let new = self.call_long(Helper::MapAdd, &[c, off, k, d]);
        self.check_helper(span);
        Ok(if prefix {
            new
        } else {
            self.b.ins().iadd_imm_s(new, -delta)
        })
    }

    /// `[k] in a`.
    pub(crate) fn translate_in(&mut self, global: usize, keys: &[Expr], span: Span) -> R<Value> {
        let (off, _, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let c = self.ctx;
        Ok(self.call_long(Helper::MapIn, &[c, off, k]))
    }

    /// `delete a[k]`.
    pub(crate) fn delete_element(&mut self, global: usize, keys: &[Expr], span: Span) -> R<()> {
        let (off, _, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let c = self.ctx;
        self.call_helper(Helper::MapDelete, &[c, off, k]);
        Ok(())
    }

    /// `delete a`.
    pub(crate) fn clear_array(&mut self, global: usize, span: Span) -> R<()> {
        let (off, _, _) = self.array(global, span)?;
        let c = self.ctx;
        self.call_helper(Helper::MapClear, &[c, off]);
        Ok(())
    }

    /// `a[k] <<< v`: the helper updates count/sum/min/max and returns the
    /// value's offset, where the compiled code adds to the histograms.
    pub(crate) fn aggregate_element(
        &mut self,
        global: usize,
        keys: &[Expr],
        v: Value,
        span: Span,
    ) -> R<()> {
        let (off, _, _) = self.array(global, span)?;
        let k = self.keys(keys)?;
        let c = self.ctx;
        let voff = self.call_long(Helper::MapAgg, &[c, off, k, v]);
        self.check_helper(span);
        if !self.shared.hists[global].is_empty() {
            let g = self.globals();
            let p = self.b.ins().iadd(g, voff);
            self.hist_add(global, p, v);
        }
        Ok(())
    }

    /// `@count(a[k])` ...
    pub(crate) fn stat_element(&mut self, op: StatOp, target: &AggTarget, span: Span) -> R<Value> {
        let AggTarget::Element { global, keys } = target else {
            return unsupported("an aggregate target", span);
        };
        let (off, _, _) = self.array(*global, span)?;
        let k = self.keys(keys)?;
        let code = match op {
            StatOp::Count => 0,
            StatOp::Sum => 1,
            StatOp::Min => 2,
            StatOp::Max => 3,
            StatOp::Avg => 4,
            StatOp::Variance => return self.stat_variance(target, span),
        };
        let (c, o) = (self.ctx, self.iconst(code));
        let v = self.call_long(Helper::MapStat, &[c, off, k, o]);
        self.check_helper(span);
        Ok(v)
    }

    /// `foreach ([k1, k2] in a- limit n) body`: the helper fills a stack
    /// buffer with the (sorted, limited) entry indices; the loop walks it.
    /// `header`'s block parameter is the position in the buffer.
    pub(crate) fn translate_foreach(&mut self, f: &Foreach, span: Span) -> R<()> {
        let (off, kind, capacity) = self.array(f.array, span)?;
        let max = if self.in_ptap {
            MAX_FOREACH_PTAP
        } else {
            MAX_FOREACH
        };
        if capacity > max {
            let place = if self.in_ptap {
                "in a begin/end/timer probe"
            } else {
                "in a probe that runs in the target or a function (begin/end/timer probes allow 262144)"
            };
            return unsupported(
                &format!("foreach over an array of more than {max} entries {place}"),
                span,
            );
        }
        let buf = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (4 * capacity.max(1)) as u32,
            3,
        ));
        let bufp = self.b.ins().stack_addr(I64, buf, 0);
        let sort = match f.sort {
            None => 0,
            Some(s) => {
                let by = match s.by {
                    SortBy::Value => 1,
                    SortBy::Key(k) => 2 + k as i64,
                    // The runtime's aggregate code (bits 9..11) on a value sort.
                    SortBy::Agg(op) => {
                        1 | (match op {
                            StatOp::Count => 1,
                            StatOp::Sum => 2,
                            StatOp::Min => 3,
                            StatOp::Max => 4,
                            StatOp::Avg => 5,
                            // The checker sorts by the five others only.
                            StatOp::Variance => return unsupported("sorting by @variance", span),
                        } << 9)
                    }
                };
                by | if s.descending { 256 } else { 0 }
            }
        };
        let limit = match &f.limit {
            Some(e) => self.translate_expr(e)?,
            None => self.iconst(-1),
        };
        // A slice (`in a[*, k]`): the keys to match, evaluated once (strings
        // copied, so the body cannot change them); the limit then counts
        // matching entries, so it is applied here rather than by the helper.
        let mut filters = Vec::new();
        for (k, x) in f.slice.iter().enumerate() {
            let Some(x) = x else { continue };
            let v = self.translate_expr(x)?;
            let v = if x.ty == ptap_lang::checked::Type::String {
                let (buf, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::StrCopy, &[buf, v, cap]);
                buf
            } else {
                v
            };
            filters.push((k, v));
        }
        let counted: Option<(Variable, Value)> = if filters.is_empty() || f.limit.is_none() {
            None
        } else {
            let var = self.b.declare_var(I64);
            let z = self.iconst(0);
            self.b.def_var(var, z);
            Some((var, limit))
        };
        let helper_limit = if counted.is_some() {
            self.iconst(-1)
        } else {
            limit
        };
        let (c, n_cap, s) = (self.ctx, self.iconst(capacity as i64), self.iconst(sort));
        let n = self.call_long(Helper::MapSorted, &[c, off, bufp, n_cap, s, helper_limit]);

        let (header, body_b, step_b, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let pos = self.b.append_block_param(header, I64);
        let zero = self.iconst(0);
        self.jump(header, &[zero]);
        self.b.switch_to_block(header);
        self.count_action(span);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, pos, n);
        self.b.ins().brif(more, body_b, &[], exit, &[]);

        self.b.switch_to_block(body_b);
        let at = self.b.ins().imul_imm_s(pos, 4);
        let at = self.b.ins().iadd(bufp, at);
        let idx = self.b.ins().load(I32, flags(), at, 0);
        let idx = self.b.ins().uextend(I64, idx);
        for (k, &local) in f.keys.iter().enumerate() {
            let kk = self.iconst(k as i64);
            self.load_into_local(local, |t, dst, cap| {
                let c = t.ctx;
                t.call_long(Helper::MapKey, &[c, off, idx, kk, dst, cap])
            });
        }
        if let Some(local) = f.value {
            if kind == MapKind::Stats {
                return unsupported("foreach with a value of a statistics array", span);
            }
            self.load_into_local(local, |t, dst, cap| {
                let c = t.ctx;
                t.call_long(Helper::MapValue, &[c, off, idx, dst, cap])
            });
        }
        // `continue` goes to the step, which needs the position: keep it in a variable.
        let posv: Variable = self.b.declare_var(I64);
        self.b.def_var(posv, pos);
        // Entries outside the slice go straight to the step.
        for &(k, want) in &filters {
            let equal = match self.locals[f.keys[k]] {
                LocalSlot::Long(var) => {
                    let have = self.b.use_var(var);
                    self.b.ins().icmp(IntCC::Equal, have, want)
                }
                LocalSlot::Str(have) => {
                    let d = self.call_long(Helper::StrCmp, &[have, want]);
                    self.b.ins().icmp_imm_s(IntCC::Equal, d, 0)
                }
            };
            let next = self.b.create_block();
            self.b.ins().brif(equal, next, &[], step_b, &[]);
            self.b.switch_to_block(next);
        }
        if let Some((var, limit)) = counted {
            let seen = self.b.use_var(var);
            let done = self
                .b
                .ins()
                .icmp(IntCC::SignedGreaterThanOrEqual, seen, limit);
            let next = self.b.create_block();
            self.b.ins().brif(done, exit, &[], next, &[]);
            self.b.switch_to_block(next);
            let seen = self.b.ins().iadd_imm_s(seen, 1);
            self.b.def_var(var, seen);
        }
        self.loops.push((step_b, exit));
        let r = self.translate_stmt(&f.body);
        self.loops.pop();
        r?;
        self.jump(step_b, &[]);
        self.b.switch_to_block(step_b);
        let p = self.b.use_var(posv);
        let next = self.b.ins().iadd_imm_s(p, 1);
        self.jump(header, &[next]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Store a helper's result in a local: a long is the return value; a
    /// string is written into the local's buffer.
    fn load_into_local(
        &mut self,
        local: usize,
        call: impl FnOnce(&mut Self, Value, Value) -> Value,
    ) {
        match self.locals[local] {
            LocalSlot::Long(var) => {
                let (z, cap) = (self.iconst(0), self.iconst(0));
                let v = call(self, z, cap);
                self.b.def_var(var, v);
            }
            LocalSlot::Str(p) => {
                let cap = self.cap();
                call(self, p, cap);
            }
        }
    }

    /// `foreach` statement entry point (keeps stmt.rs one line per construct).
    pub(crate) fn translate_foreach_stmt(&mut self, f: &Foreach, s: &Stmt) -> R<()> {
        self.translate_foreach(f, s.span)
    }
}
