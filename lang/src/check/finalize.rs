//! After every body is checked: deferred checks, unresolved types, needs of
//! called functions, and writing the inferred types into the checked tree.
use std::collections::HashSet;

use super::infer::Ty;
use super::{CheckError, Checker, Need, Shape};
use crate::checked::{
    Expr, Function, Global, GlobalShape, Local, Probe, ScalarType, Stmt, Type, ValueType,
};
use crate::span::Span;
use crate::walk::{walk_expr_mut, walk_stmt_mut};

type Parts = (Vec<Global>, Vec<Function>, Vec<Probe>);

impl Checker<'_> {
    pub(super) fn finish(&mut self) -> Option<Parts> {
        for (slot, span, name) in std::mem::take(&mut self.not_stats) {
            if self.infer.known(slot).map(|k| k.0) == Some(Type::Stats) {
                self.err(CheckError::StatsAsValue { span, name });
            }
        }
        let used = self.used_functions();
        // An unresolved type is most often a consequence of another error.
        if self.errors.is_empty() {
            self.unresolved(&used);
        }
        self.callee_needs();
        if !self.errors.is_empty() {
            return None;
        }
        let globals = self.build_globals();
        let mut functions = Vec::new();
        for (i, &is_used) in used.iter().enumerate() {
            let mut f = self.funcs[i].checked.take()?;
            f.used = is_used;
            let slots = self.funcs[i].local_slots.clone();
            self.fix_locals(&mut f.locals, &slots);
            f.ret = match self.funcs[i].ret {
                Some(s) => self.infer.resolve(Ty::V(s)).unwrap_or(Type::Long),
                None => Type::Void,
            };
            for s in &mut f.body {
                self.fix_stmt(s);
            }
            functions.push(f);
        }
        let mut probes = Vec::new();
        let mut taken = std::mem::take(&mut self.probes);
        taken.sort_by_key(|pd| pd.priority);
        for mut pd in taken {
            self.fix_locals(&mut pd.probe.locals, &pd.local_slots);
            for s in &mut pd.probe.body {
                self.fix_stmt(s);
            }
            for e in &mut pd.probe.entry_exprs {
                self.fix_expr(e);
            }
            probes.push(pd.probe);
        }
        Some((globals, functions, probes))
    }

    /// Functions reachable from some probe.
    fn used_functions(&self) -> Vec<bool> {
        let mut used = vec![false; self.funcs.len()];
        let mut work: Vec<usize> = self
            .probes
            .iter()
            .flat_map(|p| p.calls.iter().map(|c| c.0))
            .collect();
        while let Some(f) = work.pop() {
            if !used[f] {
                used[f] = true;
                work.extend(self.funcs[f].calls.iter().map(|c| c.0));
            }
        }
        used
    }

    fn unresolved(&mut self, used: &[bool]) {
        let mut seen = HashSet::new();
        let mut check =
            |c: &mut Self, slot: u32, span: Span, what: String, hint: Option<String>| {
                let root = c.infer.find(slot);
                if c.infer.known(slot).is_none() && seen.insert(root) {
                    c.err(CheckError::Unresolved { span, what, hint });
                }
            };
        for g in 0..self.globals.len() {
            let (name, span, value) = (
                self.globals[g].name.clone(),
                self.globals[g].span,
                self.globals[g].value,
            );
            match self.globals[g].shape {
                None | Some((Shape::Array(None), _)) => {
                    let hint = Some(format!("`{name}` is never used; remove it or use it"));
                    check(self, value, span, format!("global `{name}`"), hint);
                }
                Some(_) => {
                    check(self, value, span, format!("global `{name}`"), None);
                    for k in self.globals[g].keys.clone() {
                        let what = self.infer.what(k).to_string();
                        check(self, k, span, what, None);
                    }
                }
            }
        }
        for (f, &is_used) in used.iter().enumerate() {
            if !is_used {
                continue;
            }
            let slots = self.funcs[f].local_slots.clone();
            let Some(checked) = &self.funcs[f].checked else {
                continue;
            };
            let locals: Vec<(String, Span)> = checked
                .locals
                .iter()
                .map(|l| (l.name.clone(), l.span))
                .collect();
            let fname = checked.name.clone();
            let nparams = checked.params;
            for (i, (slot, (name, span))) in slots.iter().zip(locals).enumerate() {
                let (what, hint) = if i < nparams {
                    (
                        format!("parameter `{name}` of `{fname}`"),
                        Some(format!("annotate it: `{name}:long` or `{name}:string`")),
                    )
                } else {
                    (
                        format!("local `{name}`"),
                        Some(format!("`{name}` is never given a value")),
                    )
                };
                check(self, *slot, span, what, hint);
            }
            if let Some(r) = self.funcs[f].ret {
                let span = self.funcs[f].def.name.span;
                let hint = Some(format!("annotate it: `function {fname}:long(...)`"));
                check(
                    self,
                    r,
                    span,
                    format!("the return value of `{fname}`"),
                    hint,
                );
            }
        }
        for p in 0..self.probes.len() {
            let slots = self.probes[p].local_slots.clone();
            let locals: Vec<(String, Span)> = self.probes[p]
                .probe
                .locals
                .iter()
                .map(|l| (l.name.clone(), l.span))
                .collect();
            for (slot, (name, span)) in slots.iter().zip(locals) {
                let hint = Some(format!("`{name}` is never given a value"));
                check(self, *slot, span, format!("local `{name}`"), hint);
            }
        }
    }

    /// Checks that every function a probe calls (transitively) only uses
    /// what that probe offers.
    fn callee_needs(&mut self) {
        let n = self.funcs.len();
        let mut needs: Vec<Vec<(Need, Span, String)>> =
            self.funcs.iter().map(|f| f.needs.clone()).collect();
        let mut changed = true;
        while changed {
            changed = false;
            for f in 0..n {
                for &(callee, _) in &self.funcs[f].calls.clone() {
                    for need in needs[callee].clone() {
                        if !needs[f].iter().any(|x| x.0 == need.0) {
                            needs[f].push(need);
                            changed = true;
                        }
                    }
                }
            }
        }
        let mut errs = Vec::new();
        for pd in &self.probes {
            for &(f, call_span) in &pd.calls {
                for (need, use_span, what) in &needs[f] {
                    let lacking = pd.points.iter().find(|(_, c)| match need {
                        Need::Target => !c.in_target,
                        Need::Syscall => !c.syscall,
                    });
                    if let Some((p, _)) = lacking {
                        errs.push(CheckError::CalleeNeeds {
                            span: call_span,
                            func: self.funcs[f].def.name.name.clone(),
                            what: what.clone(),
                            use_span: *use_span,
                            point: p.text.clone(),
                            point_span: p.span,
                        });
                    }
                }
            }
        }
        for e in errs {
            self.err(e);
        }
    }

    fn value_type(&mut self, slot: u32) -> ValueType {
        match self.infer.resolve(Ty::V(slot)) {
            Some(Type::String) => ValueType::String,
            Some(Type::Stats) => ValueType::Stats,
            _ => ValueType::Long,
        }
    }

    fn scalar_type(&mut self, slot: u32) -> ScalarType {
        match self.infer.resolve(Ty::V(slot)) {
            Some(Type::String) => ScalarType::String,
            _ => ScalarType::Long,
        }
    }

    fn build_globals(&mut self) -> Vec<Global> {
        let mut out = Vec::new();
        for i in 0..self.globals.len() {
            let value = self.value_type(self.globals[i].value);
            let shape = match self.globals[i].shape {
                Some((Shape::Array(_), _)) => GlobalShape::Array {
                    keys: self.globals[i]
                        .keys
                        .clone()
                        .into_iter()
                        .map(|k| self.scalar_type(k))
                        .collect(),
                    value,
                },
                _ => GlobalShape::Scalar(value),
            };
            let g = &self.globals[i];
            out.push(Global {
                name: g.name.clone(),
                span: g.span,
                shape,
                init: g.init.clone(),
                capacity: g.capacity,
                read: g.read,
                written: g.written,
            });
        }
        out
    }

    fn fix_locals(&mut self, locals: &mut [Local], slots: &[u32]) {
        for (l, s) in locals.iter_mut().zip(slots) {
            l.ty = self.scalar_type(*s);
        }
    }

    fn fix_expr(&mut self, e: &mut Expr) {
        walk_expr_mut(e, &mut |x: &mut Expr| {
            if let Some(s) = x.slot.take() {
                x.ty = self.infer.resolve(Ty::V(s)).unwrap_or(Type::Long);
            }
        });
    }

    fn fix_stmt(&mut self, s: &mut Stmt) {
        walk_stmt_mut(s, &mut |x: &mut Expr| {
            if let Some(slot) = x.slot.take() {
                x.ty = self.infer.resolve(Ty::V(slot)).unwrap_or(Type::Long);
            }
        });
    }
}
