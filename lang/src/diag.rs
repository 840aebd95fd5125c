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

/// Edit distance with adjacent transpositions (optimal string alignment),
/// for "did you mean" hints. Hand-written: a dozen lines do not justify a new
/// workspace dependency.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
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
        assert_eq!(suggest("rxa", ["rax", "rbx"]), Some("rax"));
    }
}
