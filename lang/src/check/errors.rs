//! Errors of the check phase (name resolution, types, probe contexts).
use crate::checked::Type;
use crate::diag::{self, primary, secondary, Diagnostic, ToDiagnostic};
use crate::printf::FormatError;
use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// An expression of the wrong type where the type is fixed.
    TypeMismatch {
        span: Span,
        expected: Type,
        found: Type,
    },
    /// A variable/slot already inferred as another type.
    TypeConflict {
        span: Span,
        what: String,
        used_as: Type,
        inferred: Type,
        origin: Span,
    },
    /// Two inferred things that must agree do not.
    SlotConflict {
        span: Span,
        a: (String, Type, Span),
        b: (String, Type, Span),
    },
    Unresolved {
        span: Span,
        what: String,
        hint: Option<String>,
    },
    NoValue {
        span: Span,
        what: String,
    },
    StatsAsValue {
        span: Span,
        name: String,
    },
    LocalArray {
        span: Span,
        name: String,
    },
    ShapeConflict {
        span: Span,
        name: String,
        used: &'static str,
        earlier: &'static str,
        origin: Span,
    },
    ArityMismatch {
        span: Span,
        name: String,
        expected: usize,
        found: usize,
        origin: Span,
    },
    UnknownFunction {
        span: Span,
        name: String,
        suggestion: Option<String>,
    },
    WrongArgCount {
        span: Span,
        name: String,
        expected: String,
        found: usize,
        decl: Option<Span>,
    },
    Duplicate {
        span: Span,
        what: &'static str,
        name: String,
        first: Span,
    },
    Reserved {
        span: Span,
        name: String,
    },
    ContextUnavailable {
        span: Span,
        what: String,
        point: String,
        point_span: Span,
        why: String,
    },
    OnlyInProbe {
        span: Span,
        what: String,
        help: &'static str,
    },
    NotInLoop {
        span: Span,
        what: &'static str,
    },
    NeedsGuru {
        span: Span,
        what: String,
    },
    NotAssignable {
        span: Span,
    },
    ReadOnly {
        span: Span,
        name: String,
    },
    Format {
        span: Span,
        error: FormatError,
    },
    FormatArgCount {
        span: Span,
        expected: usize,
        found: usize,
    },
    FormatNotLiteral {
        span: Span,
    },
    DivisionByZero {
        span: Span,
    },
    RegexNotLiteral {
        span: Span,
    },
    BadRegister {
        span: Span,
        name: String,
        suggestion: Option<&'static str>,
    },
    RegisterNotLiteral {
        span: Span,
    },
    /// `@cast(p, TYPE, MODULE)` with a type or module that is no literal.
    CastNotLiteral {
        span: Span,
    },
    MissingScriptArg {
        span: Span,
        n: u32,
        given: usize,
    },
    ForeachArity {
        span: Span,
        array: String,
        expected: usize,
        found: usize,
    },
    TwoSortMarks {
        span: Span,
        first: Span,
    },
    BadHistArg {
        span: Span,
        why: &'static str,
    },
    /// `@variance(s, N)` with N not a literal in 0..=62.
    BadVarianceShift {
        span: Span,
    },
    UnknownAt {
        span: Span,
        name: String,
        suggestion: Option<&'static str>,
    },
    AggregateTarget {
        span: Span,
    },
    ReturnValue {
        span: Span,
        why: &'static str,
    },
    /// A script without any probe.
    NoProbes,
    /// `global a[0]`
    BadCapacity {
        span: Span,
    },
    NestedEntry {
        span: Span,
    },
    /// A function called from a probe uses something that probe lacks.
    CalleeNeeds {
        span: Span,
        func: String,
        what: String,
        use_span: Span,
        point: String,
        point_span: Span,
    },
}

fn help(d: Diagnostic, h: impl Into<String>) -> Diagnostic {
    d.with_notes(vec![format!("help: {}", h.into())])
}

impl ToDiagnostic for CheckError {
    fn to_diagnostic(&self) -> Diagnostic {
        use CheckError::*;
        match self {
            TypeMismatch {
                span,
                expected,
                found,
            } => diag::error(format!(
                "type mismatch: expected {}, found {}",
                expected.name(),
                found.name()
            ))
            .with_labels(vec![primary(*span, format!("this is {}", found.name()))]),
            TypeConflict {
                span,
                what,
                used_as,
                inferred,
                origin,
            } => diag::error(format!(
                "type conflict: {what} is {} but is used as {} here",
                inferred.name(),
                used_as.name()
            ))
            .with_labels(vec![
                primary(*span, format!("used as {}", used_as.name())),
                secondary(
                    *origin,
                    format!("{what} inferred as {} here", inferred.name()),
                ),
            ]),
            SlotConflict { span, a, b } => diag::error(format!(
                "type conflict: {} is {} but {} is {}",
                a.0,
                a.1.name(),
                b.0,
                b.1.name()
            ))
            .with_labels(vec![
                primary(*span, "these must have the same type"),
                secondary(a.2, format!("{} inferred as {} here", a.0, a.1.name())),
                secondary(b.2, format!("{} inferred as {} here", b.0, b.1.name())),
            ]),
            Unresolved { span, what, hint } => {
                let d = diag::error(format!("cannot infer the type of {what}"))
                    .with_labels(vec![primary(*span, "its type is never determined")]);
                match hint {
                    Some(h) => help(d, h.clone()),
                    None => d,
                }
            }
            NoValue { span, what } => diag::error(format!("{what} has no value"))
                .with_labels(vec![primary(*span, "used as a value here")]),
            StatsAsValue { span, name } => help(
                diag::error(format!("statistics `{name}` used as a scalar value")).with_labels(
                    vec![primary(
                    *span,
                    "statistics can only be read with @count, @sum, @min, @max, @avg or @hist_*",
                )],
                ),
                format!("use an extractor, e.g. `@count({name})`"),
            ),
            LocalArray { span, name } => help(
                diag::error(format!("`{name}` is used as an array but is not a global"))
                    .with_labels(vec![primary(*span, "arrays must be global")]),
                format!("declare it: `global {name}`"),
            ),
            ShapeConflict {
                span,
                name,
                used,
                earlier,
                origin,
            } => diag::error(format!(
                "`{name}` is used as {used} here but as {earlier} elsewhere"
            ))
            .with_labels(vec![
                primary(*span, format!("used as {used}")),
                secondary(*origin, format!("used as {earlier} here")),
            ]),
            ArityMismatch {
                span,
                name,
                expected,
                found,
                origin,
            } => diag::error(format!(
                "array `{name}` is indexed with {found} key(s) here but with {expected} elsewhere"
            ))
            .with_labels(vec![
                primary(*span, format!("{found} key(s)")),
                secondary(*origin, format!("{expected} key(s) here")),
            ]),
            UnknownFunction {
                span,
                name,
                suggestion,
            } => {
                let d =
                    diag::error(format!("unknown function `{name}`")).with_labels(vec![primary(
                        *span,
                        "not a builtin, script or stdlib function",
                    )]);
                match suggestion {
                    Some(s) => help(d, format!("did you mean `{s}`?")),
                    None => d,
                }
            }
            WrongArgCount {
                span,
                name,
                expected,
                found,
                decl,
            } => {
                let mut labels = vec![primary(*span, format!("called with {found} argument(s)"))];
                if let Some(d) = decl {
                    labels.push(secondary(*d, "defined here"));
                }
                diag::error(format!(
                    "`{name}` takes {expected} argument(s), not {found}"
                ))
                .with_labels(labels)
            }
            Duplicate {
                span,
                what,
                name,
                first,
            } => diag::error(format!("{what} `{name}` is defined twice")).with_labels(vec![
                primary(*span, "defined again here"),
                secondary(*first, "first defined here"),
            ]),
            Reserved { span, name } => {
                let builtin = crate::builtins::lookup(name).is_some()
                    || crate::builtins::FORMAT_FUNCTIONS.contains(&name.as_str());
                let why = if builtin {
                    "a builtin function has this name"
                } else {
                    "reserved for a probe context value"
                };
                diag::error(format!("`{name}` is a reserved name"))
                    .with_labels(vec![primary(*span, why)])
            }
            ContextUnavailable {
                span,
                what,
                point,
                point_span,
                why,
            } => diag::error(format!("{what} is not available in probe `{point}`")).with_labels(
                vec![
                    primary(*span, why.clone()),
                    secondary(*point_span, "this probe point"),
                ],
            ),
            OnlyInProbe {
                span,
                what,
                help: h,
            } => help(
                diag::error(format!("{what} can only be used in a probe handler"))
                    .with_labels(vec![primary(*span, "not in a probe")]),
                *h,
            ),
            NotInLoop { span, what } => diag::error(format!("`{what}` outside of a loop"))
                .with_labels(vec![primary(*span, "not inside while, for or foreach")]),
            NeedsGuru { span, what } => help(
                diag::error(format!("{what} needs guru mode")).with_labels(vec![primary(
                    *span,
                    "writes the target's registers or memory",
                )]),
                "run ptap with -g if you mean it",
            ),
            NotAssignable { span } => {
                diag::error("cannot assign to this expression").with_labels(vec![primary(
                    *span,
                    "not a variable, array element or $target variable",
                )])
            }
            ReadOnly { span, name } => help(
                diag::error(format!("`{name}` is read-only"))
                    .with_labels(vec![primary(*span, "cannot be assigned")]),
                "to change a register use set_register(\"rax\", v) in guru mode (-g)",
            ),
            Format { span, error } => diag::error(format!("bad format: {error}"))
                .with_labels(vec![primary(*span, "in this format")]),
            FormatArgCount {
                span,
                expected,
                found,
            } => diag::error(format!(
                "the format has {expected} conversion(s) but {found} value(s) are given"
            ))
            .with_labels(vec![primary(*span, "in this call")]),
            FormatNotLiteral { span } => diag::error("the format must be a string literal")
                .with_labels(vec![primary(*span, "not a literal")]),
            RegexNotLiteral { span } => {
                diag::error("a regular expression must be a string literal")
                    .with_labels(vec![primary(*span, "not a literal")])
            }
            BadRegister {
                span,
                name,
                suggestion,
            } => {
                let d = diag::error(format!("unknown register `{name}`"))
                    .with_labels(vec![primary(*span, "not an x86-64 register name")]);
                match suggestion {
                    Some(s) => help(d, format!("did you mean `{s}`?")),
                    None => d,
                }
            }
            CastNotLiteral { span } => {
                diag::error("the type and module of `@cast` must be string literals")
                    .with_labels(vec![primary(*span, "not a literal")])
                    .with_notes(vec![
                        "help: write `@cast(ptr, \"struct NAME\")->member`".into()
                    ])
            }
            RegisterNotLiteral { span } => {
                diag::error("the register name must be a string literal")
                    .with_labels(vec![primary(*span, "not a literal")])
            }
            MissingScriptArg { span, n, given } => help(
                diag::error(format!("script argument {n} is missing")).with_labels(vec![primary(
                    *span,
                    format!("the script was given {given} argument(s)"),
                )]),
                "pass arguments after the script: ptap script.pt ARG1 ARG2",
            ),
            ForeachArity {
                span,
                array,
                expected,
                found,
            } => diag::error(format!(
                "array `{array}` has {expected} key(s) but foreach names {found}"
            ))
            .with_labels(vec![primary(
                *span,
                if *expected > 1 {
                    "write the keys as [k1, k2, ...]"
                } else {
                    "wrong number of keys"
                },
            )]),
            TwoSortMarks { span, first } => diag::error("foreach takes at most one sort mark")
                .with_labels(vec![
                    primary(*span, "second sort mark"),
                    secondary(*first, "first sort mark"),
                ]),
            BadHistArg { span, why } => {
                diag::error(format!("bad histogram: {why}")).with_labels(vec![primary(*span, *why)])
            }
            BadVarianceShift { span } => help(
                diag::error("bad @variance bit shift").with_labels(vec![primary(
                    *span,
                    "must be an integer literal from 0 to 62",
                )]),
                "write `@variance(s)`: ptap's variance is exact, the shift changes nothing",
            ),
            UnknownAt {
                span,
                name,
                suggestion,
            } => {
                let d = diag::error(format!("unknown `@{name}`"))
                    .with_labels(vec![primary(*span, "not an aggregate extractor or @entry")]);
                match suggestion {
                    Some(s) => help(d, format!("did you mean `@{s}`?")),
                    None => d,
                }
            }
            AggregateTarget { span } => {
                diag::error("statistics must be a global or a global array element")
                    .with_labels(vec![primary(*span, "not a global")])
            }
            ReturnValue { span, why } => {
                diag::error(*why).with_labels(vec![primary(*span, "here")])
            }
            BadCapacity { span } => diag::error("an array capacity must be at least 1")
                .with_labels(vec![primary(*span, "capacity 0")]),
            DivisionByZero { span } => diag::error("division by zero")
                .with_labels(vec![primary(*span, "this divisor is 0")]),
            NoProbes => help(
                diag::error("the script has no probes"),
                "add one, e.g. `probe begin { print(\"hello\") }`",
            ),
            NestedEntry { span } => diag::error("`@entry` cannot be nested")
                .with_labels(vec![primary(*span, "already inside @entry")]),
            CalleeNeeds {
                span,
                func,
                what,
                use_span,
                point,
                point_span,
            } => diag::error(format!(
                "function `{func}` uses {what}, which is not available in probe `{point}`"
            ))
            .with_labels(vec![
                primary(*span, "called here"),
                secondary(*use_span, format!("{what} used here")),
                secondary(*point_span, "this probe point"),
            ]),
        }
    }
}
