//! Statistics aggregates on global scalars: `s <<< v` and `@count @sum
//! @min @max @avg`. A statistics global is four i64 in the session
//! (`ptap_rt_core::script::globals::stats`): count and sum are atomic adds, min
//! and max compare-and-swap loops, so concurrent hits lose nothing.
//! Aggregates in array elements are in array.rs, histograms in hist.rs.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, Value};
use cranelift_module::Module;
use ptap_lang::checked::{AggTarget, Expr, StatOp};
use ptap_lang::Span;
use ptap_rt_core::script::ctx::ERR_EMPTY_AGG;
use ptap_rt_core::script::globals::stats;
use ptap_rt_core::script::meta::GlobalKind;

use super::expr::unsupported;
use super::func::{flags, FunctionTranslator, R};

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// Address of the statistics global an aggregate targets.
    fn stats_addr(&mut self, target: &AggTarget, span: Span) -> R<Value> {
        let AggTarget::Global(id) = target else {
            return unsupported("aggregates in array elements ", span);
        };
        if self.shared.layout.kinds[*id] != GlobalKind::Stats {
            return unsupported("`<<<` on a global that is not statistics", span);
        }
        let off = self.shared.layout.offsets[*id] as i64;
        let g = self.globals();
        Ok(self.b.ins().iadd_imm_s(g, off))
    }

    /// `s <<< v`.
    pub(crate) fn translate_aggregate(
        &mut self,
        target: &AggTarget,
        value: &Expr,
        span: Span,
    ) -> R<()> {
        let v = self.translate_expr(value)?;
        if let AggTarget::Element { global, keys } = target {
            return self.aggregate_element(*global, keys, v, span);
        }
        let p = self.stats_addr(target, span)?;
        let one = self.iconst(1);
        self.b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Add, p, one);
        let sum = self.b.ins().iadd_imm_s(p, stats::SUM as i64);
        self.b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Add, sum, v);
        let min = self.b.ins().iadd_imm_s(p, stats::MIN as i64);
        self.b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Smin, min, v);
        let max = self.b.ins().iadd_imm_s(p, stats::MAX as i64);
        self.b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Smax, max, v);
        if let AggTarget::Global(id) = target {
            self.hist_add(*id, p, v);
        }
        Ok(())
    }

    /// `@count(s)` ... `@avg(s)`; min, max and avg of an empty aggregate are a runtime error.
    pub(crate) fn translate_stat(
        &mut self,
        op: StatOp,
        target: &AggTarget,
        span: Span,
    ) -> R<Value> {
        if op == StatOp::Variance {
            return self.stat_variance(target, span);
        }
        if let AggTarget::Element { .. } = target {
            return self.stat_element(op, target, span);
        }
        let p = self.stats_addr(target, span)?;
        let count = self.b.ins().load(I64, flags(), p, stats::COUNT as i32);
        if op == StatOp::Count {
            return Ok(count);
        }
        if op != StatOp::Sum {
            let empty = self.b.ins().icmp_imm_s(IntCC::Equal, count, 0);
            self.fail_if(empty, ERR_EMPTY_AGG, span);
        }
        let field = |o: u64| o as i32;
        Ok(match op {
            StatOp::Count => count,
            StatOp::Sum => self.b.ins().load(I64, flags(), p, field(stats::SUM)),
            StatOp::Min => self.b.ins().load(I64, flags(), p, field(stats::MIN)),
            StatOp::Max => self.b.ins().load(I64, flags(), p, field(stats::MAX)),
            StatOp::Variance => return unsupported("@variance here", span),
            StatOp::Avg => {
                let sum = self.b.ins().load(I64, flags(), p, field(stats::SUM));
                // The slot is shared memory any process of the session can
                // write: a count of -1 with sum i64::MIN must not trap
                // (sdiv overflow); it wraps like the other arithmetic.
                let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, count, -1);
                let one = self.iconst(1);
                let d = self.b.ins().select(m1, one, count);
                let q = self.b.ins().sdiv(sum, d);
                let neg = self.b.ins().ineg(sum);
                self.b.ins().select(m1, neg, q)
            }
        })
    }

    /// `delete s`: back to no values.
    pub(crate) fn reset_stats(&mut self, global: usize, p: Value) {
        if let Some(&(k, o)) = self.shared.hists[global].last() {
            // Histogram buckets: zeroed by a helper (up to thousands of words).
            let base = self.shared.layout.offsets[global] as i64 + 32;
            let len = o as i64 + 8 * super::hist::buckets(k) as i64 - 32;
            let (c, b, l) = (self.ctx, self.iconst(base), self.iconst(len));
            self.call_helper(
                ptap_rt_core::script::helper_table::Helper::ZeroBytes,
                &[c, b, l],
            );
        }
        for (off, v) in [
            (stats::COUNT, 0),
            (stats::SUM, 0),
            (stats::MIN, i64::MAX),
            (stats::MAX, i64::MIN),
        ] {
            let c = self.iconst(v);
            self.b.ins().store(flags(), c, p, off as i32);
        }
    }
}
