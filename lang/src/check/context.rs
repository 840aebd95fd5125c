//! Probe-context checks: which context values and builtins a body may use.
//!
//! * `ret` and `@entry(e)`: kretprobe only (every point of the probe).
//! * `arg1..6`: where arguments exist: kprobe at a function entry (`sym`,
//!   `lib:sym`, a pattern; not `sym+off` with off != 0, not `0xADDR`), jprobe,
//!   syscall entry, and inside `@entry(...)` of a kretprobe.
//! * `$name`: target probes on functions (not syscalls, not begin/end/timer).
//! * builtins that read the target run in target probes only; `syscall_name()`
//!   in syscall probes only. A function inherits these needs from its body and
//!   they are checked at each call from a probe (see finalize.rs).
//! * `ret`, `argN`, `$name`, `@entry` cannot be used in functions.
use super::{CheckError, Checker, Need, Scope, ScopeKind};
use crate::checked::{PointKind, Target};
use crate::points::Caps;
use crate::span::Span;

impl Checker<'_> {
    /// Fails with the first point of the probe lacking the capability.
    fn require(
        &mut self,
        scope: &Scope,
        span: Span,
        what: &str,
        why: &str,
        ok: impl Fn(&crate::checked::ProbePoint, &Caps) -> bool,
    ) -> bool {
        match &scope.kind {
            ScopeKind::Function(_) => {
                self.err(CheckError::OnlyInProbe {
                    span,
                    what: what.to_string(),
                    help: "pass the value to the function as an argument",
                });
                false
            }
            ScopeKind::Probe { points } => {
                if let Some((p, _)) = points.iter().find(|(p, c)| !ok(p, c)) {
                    let (point, point_span) = (p.text.clone(), p.span);
                    self.err(CheckError::ContextUnavailable {
                        span,
                        what: what.to_string(),
                        point,
                        point_span,
                        why: why.to_string(),
                    });
                    false
                } else {
                    true
                }
            }
        }
    }

    pub(super) fn need_ret(&mut self, scope: &Scope, span: Span) -> bool {
        if scope.in_entry {
            self.err(CheckError::ContextUnavailable {
                span,
                what: "`ret`".into(),
                point: "@entry".into(),
                point_span: span,
                why: "the return value is not known at function entry".into(),
            });
            return false;
        }
        self.require(
            scope,
            span,
            "`ret`",
            "`ret` exists only in kretprobe",
            |_, c| c.ret,
        )
    }

    pub(super) fn need_entry(&mut self, scope: &Scope, span: Span) -> bool {
        self.require(
            scope,
            span,
            "`@entry`",
            "`@entry` exists only in kretprobe",
            |_, c| c.ret,
        )
    }

    pub(super) fn need_arg(&mut self, scope: &Scope, span: Span, name: &str) -> bool {
        let what = format!("`{name}`");
        if scope.in_entry {
            return self.require(scope, span, &what, "no arguments at this kretprobe's entry", |p, _| {
                matches!(&p.kind, PointKind::Kretprobe { target, .. } if !matches!(target, Target::Symbol { offset, .. } if *offset != 0))
            });
        }
        self.require(
            scope,
            span,
            &what,
            "arguments exist only at a function or syscall entry",
            |_, c| c.args.is_some(),
        )
    }

    pub(super) fn need_target_var(&mut self, scope: &Scope, span: Span, name: &str) -> bool {
        let what = format!("`${name}`");
        self.require(
            scope,
            span,
            &what,
            "target variables need a probe on a function (with DWARF)",
            |_, c| c.in_target && !c.syscall,
        )
    }

    /// A builtin's need; in a function it is recorded for its callers.
    pub(super) fn need(&mut self, scope: &Scope, need: Need, span: Span, what: &str) -> bool {
        match &scope.kind {
            ScopeKind::Function(f) => {
                let f = *f;
                if !self.funcs[f].needs.iter().any(|(n, _, _)| *n == need) {
                    self.funcs[f].needs.push((need, span, what.to_string()));
                }
                true
            }
            ScopeKind::Probe { .. } => match need {
                Need::Target => self.require(
                    scope,
                    span,
                    what,
                    "this probe runs in ptap, not in the target",
                    |_, c| c.in_target,
                ),
                Need::Syscall => {
                    self.require(scope, span, what, "not a system-call probe", |_, c| {
                        c.syscall
                    })
                }
            },
        }
    }

    pub(super) fn need_guru(&mut self, span: Span, what: &str) -> bool {
        if self.opts.guru {
            true
        } else {
            self.err(CheckError::NeedsGuru {
                span,
                what: what.to_string(),
            });
            false
        }
    }
}
