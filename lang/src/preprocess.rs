//! SystemTap's conditional preprocessing: `%( CONDITION %? THEN %: ELSE %)`
//! (the `%: ELSE` part is optional; conditionals nest).
//!
//! The text of the branches not taken, and the markers and conditions, are
//! replaced by blanks (newlines kept), so every byte offset, line and column
//! of the result is the original one and diagnostics point at what the user
//! wrote.
//!
//! Conditions: `||`, `&&`, `!`, parentheses, and comparisons
//! (`== != < <= > >=`) of
//! - `$#`, `@#`: the number of script arguments;
//! - `arch` (`"x86_64"`), `runtime` (`"dyninst"`: user space, no kernel),
//!   `guru_mode` (0 or 1), `systemtap_privilege` (`"stapusr"`);
//! - `kernel_v`, `kernel_vr` (the running kernel's version, without and with
//!   its release suffix) and `systemtap_v` (`"5.0"`, the language level ptap
//!   follows), compared as versions;
//! - numbers and strings. `==`/`!=` with a string are glob matches, as in
//!   SystemTap.
//!
//! `CONFIG_*` (kernel configuration) is an error: there is no kernel side.
//!
//! Macros: `@define NAME %( BODY %)` and `@define NAME(a, b) %( BODY %)`
//! (the body refers to its parameters as `@a`, `@b`) are collected here and
//! blanked; the parser expands each use, `@NAME` or `@NAME(x, y)`, from the
//! body's tokens (`crate::parser::macros`), so diagnostics inside a macro
//! point at its definition.
use crate::diag::{self, Diagnostic};
use crate::options::Options;
use crate::span::{FileId, Span};

/// The language level ptap follows for `systemtap_v`.
pub const SYSTEMTAP_V: &str = "5.0";

struct Pp<'a> {
    src: &'a [u8],
    out: Vec<u8>,
    file: FileId,
    opts: &'a Options,
    errors: Vec<Diagnostic>,
    macros: Vec<Macro>,
}

/// A `@define`d macro.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macro {
    pub name: String,
    /// Where the name is written (for "defined twice").
    pub name_span: Span,
    /// `None`: no parameter list (`@NAME` alone).
    pub params: Option<Vec<String>>,
    /// The body, conditionals applied, as it stands in the file.
    pub body: String,
    /// Byte offset of the body in the file.
    pub offset: usize,
}

/// Whether `text` needs preprocessing at all (a cheap check).
pub fn needed(text: &str) -> bool {
    text.contains("%(") || text.contains("@define")
}

/// Applies the conditionals and collects the macros. Err: the diagnostics
/// (spans in `text`).
pub fn apply(
    text: &str,
    file: FileId,
    opts: &Options,
) -> Result<(String, Vec<Macro>), Vec<Diagnostic>> {
    if !needed(text) {
        return Ok((text.to_string(), Vec::new()));
    }
    let mut pp = Pp {
        src: text.as_bytes(),
        out: text.as_bytes().to_vec(),
        file,
        opts,
        errors: Vec::new(),
        macros: Vec::new(),
    };
    let mut pos = 0;
    loop {
        let (end, term) = pp.block(pos, true, 0);
        match term {
            None => break,
            Some(t) => {
                pp.err(
                    end,
                    end + 2,
                    format!("`{t}` outside a `%( ... %)` conditional"),
                );
                pos = end + 2;
            }
        }
    }
    if !pp.errors.is_empty() {
        return Err(pp.errors);
    }
    // Only whole bytes were replaced by ASCII blanks: still UTF-8.
    let macros = std::mem::take(&mut pp.macros);
    String::from_utf8(pp.out).map(|t| (t, macros)).map_err(|_| {
        vec![diag::error(
            "internal error: preprocessing broke UTF-8".to_string(),
        )]
    })
}

impl Pp<'_> {
    fn err(&mut self, start: usize, end: usize, msg: String) {
        self.errors
            .push(diag::error(msg).with_labels(vec![diag::primary(
                Span::new(self.file, start, end.min(self.src.len())),
                "here",
            )]));
    }

    fn blank(&mut self, start: usize, end: usize) {
        for b in &mut self.out[start..end.min(self.src.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }

    /// Skips a string or comment starting at `i`; returns the index after it
    /// (or `i` when there is none).
    fn skip_lexical(&self, i: usize) -> usize {
        let s = self.src;
        match s[i] {
            b'"' => {
                let mut j = i + 1;
                while j < s.len() && s[j] != b'"' && s[j] != b'\n' {
                    if s[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                (j + 1).min(s.len())
            }
            b'#' => s[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(s.len(), |p| i + p),
            b'/' if s.get(i + 1) == Some(&b'/') => s[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(s.len(), |p| i + p),
            b'/' if s.get(i + 1) == Some(&b'*') => s[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(s.len(), |p| i + 2 + p + 2),
            _ => i,
        }
    }

    /// Scans from `pos` to the end of a block: returns the position of the
    /// terminator (`%?`, `%:`, `%)`) or the end, and which. Text is kept when
    /// `keep`, else blanked.
    fn block(&mut self, mut pos: usize, keep: bool, depth: usize) -> (usize, Option<&'static str>) {
        let mut start = pos;
        let s = self.src;
        while pos < s.len() {
            let after = self.skip_lexical(pos);
            if after != pos {
                pos = after;
                continue;
            }
            if s[pos] == b'@' && s[pos..].starts_with(b"@define") && self.define_at(pos) {
                if !keep {
                    self.blank(start, pos);
                }
                pos = self.define(pos, keep, depth);
                start = pos;
                continue;
            }
            if s[pos] == b'%' && pos + 1 < s.len() {
                let term = match s[pos + 1] {
                    b'?' => Some("%?"),
                    b':' => Some("%:"),
                    b')' => Some("%)"),
                    _ => None,
                };
                if let Some(t) = term {
                    if !keep {
                        self.blank(start, pos);
                    }
                    return (pos, Some(t));
                }
                if s[pos + 1] == b'(' {
                    if !keep {
                        self.blank(start, pos);
                    }
                    pos = self.conditional(pos, keep, depth + 1);
                    start = pos;
                    continue;
                }
            }
            pos += 1;
        }
        if !keep {
            self.blank(start, pos);
        }
        (pos, None)
    }

    /// `@define` at `pos` is a whole word (not `@defined`, not `x@define`).
    fn define_at(&self, pos: usize) -> bool {
        let s = self.src;
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        !s.get(pos + 7).is_some_and(|&c| word(c)) && (pos == 0 || !word(s[pos - 1]))
    }

    fn skip_space(&self, mut i: usize) -> usize {
        while i < self.src.len() && self.src[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    fn ident(&self, i: usize) -> Option<(String, usize)> {
        let s = self.src;
        let n = s[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        let ok = n > 0 && !s[i].is_ascii_digit();
        ok.then(|| (String::from_utf8_lossy(&s[i..i + n]).into_owned(), i + n))
    }

    /// `@define NAME[(PARAMS)] %( BODY %)` at `pos`: records the macro (when
    /// `keep`) and blanks the definition; returns the index after it.
    fn define(&mut self, pos: usize, keep: bool, depth: usize) -> usize {
        let s = self.src;
        let bad = |pp: &mut Self, at: usize, msg: &str| {
            // The label ends on the definition's first line.
            let line_end = s[pos..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(s.len(), |p| pos + p);
            let label_end = at.clamp(pos + 7, line_end.max(pos + 7));
            pp.err(
                pos,
                label_end,
                format!("{msg}; write `@define NAME(a, b) %( BODY %)`"),
            );
            // Skip to the end of the line: the rest of the definition is noise.
            pp.blank(pos, line_end);
            line_end
        };
        let i = self.skip_space(pos + 7);
        let Some((name, after_name)) = (i < s.len()).then(|| self.ident(i)).flatten() else {
            return bad(self, i, "`@define` without a macro name");
        };
        let name_span = Span::new(self.file, i, after_name);
        let mut i = self.skip_space(after_name);
        let mut params = None;
        if s.get(i) == Some(&b'(') {
            let mut list = Vec::new();
            i = self.skip_space(i + 1);
            if s.get(i) == Some(&b')') {
                i += 1;
            } else {
                loop {
                    let Some((p, after)) = (i < s.len()).then(|| self.ident(i)).flatten() else {
                        return bad(self, i, "a macro parameter must be a name");
                    };
                    list.push(p);
                    i = self.skip_space(after);
                    match s.get(i) {
                        Some(b',') => i = self.skip_space(i + 1),
                        Some(b')') => {
                            i += 1;
                            break;
                        }
                        _ => return bad(self, i, "expected `,` or `)` in the macro's parameters"),
                    }
                }
            }
            params = Some(list);
            i = self.skip_space(i);
        }
        if !s[i..].starts_with(b"%(") {
            return bad(
                self,
                i,
                &format!("`@define {name}` must be followed by its body in `%( %)`"),
            );
        }
        let body_start = i + 2;
        let (end, term) = self.block(body_start, keep, depth + 1);
        if term != Some("%)") {
            self.err(
                i,
                i + 2,
                format!("the body of `@define {name}` has no closing `%)`"),
            );
            self.blank(pos, end);
            return end.max(body_start);
        }
        if keep {
            if self.macros.iter().any(|m| m.name == name) {
                let r = name_span.range();
                self.err(r.start, r.end, format!("macro `@{name}` is defined twice"));
            }
            let body = String::from_utf8_lossy(&self.out[body_start..end]).into_owned();
            self.macros.push(Macro {
                name,
                name_span,
                params,
                body,
                offset: body_start,
            });
        }
        self.blank(pos, end + 2);
        end + 2
    }

    /// `%( COND %? THEN [%: ELSE] %)` at `pos`; returns the index after `%)`.
    fn conditional(&mut self, pos: usize, keep: bool, depth: usize) -> usize {
        if depth > 64 {
            self.err(
                pos,
                pos + 2,
                "conditionals nested too deep (more than 64)".to_string(),
            );
            return self.src.len();
        }
        let s = self.src;
        let cond_start = pos + 2;
        let Some(q) = s[cond_start..].windows(2).position(|w| w == b"%?") else {
            self.err(pos, pos + 2, "`%(` without its `%?`".to_string());
            return s.len();
        };
        let q = cond_start + q;
        let cond_text = String::from_utf8_lossy(&s[cond_start..q]).into_owned();
        let value = if keep {
            match eval(&cond_text, self.opts) {
                Ok(v) => v,
                Err(e) => {
                    self.err(cond_start, q, format!("bad preprocessor condition: {e}"));
                    false
                }
            }
        } else {
            false
        };
        self.blank(pos, q + 2);
        let (end, term) = self.block(q + 2, keep && value, depth);
        let end = match term {
            Some("%:") => {
                self.blank(end, end + 2);
                let (end2, term2) = self.block(end + 2, keep && !value, depth);
                if term2 != Some("%)") {
                    self.err(pos, pos + 2, "`%(` without its `%)`".to_string());
                    return s.len();
                }
                end2
            }
            Some("%)") => end,
            _ => {
                self.err(pos, pos + 2, "`%(` without its `%)`".to_string());
                return s.len();
            }
        };
        self.blank(end, end + 2);
        end + 2
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(i64),
    Str(String),
    /// A version (kernel_v, systemtap_v).
    Ver(String),
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "0.0.0".to_string())
}

fn version_key(v: &str) -> Vec<i64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Shell-style glob match (`*`, `?`), as SystemTap compares strings.
pub(crate) fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

struct Cond<'a> {
    toks: Vec<String>,
    i: usize,
    opts: &'a Options,
}

/// Why a `%( CONDITION %?` cannot be evaluated (shown after "bad
/// preprocessor condition: ").
#[derive(Debug, thiserror::Error)]
enum CondError {
    #[error("unterminated string")]
    UnterminatedString,
    #[error("unexpected `{0}`")]
    Unexpected(String),
    #[error("the condition is empty")]
    Empty,
    #[error("`)` missing")]
    MissingParen,
    #[error("a value is missing")]
    MissingValue,
    #[error("`-` before a non-number")]
    NegatedNonNumber,
    #[error("bad number `{0}`")]
    BadNumber(String),
    #[error("`{0}` is a kernel configuration option; ptap has no kernel side")]
    KernelConfig(String),
    #[error("unknown name `{0}`")]
    UnknownName(String),
    #[error("a comparison is missing")]
    MissingComparison,
    #[error("cannot compare a number with a string")]
    NumberWithString,
}

fn tokenize(text: &str) -> Result<Vec<String>, CondError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' {
            let mut j = i + 1;
            let mut v = String::new();
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    j += 1;
                }
                v.push(b[j] as char);
                j += 1;
            }
            if j >= b.len() {
                return Err(CondError::UnterminatedString);
            }
            out.push(format!("\"{v}"));
            i = j + 1;
        } else if (c == b'$' || c == b'@') && b.get(i + 1) == Some(&b'#') {
            out.push("$#".to_string());
            i += 2;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let j = i + b[i..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(b.len() - i);
            out.push(text[i..j].to_string());
            i = j;
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            if ["==", "!=", "<=", ">=", "&&", "||"].contains(&two) {
                out.push(two.to_string());
                i += 2;
            } else if b"<>()!-".contains(&c) {
                out.push((c as char).to_string());
                i += 1;
            } else {
                return Err(CondError::Unexpected((c as char).to_string()));
            }
        }
    }
    Ok(out)
}

/// Evaluates a condition.
fn eval(text: &str, opts: &Options) -> Result<bool, CondError> {
    let mut c = Cond {
        toks: tokenize(text)?,
        i: 0,
        opts,
    };
    if c.toks.is_empty() {
        return Err(CondError::Empty);
    }
    let v = c.or()?;
    if c.i != c.toks.len() {
        return Err(CondError::Unexpected(
            c.toks[c.i].trim_start_matches('"').to_string(),
        ));
    }
    Ok(v)
}

impl Cond<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.i).map(String::as_str)
    }
    fn or(&mut self) -> Result<bool, CondError> {
        let mut v = self.and()?;
        while self.peek() == Some("||") {
            self.i += 1;
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }
    fn and(&mut self) -> Result<bool, CondError> {
        let mut v = self.not()?;
        while self.peek() == Some("&&") {
            self.i += 1;
            let r = self.not()?;
            v = v && r;
        }
        Ok(v)
    }
    fn not(&mut self) -> Result<bool, CondError> {
        match self.peek() {
            Some("!") => {
                self.i += 1;
                Ok(!self.not()?)
            }
            Some("(") => {
                self.i += 1;
                let v = self.or()?;
                if self.peek() != Some(")") {
                    return Err(CondError::MissingParen);
                }
                self.i += 1;
                Ok(v)
            }
            _ => self.cmp(),
        }
    }
    fn operand(&mut self) -> Result<Val, CondError> {
        let Some(t) = self.toks.get(self.i).cloned() else {
            return Err(CondError::MissingValue);
        };
        self.i += 1;
        if t == "-" {
            return match self.operand()? {
                Val::Num(n) => Ok(Val::Num(-n)),
                _ => Err(CondError::NegatedNonNumber),
            };
        }
        if let Some(s) = t.strip_prefix('"') {
            return Ok(Val::Str(s.to_string()));
        }
        if t.chars().all(|c| c.is_ascii_digit()) {
            return t
                .parse()
                .map(Val::Num)
                .map_err(|_| CondError::BadNumber(t.clone()));
        }
        Ok(match t.as_str() {
            "$#" => Val::Num(self.opts.args.len() as i64),
            "arch" => Val::Str("x86_64".to_string()),
            "runtime" => Val::Str("dyninst".to_string()),
            "guru_mode" => Val::Num(i64::from(self.opts.guru)),
            "systemtap_privilege" => Val::Str("stapusr".to_string()),
            "systemtap_v" => Val::Ver(SYSTEMTAP_V.to_string()),
            "kernel_vr" => Val::Ver(kernel_release()),
            "kernel_v" => {
                let r = kernel_release();
                let v: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                Val::Ver(v.trim_end_matches('.').to_string())
            }
            c if c.starts_with("CONFIG_") => return Err(CondError::KernelConfig(c.to_string())),
            other => return Err(CondError::UnknownName(other.to_string())),
        })
    }
    fn cmp(&mut self) -> Result<bool, CondError> {
        let l = self.operand()?;
        let op = match self.peek() {
            Some(op @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) => op.to_string(),
            _ => {
                return match l {
                    Val::Num(n) => Ok(n != 0),
                    _ => Err(CondError::MissingComparison),
                }
            }
        };
        self.i += 1;
        let r = self.operand()?;
        let ord = match (&l, &r) {
            (Val::Num(a), Val::Num(b)) => a.cmp(b),
            (Val::Ver(a), Val::Str(b) | Val::Ver(b)) | (Val::Str(b), Val::Ver(a)) => {
                let o = version_key(a).cmp(&version_key(b));
                if matches!(l, Val::Str(_)) {
                    o.reverse()
                } else {
                    o
                }
            }
            (Val::Str(a), Val::Str(b)) => {
                if op == "==" || op == "!=" {
                    let m = glob(b.as_bytes(), a.as_bytes());
                    return Ok(if op == "==" { m } else { !m });
                }
                a.cmp(b)
            }
            _ => return Err(CondError::NumberWithString),
        };
        use std::cmp::Ordering::*;
        Ok(match op.as_str() {
            "==" => ord == Equal,
            "!=" => ord != Equal,
            "<" => ord == Less,
            "<=" => ord != Greater,
            ">" => ord == Greater,
            _ => ord != Less,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, args: &[&str]) -> String {
        let opts = Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        apply(src, FileId(0), &opts)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .0
    }

    #[test]
    fn branches_are_blanked_in_place() {
        let src = "a %( $# == 1 %? b %: c %) d";
        let out = run(src, &["x"]);
        assert_eq!(out.len(), src.len());
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["a", "b", "d"]);
        let out = run(src, &[]);
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["a", "c", "d"]);
    }

    #[test]
    fn nesting_strings_and_newlines() {
        let src = "%( arch == \"x86_*\" %?\n%( $# > 0 %? \"%)\" %: no %)\n%)";
        let out = run(src, &[]);
        assert_eq!(out.matches('\n').count(), 2);
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["no"]);
    }

    #[test]
    fn versions_and_errors() {
        assert!(eval("systemtap_v >= \"2.0\"", &Options::default()).unwrap());
        assert!(!eval("systemtap_v < \"1.8\"", &Options::default()).unwrap());
        assert!(eval(
            "kernel_v >= \"2.6.9\" && !(guru_mode == 1)",
            &Options::default()
        )
        .unwrap());
        assert!(eval("CONFIG_SMP == \"y\"", &Options::default()).is_err());
        assert!(apply("%( 1 %? x", FileId(0), &Options::default()).is_err());
    }
}
