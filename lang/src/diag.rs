//! Diagnostics: every phase has its own error enum; all of them become
//! codespan-reporting diagnostics through [`ToDiagnostic`].
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::term;

use crate::sources::Sources;
use crate::span::Span;

/// A rendered-later diagnostic (file ids are [`crate::span::FileId`] numbers).
pub type Diagnostic = CsDiagnostic<usize>;

/// Turns a phase's error into a diagnostic.
pub trait ToDiagnostic {
    fn to_diagnostic(&self) -> Diagnostic;
}

/// A label under `span` marked with `^`.
pub fn primary(span: Span, msg: impl Into<String>) -> Label<usize> {
    Label::primary(span.file.0 as usize, span.range()).with_message(msg.into())
}

/// A label under `span` marked with `-`.
pub fn secondary(span: Span, msg: impl Into<String>) -> Label<usize> {
    Label::secondary(span.file.0 as usize, span.range()).with_message(msg.into())
}

pub fn error(msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error().with_message(msg.into())
}

/// Renders diagnostics as plain text (no colour), one after the other.
pub fn render(sources: &Sources, diags: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        match term::emit_into_string(&config, sources.files(), d) {
            Ok(s) => out.push_str(&s),
            Err(e) => out.push_str(&format!("error: {} (while rendering: {e})\n", d.message)),
        }
    }
    out
}

/// Levenshtein distance, for "did you mean" hints. Hand-written: ten lines
/// do not justify a new workspace dependency.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a distance that scales with the name length.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("execnam", "execname"), 1);
        assert_eq!(suggest("exename", ["execname", "pid"]), Some("execname"));
        assert_eq!(suggest("zzz", ["execname", "pid"]), None);
    }
}
