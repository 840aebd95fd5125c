//! Expansion of SystemTap's `@define` macros (collected by
//! `crate::preprocess`) on the token stream: `@NAME` and `@NAME(x, y)` are
//! replaced by the body's tokens, with each `@param` replaced by the tokens
//! of its argument. Body tokens keep their spans in the definition, so an
//! error inside a macro points at the line that defines it.
use super::ParseError;
use crate::lexer::{self, Spanned, Tok};
use crate::preprocess::Macro;
use crate::span::{FileId, Span};

/// Deepest nesting of macro uses inside macro bodies (a recursive macro
/// stops here with an error).
const MAX_DEPTH: usize = 32;

pub(super) fn expand(
    tokens: Vec<Spanned>,
    macros: &[Macro],
    file: FileId,
    errors: &mut Vec<ParseError>,
) -> Vec<Spanned> {
    if macros.is_empty() {
        return tokens;
    }
    let mut x = Expander {
        macros,
        file,
        errors,
    };
    x.expand(tokens, 0)
}

struct Expander<'a> {
    macros: &'a [Macro],
    file: FileId,
    errors: &'a mut Vec<ParseError>,
}

impl Expander<'_> {
    fn err(&mut self, start: usize, end: usize, msg: String) {
        self.errors.push(ParseError::Macro {
            msg,
            span: Span::new(self.file, start, end),
        });
    }

    fn expand(&mut self, tokens: Vec<Spanned>, depth: usize) -> Vec<Spanned> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            let (start, tok, end) = &tokens[i];
            let Tok::AtName(name) = tok else {
                out.push(tokens[i].clone());
                i += 1;
                continue;
            };
            let Some(m) = self.macros.iter().find(|m| &m.name == name) else {
                out.push(tokens[i].clone());
                i += 1;
                continue;
            };
            if depth >= MAX_DEPTH {
                self.err(
                    *start,
                    *end,
                    format!("macro `@{name}` expands more than {MAX_DEPTH} levels deep (does it use itself?)"),
                );
                return out;
            }
            let (use_start, use_end) = (*start, *end);
            i += 1;
            // Arguments: comma-separated token lists inside the parentheses.
            let mut args: Vec<Vec<Spanned>> = Vec::new();
            if let Some(params) = &m.params {
                if !matches!(tokens.get(i), Some((_, Tok::LParen, _))) {
                    self.err(
                        use_start,
                        use_end,
                        format!(
                            "macro `@{name}` takes {} argument(s): write `@{name}(...)`",
                            params.len()
                        ),
                    );
                    continue;
                }
                i += 1;
                let mut level = 0usize;
                let mut cur = Vec::new();
                let mut closed = false;
                while i < tokens.len() {
                    let t = &tokens[i];
                    i += 1;
                    match t.1 {
                        Tok::LParen | Tok::LBracket | Tok::LBrace => level += 1,
                        Tok::RParen | Tok::RBracket | Tok::RBrace if level > 0 => level -= 1,
                        Tok::RParen => {
                            closed = true;
                            break;
                        }
                        Tok::Comma if level == 0 => {
                            args.push(std::mem::take(&mut cur));
                            continue;
                        }
                        _ => {}
                    }
                    cur.push(t.clone());
                }
                if !closed {
                    self.err(
                        use_start,
                        use_end,
                        format!("the arguments of `@{name}(` have no closing `)`"),
                    );
                    return out;
                }
                if !cur.is_empty() || !args.is_empty() {
                    args.push(cur);
                }
                if args.len() != params.len() {
                    self.err(
                        use_start,
                        tokens[i - 1].2,
                        format!(
                            "macro `@{name}` takes {} argument(s), {} given",
                            params.len(),
                            args.len()
                        ),
                    );
                    continue;
                }
            }
            let (body, lex_errors) = lexer::lex(&m.body, self.file);
            for mut e in lex_errors {
                let r = e.span.range();
                e.span = Span::new(self.file, r.start + m.offset, r.end + m.offset);
                self.errors.push(ParseError::Lex(e));
            }
            let params = m.params.clone().unwrap_or_default();
            let mut substituted = Vec::with_capacity(body.len());
            for (s, t, e) in body {
                if let Tok::AtName(p) = &t {
                    if let Some(k) = params.iter().position(|x| x == p) {
                        substituted.extend(args[k].iter().cloned());
                        continue;
                    }
                }
                substituted.push((s + m.offset, t, e + m.offset));
            }
            out.extend(self.expand(substituted, depth + 1));
        }
        out
    }
}
