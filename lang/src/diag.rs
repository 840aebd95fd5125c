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

/// At most this many diagnostics are rendered; a last line counts the rest.
pub const MAX_SHOWN: usize = 50;
/// Source lines longer than this (in characters) are clipped around the
/// first marker under them.
pub const MAX_LINE: usize = 120;

/// Renders diagnostics as plain text (no colour), one after the other: the
/// first [`MAX_SHOWN`], then one line saying how many more there are. Long
/// source lines are clipped around the caret.
pub fn render(sources: &Sources, diags: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags.iter().take(MAX_SHOWN) {
        match term::emit_into_string(&config, sources.files(), d) {
            Ok(s) => out.push_str(&clip_long_lines(&s)),
            Err(e) => out.push_str(&format!("error: {} (while rendering: {e})\n", d.message)),
        }
    }
    if diags.len() > MAX_SHOWN {
        let more = diags.len() - MAX_SHOWN;
        let s = if more == 1 { "" } else { "s" };
        out.push_str(&format!(
            "note: {more} more diagnostic{s} not shown (only the first {MAX_SHOWN} are)\n"
        ));
    }
    out
}

/// Splits a rendered snippet line `GUTTER │ BODY` into its gutter (up to and
/// including `│ `) and its body.
fn split_gutter(line: &str) -> Option<(&str, &str)> {
    let bar = line.find('│')?;
    if line[..bar]
        .chars()
        .any(|c| !(c == ' ' || c.is_ascii_digit()))
    {
        return None;
    }
    let body_at = bar + '│'.len_utf8();
    let body_at = if line[body_at..].starts_with(' ') {
        body_at + 1
    } else {
        body_at
    };
    Some((&line[..body_at], &line[body_at..]))
}

/// Clips every source line longer than [`MAX_LINE`] characters to a window
/// around the first marker of the lines under it, and shifts those lines
/// alike (codespan-reporting always prints whole lines).
fn clip_long_lines(rendered: &str) -> String {
    let lines: Vec<&str> = rendered.split_inclusive('\n').collect();
    let mut out = String::with_capacity(rendered.len().min(1 << 16));
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some((gutter, body)) = split_gutter(line) else {
            out.push_str(line);
            i += 1;
            continue;
        };
        let is_source = gutter
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit());
        let body_text = body.trim_end_matches('\n');
        if !is_source || body_text.chars().count() <= MAX_LINE {
            out.push_str(line);
            i += 1;
            continue;
        }
        // The marker lines below this source line (until the next source line).
        let mut j = i + 1;
        let mut first_marker = None;
        while j < lines.len() {
            match split_gutter(lines[j]) {
                Some((g, b)) if !g.trim_start().starts_with(|c: char| c.is_ascii_digit()) => {
                    if let Some(col) = b.chars().position(|c| c != ' ' && c != '\n') {
                        first_marker = Some(first_marker.map_or(col, |m: usize| m.min(col)));
                    }
                    j += 1;
                }
                _ => break,
            }
        }
        let center = first_marker.unwrap_or(0);
        let start = center.saturating_sub(MAX_LINE / 2);
        let total = body_text.chars().count();
        let end = (start + MAX_LINE).min(total);
        out.push_str(gutter);
        if start > 0 {
            out.push('…');
        }
        out.extend(body_text.chars().skip(start).take(end - start));
        if end < total {
            out.push('…');
        }
        out.push('\n');
        for marker_line in &lines[i + 1..j] {
            let (g, b) = split_gutter(marker_line).unwrap_or(("", marker_line));
            out.push_str(g);
            let b = b.trim_end_matches('\n');
            if b.chars().count() > start {
                if start > 0 {
                    out.push(' ');
                }
                out.extend(b.chars().skip(start));
            }
            out.push('\n');
        }
        i = j;
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
    fn long_lines_are_clipped_around_the_caret() {
        let mut sources = Sources::new();
        let text = format!("probe begin {{ {} x = ; }}", "y = 1 ".repeat(2000));
        let f = sources.add("t.pt", &text);
        let at = text.find("x = ;").unwrap() + 4;
        let d = error("syntax error")
            .with_labels(vec![primary(crate::span::Span::new(f, at, at + 1), "here")]);
        let out = render(&sources, &[d]);
        assert!(
            out.lines().all(|l| l.chars().count() < MAX_LINE + 40),
            "{out}"
        );
        let src = out.lines().find(|l| l.contains("x = ;")).expect(&out);
        let caret = out.lines().find(|l| l.contains("^ here")).expect(&out);
        let col = |l: &str, pat: &str| l[..l.find(pat).unwrap()].chars().count();
        assert_eq!(col(src, "x = ;") + 4, col(caret, "^"), "{out}");
        assert!(out.contains("t.pt:1:"), "{out}");
    }

    #[test]
    fn the_number_of_diagnostics_is_capped() {
        let mut sources = Sources::new();
        let f = sources.add("t.pt", "x");
        let d = error("e").with_labels(vec![primary(crate::span::Span::new(f, 0, 1), "")]);
        let out = render(&sources, &vec![d; 60]);
        assert_eq!(out.matches("error: e").count(), MAX_SHOWN, "{out}");
        assert!(out.ends_with("note: 10 more diagnostics not shown (only the first 50 are)\n"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("execnam", "execname"), 1);
        assert_eq!(suggest("exename", ["execname", "pid"]), Some("execname"));
        assert_eq!(suggest("zzz", ["execname", "pid"]), None);
        assert_eq!(suggest("rxa", ["rax", "rbx"]), Some("rax"));
    }
}
