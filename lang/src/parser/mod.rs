//! The parser facade: lexes, runs the generated LALR(1) parser with error
//! recovery, and turns lalrpop's errors into [`ParseError`]. No lalrpop type
//! leaves this module.
use std::convert::Infallible;

use crate::ast::Script;
use crate::lexer::{self, LexError, Tok};
use crate::span::{FileId, Span};

mod actions;
pub(crate) mod macros;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused_parens, dead_code)]
    grammar,
    "/parser/grammar.rs"
);

/// Errors of the parse phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Lex(LexError),
    /// A token the grammar does not accept here.
    Unexpected {
        found: Tok,
        span: Span,
        expected: Vec<String>,
    },
    /// The script ended too early.
    UnexpectedEnd {
        span: Span,
        expected: Vec<String>,
    },
    /// Expression or statement nesting beyond [`crate::ast::MAX_DEPTH`].
    TooDeep {
        span: Span,
    },
    /// A flat chain (`a + b + ...`, `else if`, `?:`) longer than
    /// `MAX_DEPTH * LEVEL` links.
    TooLong {
        span: Span,
    },
    /// A type annotation other than `long` or `string`.
    BadTypeName {
        name: String,
        span: Span,
    },
    /// A bad `@define` macro use.
    Macro {
        msg: String,
        span: Span,
    },
}

impl ParseError {
    pub fn span(&self) -> Span {
        match self {
            ParseError::Lex(e) => e.span,
            ParseError::Unexpected { span, .. }
            | ParseError::UnexpectedEnd { span, .. }
            | ParseError::TooDeep { span }
            | ParseError::TooLong { span }
            | ParseError::BadTypeName { span, .. }
            | ParseError::Macro { span, .. } => *span,
        }
    }
}

type LalrError = lalrpop_util::ParseError<usize, Tok, Infallible>;

/// Parses one file. On failure returns every error found (the parser
/// recovers at statement and top-level boundaries).
pub fn parse_file(src: &str, file: FileId) -> Result<Script, Vec<ParseError>> {
    parse_file_with(src, file, &[])
}

/// [`parse_file`] with the `@define` macros of the file expanded.
pub fn parse_file_with(
    src: &str,
    file: FileId,
    macros: &[crate::preprocess::Macro],
) -> Result<Script, Vec<ParseError>> {
    let (tokens, lex_errors) = lexer::lex(src, file);
    let mut errors: Vec<ParseError> = lex_errors.into_iter().map(ParseError::Lex).collect();
    let tokens = macros::expand(tokens, macros, file, &mut errors);
    let mut state = actions::State::default();
    let eof = src.len();
    let result = grammar::ScriptParser::new().parse(
        file,
        src,
        &mut state,
        tokens.into_iter().map(Ok::<_, Infallible>),
    );
    for rec in std::mem::take(&mut state.recovered) {
        errors.push(convert(rec.error, file, eof));
    }
    errors.append(&mut state.errors);
    let script = match result {
        Ok(script) => Some(script),
        Err(e) => {
            errors.push(convert(e, file, eof));
            None
        }
    };
    match script {
        Some(script) if errors.is_empty() => Ok(script),
        _ => {
            errors.sort_by_key(|e| (e.span().start, e.span().end));
            errors.dedup_by_key(|e| e.span().start);
            // After an unterminated string or comment the rest of the file is
            // swallowed: what the parser says about it is noise.
            let swallowed = errors.iter().find_map(|e| match e {
                ParseError::Lex(l)
                    if matches!(
                        l.kind,
                        lexer::LexErrorKind::UnterminatedString
                            | lexer::LexErrorKind::UnterminatedComment
                    ) =>
                {
                    Some(l.span.start)
                }
                _ => None,
            });
            if let Some(at) = swallowed {
                errors.retain(|e| matches!(e, ParseError::Lex(_)) || e.span().start < at);
            }
            Err(errors)
        }
    }
}

fn convert(e: LalrError, file: FileId, eof: usize) -> ParseError {
    match e {
        lalrpop_util::ParseError::InvalidToken { location } => ParseError::Unexpected {
            found: Tok::Semi,
            span: Span::new(file, location, location),
            expected: vec![],
        },
        lalrpop_util::ParseError::UnrecognizedEof { expected, .. } => ParseError::UnexpectedEnd {
            span: Span::new(file, eof, eof),
            expected: readable(expected),
        },
        lalrpop_util::ParseError::UnrecognizedToken {
            token: (l, found, r),
            expected,
        } => ParseError::Unexpected {
            found,
            span: Span::new(file, l, r),
            expected: readable(expected),
        },
        lalrpop_util::ParseError::ExtraToken {
            token: (l, found, r),
        } => ParseError::Unexpected {
            found,
            span: Span::new(file, l, r),
            expected: vec![],
        },
        lalrpop_util::ParseError::User { error } => match error {},
    }
}

/// Turns lalrpop's terminal names into what a user would type.
fn readable(expected: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = expected
        .into_iter()
        .map(|t| match t.as_str() {
            "IDENT" => "identifier".to_string(),
            "NUM" => "number".to_string(),
            "STR" => "string".to_string(),
            "TVAR" => "`$name`".to_string(),
            "DARG" => "`$N`".to_string(),
            "AARG" => "`@N`".to_string(),
            "ATNAME" => "`@name`".to_string(),
            _ => {
                let inner = t.trim_matches('"');
                let inner = match inner {
                    "one<" => "<",
                    "one>" => ">",
                    "return;" => "return",
                    s => s,
                };
                format!("`{inner}`")
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the parser expected, in a few words: the closing or separating
/// tokens by name, everything that can start an expression as "an expression".
fn expected_note(expected: &[String]) -> Vec<String> {
    if expected.is_empty() {
        return vec![];
    }
    if expected.len() <= 6 {
        return vec![format!("expected one of: {}", expected.join(", "))];
    }
    let mut parts: Vec<String> = Vec::new();
    let statement = expected.iter().any(|e| e == "`if`");
    if statement {
        parts.push("a statement".to_string());
    } else if expected.iter().any(|e| e == "identifier") {
        parts.push("an expression".to_string());
    }
    for t in ["`)`", "`]`", "`}`", "`>`", "`;`", "`,`", "`{`"] {
        if statement && t == "`{`" {
            continue;
        }
        if expected.iter().any(|e| e == t) {
            parts.push(t.to_string());
        }
    }
    if parts.is_empty() {
        return vec![format!("expected one of {} tokens", expected.len())];
    }
    let last = parts.pop().unwrap_or_default();
    if parts.is_empty() {
        vec![format!("expected {last}")]
    } else {
        vec![format!("expected {} or {last}", parts.join(", "))]
    }
}

impl crate::diag::ToDiagnostic for ParseError {
    fn to_diagnostic(&self) -> crate::diag::Diagnostic {
        use crate::diag::{error, primary};
        use crate::lexer::LexErrorKind as K;
        match self {
            ParseError::Lex(e) => {
                let (msg, label) = match &e.kind {
                    K::UnexpectedChars(t) => (
                        if t.chars().count() == 1 {
                            format!("unexpected character '{}'", t.escape_debug())
                        } else {
                            format!("unexpected characters '{}'", t.escape_debug())
                        },
                        "not part of any token",
                    ),
                    K::UnterminatedString => {
                        ("unterminated string".to_string(), "the string starts here")
                    }
                    K::UnterminatedComment => (
                        "unterminated comment".to_string(),
                        "the comment starts here",
                    ),
                    K::BadEscape(s) => {
                        (format!("unknown escape `{s}` in string"), "in this string")
                    }
                    K::BadNumber(s) => (format!("malformed number `{s}`"), "not a number"),
                    K::NumberTooLarge(s) => {
                        (format!("number `{s}` does not fit in 64 bits"), "too large")
                    }
                    K::EmbeddedC => (
                        "embedded C (`%{ ... %}`) is not supported: ptap compiles scripts itself and runs no C compiler".to_string(),
                        "embedded C starts here",
                    ),
                    K::BadArgNumber(s) => (
                        format!("bad script argument reference `{s}`"),
                        "arguments are numbered from 1",
                    ),
                    K::DollarDollar(s) => (
                        format!("`{s}` (every variable of the probe point as text) is not supported; print the variables by name, e.g. printf(\"x=%d\\n\", $x)"),
                        "not supported",
                    ),
                };
                error(msg).with_labels(vec![primary(e.span, label)])
            }
            ParseError::Unexpected {
                found,
                span,
                expected,
            } => {
                let mut notes = expected_note(expected);
                let unsafe_start = matches!(
                    found,
                    Tok::LParen | Tok::LBracket | Tok::Minus | Tok::Plus | Tok::Inc | Tok::Dec
                );
                if unsafe_start && expected.iter().any(|e| e == "`;`") {
                    notes = vec![format!(
                        "help: a statement that starts with `{}` must come first in a block or after `;`",
                        found.text()
                    )];
                }
                if matches!(found, Tok::Probe | Tok::Global | Tok::Function)
                    && expected.iter().any(|e| e == "`>`")
                {
                    notes.push(
                        "help: a one-liner `probe POINT < ... >` must end with `>` right before the next `probe`, `global` or `function`"
                            .to_string(),
                    );
                }
                error(format!("syntax error: unexpected {}", found.describe()))
                    .with_labels(vec![primary(*span, "unexpected here")])
                    .with_notes(notes)
            }
            ParseError::UnexpectedEnd { span, expected } => {
                let mut notes = expected_note(expected);
                if expected.iter().any(|e| e == "`}`") {
                    notes.push("help: is a `}` missing?".to_string());
                }
                error("syntax error: unexpected end of script")
                    .with_labels(vec![primary(*span, "the script ends here")])
                    .with_notes(notes)
            }
            ParseError::TooDeep { span } => error(format!(
                "nesting too deep (more than {} levels)",
                crate::ast::MAX_DEPTH
            ))
            .with_labels(vec![primary(
                Span {
                    end: span.start + 1,
                    ..*span
                },
                "too deep",
            )]),
            ParseError::TooLong { span } => error(format!(
                "expression too long (a chain of more than {} operators)",
                crate::ast::MAX_HEIGHT
            ))
            .with_labels(vec![primary(
                Span {
                    end: span.start + 1,
                    ..*span
                },
                "too long",
            )])
            .with_notes(vec![
                "help: split it, e.g. into partial results in temporary variables".to_string(),
            ]),
            ParseError::BadTypeName { name, span } => error(format!("unknown type `{name}`"))
                .with_labels(vec![primary(*span, "types are `long` and `string`")]),
            ParseError::Macro { msg, span } => {
                error(msg.clone()).with_labels(vec![primary(*span, "here")])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Script {
        match parse_file(src, FileId(0)) {
            Ok(s) => s,
            Err(e) => panic!("{src}: {e:?}"),
        }
    }

    #[test]
    fn parses_the_language_screen() {
        ok("global opens, lat
probe kretprobe(sys_open) { if (ret < 0) printf(\"%s: %d\\n\", execname(), ret) }
probe kretprobe(sys_open) < if ret<0 print(ret) >
probe kprobe(work) { opens[tid()]++ }
probe kprobe(libc:malloc+4) { x = 1 }
probe jprobe(do_fork) { printf(\"%d\\n\", arg1) }
probe kretprobe(read) { lat <<< ret }
probe begin { print(\"tracing...\") }
probe timer.ms(1000) { x = 2 }
probe end { foreach (k in opens-) printf(\"%d %d\\n\", k, opens[k]) }
function double(x) { return 2 * x }");
    }

    #[test]
    fn several_errors_are_reported() {
        let e = parse_file(
            "probe begin { x = ; y = 1 }\nprobe end { z = = 2 }",
            FileId(0),
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("probe begin {{ x = {}1 }}", "!".repeat(5000));
        let e = parse_file(&src, FileId(0)).unwrap_err();
        assert!(matches!(e[0], ParseError::TooDeep { .. }));
        let src = format!(
            "probe begin {{ x = {}1{} }}",
            "!(".repeat(201),
            ")".repeat(201)
        );
        let e = parse_file(&src, FileId(0)).unwrap_err();
        assert!(matches!(e[0], ParseError::TooDeep { .. }), "{e:?}");
        let src = format!(
            "probe begin {{ x = {}1{} }}",
            "!(".repeat(197),
            ")".repeat(197)
        );
        ok(&src);
    }

    #[test]
    fn flat_chains_are_not_nesting() {
        let terms = |n: usize, op: &str| vec!["1"; n].join(op);
        ok(&format!("probe begin {{ x = {} }}", terms(780, "+")));
        ok(&format!("probe begin {{ x = {} }}", terms(780, " || ")));
        ok(&format!("probe begin {{ x = {} }}", terms(500, " . ")));
        let elifs = "if (x) y = 1 else ".repeat(780);
        ok(&format!("probe begin {{ {elifs} y = 2 }}"));
        let e = parse_file(
            &format!("probe begin {{ x = {} }}", terms(900, "+")),
            FileId(0),
        )
        .unwrap_err();
        assert!(matches!(e[0], ParseError::TooLong { .. }), "{e:?}");
    }
}
