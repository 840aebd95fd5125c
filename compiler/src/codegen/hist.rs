//! Histograms (`@hist_log`, `@hist_linear`) of statistics globals. The
//! compiler finds every histogram a script prints of each global, and the
//! global's slot keeps their buckets after `count, sum, min, max`; `<<<`
//! adds one to the right bucket of each (atomically). Buckets follow
//! SystemTap: log — 128 buckets, bucket 64 holds 0, 64 + n holds values
//! with n significant bits, 64 - n their negatives; linear(lo, hi, step) —
//! `(hi - lo) / step + 3` buckets: underflow, one per step up to `hi`
//! included, overflow. Array elements keep the same buckets after their
//! statistics value (the array's `hist_bytes`). `@variance` lays out its
//! sum of squares the same way (`HistKind::SumSquares`, two words: the
//! 128-bit sum, low word first).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, Value};
use cranelift_module::Module;
use ptap_lang::checked::{AggTarget, CheckedScript, Expr, ExprKind, HistKind, StatOp};
use ptap_lang::walk::{walk_expr, walk_stmt};
use ptap_lang::Span;
use ptap_rt_core::script::helper_table::Helper;

use super::expr::unsupported;
use super::func::{flags, FunctionTranslator, R};
use super::CodegenError;

/// Number of buckets of a histogram.
pub(crate) fn buckets(kind: HistKind) -> u64 {
    match kind {
        HistKind::Log => 128,
        HistKind::Linear { lo, hi, step } => ((hi - lo) / step) as u64 + 3,
        HistKind::SumSquares => 2,
    }
}

/// Per global: its histograms and where their buckets start in its slot.
pub(crate) type Hists = Vec<Vec<(HistKind, u64)>>;

/// Every histogram the script takes, per global.
pub(crate) fn collect(script: &CheckedScript) -> Result<Hists, CodegenError> {
    let mut found: Vec<Vec<HistKind>> = vec![Vec::new(); script.globals.len()];
    let mut visit = |e: &Expr| {
        let (kind, target) = match &e.kind {
            ExprKind::Hist { kind, target } => (*kind, target),
            ExprKind::Stat {
                op: StatOp::Variance,
                target,
            } => (HistKind::SumSquares, target),
            _ => return,
        };
        let id = match target {
            AggTarget::Global(id) | AggTarget::Element { global: id, .. } => *id,
        };
        if !found[id].contains(&kind) {
            found[id].push(kind);
        }
    };
    for f in &script.functions {
        f.body.iter().for_each(|s| walk_stmt(s, &mut visit));
    }
    for p in &script.probes {
        p.body.iter().for_each(|s| walk_stmt(s, &mut visit));
        p.entry_exprs.iter().for_each(|e| walk_expr(e, &mut visit));
    }
    Ok(found
        .into_iter()
        .map(|kinds| {
            let mut at = 32; // after count, sum, min, max
            kinds
                .into_iter()
                .map(|k| {
                    let o = at;
                    at += 8 * buckets(k);
                    (k, o)
                })
                .collect()
        })
        .collect())
}

/// Bytes of a statistics slot with these histograms.
pub(crate) fn slot_size(h: &[(HistKind, u64)]) -> u64 {
    h.last().map_or(32, |&(k, o)| o + 8 * buckets(k))
}

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// `s <<< v`: one more value in each histogram of `s` (slot at `p`).
    pub(crate) fn hist_add(&mut self, global: usize, p: Value, v: Value) {
        let hists = self.shared.hists[global].clone();
        for (kind, off) in hists {
            let idx = match kind {
                HistKind::SumSquares => {
                    self.sum_squares_add(p, off, v);
                    continue;
                }
                HistKind::Log => {
                    // Bucket 64 +/- (number of significant bits of |v|).
                    let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
                    let nv = self.b.ins().ineg(v);
                    let a = self.b.ins().select(neg, nv, v);
                    let lz = self.b.ins().clz(a);
                    let k64 = self.iconst(64);
                    let bits = self.b.ins().isub(k64, lz);
                    let up = self.b.ins().iadd_imm_s(bits, 64);
                    let down = self.b.ins().isub(k64, bits);
                    self.b.ins().select(neg, down, up)
                }
                HistKind::Linear { lo, step, .. } => {
                    let last = buckets(kind) as i64 - 1;
                    let d = self.b.ins().iadd_imm_s(v, lo.wrapping_neg());
                    let under = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, lo);
                    let q = self.b.ins().sdiv_imm_s(d, step);
                    let q = self.b.ins().iadd_imm_s(q, 1);
                    let lastv = self.iconst(last);
                    let q = self.b.ins().smin(q, lastv);
                    let zero = self.iconst(0);
                    self.b.ins().select(under, zero, q)
                }
            };
            // The bucket's address: slot + histogram offset + 8 * index.
            let at = self.b.ins().imul_imm_s(idx, 8);
            let at = self.b.ins().iadd(p, at);
            let at = self.b.ins().iadd_imm_s(at, off as i64);
            let one = self.iconst(1);
            self.b
                .ins()
                .atomic_rmw(I64, flags(), AtomicRmwOp::Add, at, one);
        }
    }

    /// `print(@hist_log(s))`: one record with the non-empty buckets; ptap draws it.
    pub(crate) fn translate_hist_print(&mut self, e: &Expr, span: Span) -> R<Value> {
        let ExprKind::Hist { kind, target } = &e.kind else {
            return unsupported("printing this histogram", span);
        };
        if let AggTarget::Element { global, keys } = target {
            return self.hist_print_element(*kind, *global, keys, span);
        }
        let AggTarget::Global(id) = target else {
            return unsupported("printing this histogram", span);
        };
        let Some(&(_, off)) = self.shared.hists[*id].iter().find(|(k, _)| k == kind) else {
            return unsupported("a histogram the layout does not know", span);
        };
        let base = self.shared.layout.offsets[*id] as i64 + off as i64;
        let (k, lo, step) = match *kind {
            HistKind::Log => (0, 0, 0),
            HistKind::Linear { lo, step, .. } => (1, lo, step),
            HistKind::SumSquares => return unsupported("printing a sum of squares", span),
        };
        let c = self.ctx;
        let args = [base, k, lo, step, buckets(*kind) as i64].map(|v| self.iconst(v));
        self.call_helper(
            Helper::HistPrint,
            &[c, args[0], args[1], args[2], args[3], args[4]],
        );
        Ok(self.iconst(0))
    }
}

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// `print(@hist_log(a[k]))`: the element's buckets (empty when absent).
    fn hist_print_element(
        &mut self,
        kind: HistKind,
        global: usize,
        keys: &[Expr],
        span: Span,
    ) -> R<Value> {
        let Some(&(_, hoff)) = self.shared.hists[global].iter().find(|(k, _)| *k == kind) else {
            return unsupported("a histogram the layout does not know", span);
        };
        let k = self.keys(keys)?;
        let (kd, lo, step) = match kind {
            HistKind::Log => (0, 0, 0),
            HistKind::Linear { lo, step, .. } => (1, lo, step),
            HistKind::SumSquares => return unsupported("printing a sum of squares", span),
        };
        let off = self.shared.layout.offsets[global] as i64;
        let c = self.ctx;
        let a = [off, hoff as i64, kd, lo, step, buckets(kind) as i64].map(|v| self.iconst(v));
        self.call_helper(
            Helper::MapHistPrint,
            &[c, a[0], k, a[1], a[2], a[3], a[4], a[5]],
        );
        Ok(self.iconst(0))
    }
}

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    /// `s <<< v` for `@variance`: v² added to the 128-bit sum at `p + off`.
    /// Two atomic adds: the low word's carry (its old value plus v²'s low
    /// word wrapped) goes into the high word with v²'s high word, so
    /// concurrent hits lose nothing.
    fn sum_squares_add(&mut self, p: Value, off: u64, v: Value) {
        let lo = self.b.ins().imul(v, v);
        let hi = self.b.ins().smulhi(v, v);
        let at = self.b.ins().iadd_imm_s(p, off as i64);
        let old = self
            .b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Add, at, lo);
        let new = self.b.ins().iadd(old, lo);
        let carry = self.b.ins().icmp(IntCC::UnsignedLessThan, new, old);
        let carry = self.b.ins().uextend(I64, carry);
        let hi = self.b.ins().iadd(hi, carry);
        let at_hi = self.b.ins().iadd_imm_s(at, 8);
        self.b
            .ins()
            .atomic_rmw(I64, flags(), AtomicRmwOp::Add, at_hi, hi);
    }

    /// `@variance(s)` / `@variance(a[k])`: the runtime computes it from the
    /// count, the sum and the sum of squares.
    pub(crate) fn stat_variance(&mut self, target: &AggTarget, span: Span) -> R<Value> {
        let global = match target {
            AggTarget::Global(id) | AggTarget::Element { global: id, .. } => *id,
        };
        let Some(&(_, sq)) = self.shared.hists[global]
            .iter()
            .find(|(k, _)| *k == HistKind::SumSquares)
        else {
            return unsupported("@variance of a global the layout does not know", span);
        };
        let off = self.shared.layout.offsets[global] as i64;
        let (c, o, s) = (self.ctx, self.iconst(off), self.iconst(sq as i64));
        let v = match target {
            AggTarget::Global(_) => self.call_long(Helper::StatVariance, &[c, o, s]),
            AggTarget::Element { keys, .. } => {
                let k = self.keys(keys)?;
                self.call_long(Helper::MapVariance, &[c, o, k, s])
            }
        };
        self.check_helper(span);
        Ok(v)
    }
}
