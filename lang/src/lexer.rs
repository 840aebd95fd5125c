//! The lexer: logos turns text into raw tokens, then two small post-passes
//! classify the tokens that need one token of context the LALR(1) grammar
//! cannot use without conflicts:
//!
//! * the one-liner probe body `probe POINT < stmts >`: the `<` right after a
//!   probe's point list becomes [`Tok::OneOpen`], and the `>` that is the last
//!   token of the script or is directly followed by `probe`, `global` or
//!   `function` becomes [`Tok::OneClose`];
//! * a `return` directly followed by `;`, `}`, `else`, a statement keyword,
//!   the one-liner close or the end of the script becomes [`Tok::ReturnBare`]
//!   (a return without value).
use logos::Logos;

use crate::span::{FileId, Span};

/// Raw tokens as logos sees them (no payload; the text comes from the span).
#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"(#|//)[^\n]*", allow_greedy = true))]
#[logos(skip r"/\*([^*]|\*+[^*/])*\*+/")]
enum Raw {
    #[token("/*")]
    UnterminatedComment,
    /// `%{`: SystemTap's embedded C (refused; skipped up to `%}`).
    #[token("%{")]
    EmbeddedC,
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Ident,
    /// `$name`, with SystemTap's member and index suffixes (`$p->a->b`,
    /// `$arr[3]`) and pretty-printing marks (`$s$`, `$s$$`); `$$parms`,
    /// `$$locals`, `$$vars` (also with `$`/`$$`).
    #[regex(r"\$[A-Za-z_][A-Za-z0-9_]*(->[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*(\$|\$\$)?")]
    #[regex(r"\$\$(parms|locals|vars)(\$|\$\$)?")]
    TargetVar,
    #[regex(r"\$[0-9]+")]
    DollarArg,
    /// `$#` / `@#`: the number of script arguments.
    #[token("$#")]
    DollarCount,
    #[token("@#")]
    AtCount,
    /// `$$vars`, `$$parms`, `$$locals`, `$$return` (with an optional `$`).
    #[regex(r"\$\$[A-Za-z_]+\$?")]
    DollarDollar,
    #[regex(r"@[0-9]+")]
    AtArg,
    #[regex(r"@[A-Za-z_][A-Za-z0-9_]*")]
    AtName,
    /// `->a->b[2]$` after `@cast(...)`.
    #[regex(r"->[A-Za-z_][A-Za-z0-9_]*(->[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*(\$|\$\$)?")]
    #[regex(r"\$\$?")]
    Members,
    #[regex(r"[0-9][A-Za-z0-9_]*")]
    Number,
    #[regex(r#""([^"\\\n]|\\[^\n])*""#)]
    Str,
    #[regex(r#""([^"\\\n]|\\[^\n])*"#)]
    UnterminatedStr,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token(",")]
    Comma,
    #[token(";")]
    Semi,
    #[token(":")]
    Colon,
    #[token("?")]
    Question,
    #[token(".")]
    Dot,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("<<")]
    Shl,
    #[token(">>")]
    Shr,
    #[token("<")]
    Lt,
    #[token(">")]
    Gt,
    #[token("<=")]
    Le,
    #[token(">=")]
    Ge,
    #[token("==")]
    EqEq,
    #[token("!=")]
    Ne,
    #[token("=~")]
    Match,
    #[token("!~")]
    NotMatch,
    #[token("&")]
    Amp,
    #[token("|")]
    Pipe,
    #[token("^")]
    Caret,
    #[token("~")]
    Tilde,
    #[token("!")]
    Bang,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,
    #[token("=")]
    Assign,
    #[token("+=")]
    AddAssign,
    #[token("-=")]
    SubAssign,
    #[token("*=")]
    MulAssign,
    #[token("/=")]
    DivAssign,
    #[token("%=")]
    ModAssign,
    #[token("<<=")]
    ShlAssign,
    #[token(">>=")]
    ShrAssign,
    #[token("&=")]
    AndAssign,
    #[token("|=")]
    OrAssign,
    #[token("^=")]
    XorAssign,
    #[token(".=")]
    CatAssign,
    #[token("++")]
    Inc,
    #[token("--")]
    Dec,
    #[token("<<<")]
    Aggregate,
}

/// A token as the grammar sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Probe,
    Global,
    Function,
    If,
    Else,
    While,
    For,
    Foreach,
    In,
    Limit,
    Break,
    Continue,
    Next,
    Return,
    /// `return` with no value (followed by `;`, `}`, `else`, the one-liner close or EOF).
    ReturnBare,
    Delete,
    Try,
    Catch,
    /// The `<` that opens a one-liner probe body.
    OneOpen,
    /// The `>` that closes a one-liner probe body.
    OneClose,
    Ident(String),
    /// `$name` (without the `$`).
    TargetVar(String),
    /// `$N`: script argument N, long or string by content.
    DollarArg(u32),
    /// `@N`: script argument N as a string.
    AtArg(u32),
    /// `@name` (without the `@`): `@entry`, `@count`, ...
    AtName(String),
    Members(String),
    Number(u64),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Colon,
    Question,
    Dot,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Shl,
    Shr,
    Lt,
    Gt,
    Le,
    Ge,
    EqEq,
    Ne,
    Match,
    NotMatch,
    Amp,
    Pipe,
    Caret,
    Tilde,
    Bang,
    AndAnd,
    OrOr,
    Assign,
    AddAssign,
    SubAssign,
    MulAssign,
    DivAssign,
    ModAssign,
    ShlAssign,
    ShrAssign,
    AndAssign,
    OrAssign,
    XorAssign,
    CatAssign,
    Inc,
    Dec,
    Aggregate,
}

impl Tok {
    /// How the token is written, for messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::TargetVar(s) => format!("`${s}`"),
            Tok::DollarArg(0) => "`$#`".to_string(),
            Tok::AtArg(0) => "`@#`".to_string(),
            Tok::DollarArg(n) => format!("`${n}`"),
            Tok::AtArg(n) => format!("`@{n}`"),
            Tok::AtName(s) => format!("`@{s}`"),
            Tok::Members(s) => format!("`{s}`"),
            Tok::Number(n) => format!("number `{n}`"),
            Tok::Str(_) => "a string".to_string(),
            Tok::ReturnBare => "`return`".to_string(),
            Tok::OneOpen => "`<` (one-liner body)".to_string(),
            Tok::OneClose => "`>` (end of one-liner body)".to_string(),
            other => format!("`{}`", other.text()),
        }
    }

    /// The spelling of keyword and punctuation tokens.
    pub fn text(&self) -> &'static str {
        use Tok::*;
        match self {
            Probe => "probe",
            Global => "global",
            Function => "function",
            If => "if",
            Else => "else",
            While => "while",
            For => "for",
            Foreach => "foreach",
            In => "in",
            Limit => "limit",
            Break => "break",
            Continue => "continue",
            Next => "next",
            Return | ReturnBare => "return",
            Delete => "delete",
            Try => "try",
            Catch => "catch",
            OneOpen | Lt => "<",
            OneClose | Gt => ">",
            LParen => "(",
            RParen => ")",
            LBracket => "[",
            RBracket => "]",
            LBrace => "{",
            RBrace => "}",
            Comma => ",",
            Semi => ";",
            Colon => ":",
            Question => "?",
            Dot => ".",
            Plus => "+",
            Minus => "-",
            Star => "*",
            Slash => "/",
            Percent => "%",
            Shl => "<<",
            Shr => ">>",
            Le => "<=",
            Ge => ">=",
            EqEq => "==",
            Ne => "!=",
            Match => "=~",
            NotMatch => "!~",
            Amp => "&",
            Pipe => "|",
            Caret => "^",
            Tilde => "~",
            Bang => "!",
            AndAnd => "&&",
            OrOr => "||",
            Assign => "=",
            AddAssign => "+=",
            SubAssign => "-=",
            MulAssign => "*=",
            DivAssign => "/=",
            ModAssign => "%=",
            ShlAssign => "<<=",
            ShrAssign => ">>=",
            AndAssign => "&=",
            OrAssign => "|=",
            XorAssign => "^=",
            CatAssign => ".=",
            Inc => "++",
            Dec => "--",
            Aggregate => "<<<",
            Ident(_) | TargetVar(_) | DollarArg(_) | AtArg(_) | AtName(_) | Members(_)
            | Number(_) | Str(_) => "",
        }
    }
}

/// What went wrong while lexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexErrorKind {
    /// One or more adjacent characters that start no token.
    UnexpectedChars(String),
    UnterminatedString,
    UnterminatedComment,
    BadEscape(String),
    BadNumber(String),
    NumberTooLarge(String),
    BadArgNumber(String),
    /// `$$parms` and the like.
    DollarDollar(String),
    /// `%{ ... %}`: embedded C (SystemTap's guru-mode C code).
    EmbeddedC,
}

/// A lexical error with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub kind: LexErrorKind,
    pub span: Span,
}

/// A token with its byte range.
pub type Spanned = (usize, Tok, usize);

/// Lexes `src`; bad tokens are reported and skipped so parsing can go on.
pub fn lex(src: &str, file: FileId) -> (Vec<Spanned>, Vec<LexError>) {
    let mut toks = Vec::new();
    let mut errs = Vec::new();
    let mut lexer = Raw::lexer(src);
    while let Some(raw) = lexer.next() {
        let range = lexer.span();
        let text = lexer.slice();
        let span = Span::new(file, range.start, range.end);
        let raw = match raw {
            Ok(raw) => raw,
            Err(()) => {
                // Adjacent bad characters make one error.
                if let Some(LexError {
                    kind: LexErrorKind::UnexpectedChars(t),
                    span: prev,
                }) = errs.last_mut()
                {
                    if prev.end == span.start {
                        t.push_str(text);
                        prev.end = span.end;
                        continue;
                    }
                }
                errs.push(LexError {
                    kind: LexErrorKind::UnexpectedChars(text.to_string()),
                    span,
                });
                continue;
            }
        };
        if raw == Raw::EmbeddedC {
            // Skip the C code; a function body `%{ ... %}` becomes `{ }` so
            // that only this error is reported.
            let end = src[range.end..].find("%}").map(|i| range.end + i + 2);
            let stop = end.unwrap_or(src.len());
            errs.push(LexError {
                kind: LexErrorKind::EmbeddedC,
                span: Span::new(file, range.start, range.end),
            });
            if matches!(toks.last(), Some((_, Tok::RParen, _))) {
                toks.push((range.start, Tok::LBrace, range.end));
                toks.push((stop.saturating_sub(2).max(range.end), Tok::RBrace, stop));
            }
            lexer.bump(stop - range.end);
            continue;
        }
        match convert(raw, text) {
            Ok(tok) => toks.push((range.start, tok, range.end)),
            Err(kind) => {
                if matches!(kind, LexErrorKind::DollarDollar(_)) {
                    // A value in its place: this error only.
                    toks.push((range.start, Tok::Number(0), range.end));
                }
                let unterminated_comment = kind == LexErrorKind::UnterminatedComment;
                errs.push(LexError { kind, span });
                if unterminated_comment {
                    break;
                }
            }
        }
    }
    drop_private(&mut toks);
    mark_one_liners(&mut toks);
    mark_bare_returns(&mut toks);
    (toks, errs)
}

fn convert(raw: Raw, text: &str) -> Result<Tok, LexErrorKind> {
    Ok(match raw {
        Raw::UnterminatedComment => return Err(LexErrorKind::UnterminatedComment),
        Raw::EmbeddedC => return Err(LexErrorKind::EmbeddedC),
        Raw::UnterminatedStr => return Err(LexErrorKind::UnterminatedString),
        Raw::Ident => keyword(text).unwrap_or_else(|| Tok::Ident(text.to_string())),
        Raw::TargetVar => Tok::TargetVar(text[1..].to_string()),
        Raw::AtName => Tok::AtName(text[1..].to_string()),
        Raw::Members => Tok::Members(text.to_string()),
        Raw::DollarArg => Tok::DollarArg(arg_number(text)?),
        // Argument 0 is the count (`$0` itself is refused by arg_number).
        Raw::DollarCount => Tok::DollarArg(0),
        Raw::AtCount => Tok::AtArg(0),
        Raw::DollarDollar => return Err(LexErrorKind::DollarDollar(text.to_string())),
        Raw::AtArg => Tok::AtArg(arg_number(text)?),
        Raw::Number => Tok::Number(number(text)?),
        Raw::Str => Tok::Str(unescape(&text[1..text.len() - 1])?),
        Raw::LParen => Tok::LParen,
        Raw::RParen => Tok::RParen,
        Raw::LBracket => Tok::LBracket,
        Raw::RBracket => Tok::RBracket,
        Raw::LBrace => Tok::LBrace,
        Raw::RBrace => Tok::RBrace,
        Raw::Comma => Tok::Comma,
        Raw::Semi => Tok::Semi,
        Raw::Colon => Tok::Colon,
        Raw::Question => Tok::Question,
        Raw::Dot => Tok::Dot,
        Raw::Plus => Tok::Plus,
        Raw::Minus => Tok::Minus,
        Raw::Star => Tok::Star,
        Raw::Slash => Tok::Slash,
        Raw::Percent => Tok::Percent,
        Raw::Shl => Tok::Shl,
        Raw::Shr => Tok::Shr,
        Raw::Lt => Tok::Lt,
        Raw::Gt => Tok::Gt,
        Raw::Le => Tok::Le,
        Raw::Ge => Tok::Ge,
        Raw::EqEq => Tok::EqEq,
        Raw::Ne => Tok::Ne,
        Raw::Match => Tok::Match,
        Raw::NotMatch => Tok::NotMatch,
        Raw::Amp => Tok::Amp,
        Raw::Pipe => Tok::Pipe,
        Raw::Caret => Tok::Caret,
        Raw::Tilde => Tok::Tilde,
        Raw::Bang => Tok::Bang,
        Raw::AndAnd => Tok::AndAnd,
        Raw::OrOr => Tok::OrOr,
        Raw::Assign => Tok::Assign,
        Raw::AddAssign => Tok::AddAssign,
        Raw::SubAssign => Tok::SubAssign,
        Raw::MulAssign => Tok::MulAssign,
        Raw::DivAssign => Tok::DivAssign,
        Raw::ModAssign => Tok::ModAssign,
        Raw::ShlAssign => Tok::ShlAssign,
        Raw::ShrAssign => Tok::ShrAssign,
        Raw::AndAssign => Tok::AndAssign,
        Raw::OrAssign => Tok::OrAssign,
        Raw::XorAssign => Tok::XorAssign,
        Raw::CatAssign => Tok::CatAssign,
        Raw::Inc => Tok::Inc,
        Raw::Dec => Tok::Dec,
        Raw::Aggregate => Tok::Aggregate,
    })
}

fn keyword(text: &str) -> Option<Tok> {
    Some(match text {
        "probe" => Tok::Probe,
        "global" => Tok::Global,
        "function" => Tok::Function,
        "if" => Tok::If,
        "else" => Tok::Else,
        "while" => Tok::While,
        "for" => Tok::For,
        "foreach" => Tok::Foreach,
        "in" => Tok::In,
        "limit" => Tok::Limit,
        "break" => Tok::Break,
        "continue" => Tok::Continue,
        "next" => Tok::Next,
        "return" => Tok::Return,
        "delete" => Tok::Delete,
        "try" => Tok::Try,
        "catch" => Tok::Catch,
        _ => return None,
    })
}

fn arg_number(text: &str) -> Result<u32, LexErrorKind> {
    match text[1..].parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(LexErrorKind::BadArgNumber(text.to_string())),
    }
}

/// Decimal, `0x` hex or `0b` binary. Decimal values above i64::MAX are
/// rejected except 2^63 (so that `-9223372036854775808` works); hex and binary
/// may use all 64 bits (they wrap to negative, as in C).
fn number(text: &str) -> Result<u64, LexErrorKind> {
    let bad = || LexErrorKind::BadNumber(text.to_string());
    let too_large = || LexErrorKind::NumberTooLarge(text.to_string());
    let (digits, radix) = if let Some(h) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = text.strip_prefix("0b").or(text.strip_prefix("0B")) {
        (b, 2)
    } else if text.len() > 1 && text.starts_with('0') {
        // C and SystemTap read a leading 0 as octal: 010 is 8.
        (&text[1..], 8)
    } else {
        (text, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let v = u64::from_str_radix(digits, radix).map_err(|_| too_large())?;
    if radix == 10 && v > 1u64 << 63 {
        return Err(too_large());
    }
    Ok(v)
}

/// C escapes: `\n \t \r \a \b \f \v \\ \" \' \?`, octal `\NNN`, hex `\xHH`.
fn unescape(body: &str) -> Result<String, LexErrorKind> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(LexErrorKind::BadEscape("\\".to_string()));
        };
        let c = match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\\' | '"' | '\'' | '?' => e,
            'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while let Some(d) = chars.peek().and_then(|c| c.to_digit(16)) {
                    if n == 2 {
                        break;
                    }
                    v = v * 16 + d;
                    n += 1;
                    chars.next();
                }
                if n == 0 {
                    return Err(LexErrorKind::BadEscape("\\x".to_string()));
                }
                char::from_u32(v).unwrap_or('?')
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                if v > 0xff {
                    return Err(LexErrorKind::BadEscape(format!("\\{v:o}")));
                }
                char::from_u32(v).unwrap_or('?')
            }
            other => return Err(LexErrorKind::BadEscape(format!("\\{other}"))),
        };
        out.push(c);
    }
    Ok(out)
}

/// SystemTap's `private global x` / `private function f`: a script is one
/// file, so `private` changes nothing and is dropped.
fn drop_private(toks: &mut Vec<Spanned>) {
    let mut i = 0;
    while i + 1 < toks.len() {
        if matches!(&toks[i].1, Tok::Ident(n) if n == "private")
            && matches!(toks[i + 1].1, Tok::Global | Tok::Function)
            && (i == 0 || !matches!(toks[i - 1].1, Tok::Dot))
        {
            toks.remove(i);
        } else {
            i += 1;
        }
    }
}

fn is_top_keyword(t: &Tok) -> bool {
    matches!(t, Tok::Probe | Tok::Global | Tok::Function)
}

/// Finds `probe POINTS <` ... `>` and retags that pair (see the module docs).
fn mark_one_liners(toks: &mut [Spanned]) {
    let mut i = 0;
    while i < toks.len() {
        if toks[i].1 != Tok::Probe {
            i += 1;
            continue;
        }
        // Skip the point list: up to `{` or `<` outside parentheses.
        let mut j = i + 1;
        let mut depth = 0usize;
        while j < toks.len() {
            match toks[j].1 {
                Tok::LParen => depth += 1,
                Tok::RParen => depth = depth.saturating_sub(1),
                Tok::LBrace | Tok::Lt if depth == 0 => break,
                // `process.function("f")`: a point component, not a definition.
                Tok::Function if toks[j - 1].1 == Tok::Dot => {}
                ref t if is_top_keyword(t) => break,
                _ => {}
            }
            j += 1;
        }
        if j < toks.len() && toks[j].1 == Tok::Lt {
            toks[j].1 = Tok::OneOpen;
            let mut k = j + 1;
            while k < toks.len() && !is_top_keyword(&toks[k].1) {
                k += 1;
            }
            if k > j + 1 && toks[k - 1].1 == Tok::Gt {
                toks[k - 1].1 = Tok::OneClose;
            }
            i = k;
        } else {
            i = j.max(i + 1);
        }
    }
}

fn mark_bare_returns(toks: &mut [Spanned]) {
    for i in 0..toks.len() {
        if toks[i].1 == Tok::Return {
            let bare = match toks.get(i + 1) {
                None => true,
                Some((_, t, _)) => {
                    // Tokens that cannot start an expression: a value cannot follow.
                    matches!(
                        t,
                        Tok::Semi
                            | Tok::RBrace
                            | Tok::Else
                            | Tok::OneClose
                            | Tok::If
                            | Tok::While
                            | Tok::For
                            | Tok::Foreach
                            | Tok::Delete
                            | Tok::Try
                            | Tok::Next
                            | Tok::Break
                            | Tok::Continue
                            | Tok::Return
                            | Tok::Probe
                            | Tok::Global
                            | Tok::Function
                    )
                }
            };
            if bare {
                toks[i].1 = Tok::ReturnBare;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        let (t, e) = lex(src, FileId(0));
        assert!(e.is_empty(), "{e:?}");
        t.into_iter().map(|(_, t, _)| t).collect()
    }

    #[test]
    fn one_liner_pair_is_retagged() {
        let t = kinds("probe kretprobe(sys_open) < if ret<0 print(ret) >");
        assert_eq!(t.iter().filter(|t| **t == Tok::OneOpen).count(), 1);
        assert_eq!(t.last(), Some(&Tok::OneClose));
        assert!(t.contains(&Tok::Lt));
    }

    #[test]
    fn one_liner_closes_before_next_probe() {
        let t = kinds("probe begin < x = 1 > probe end { print(x>1) }");
        let close = t.iter().position(|t| *t == Tok::OneClose).unwrap();
        assert_eq!(t[close + 1], Tok::Probe);
        assert!(t.contains(&Tok::Gt));
    }

    #[test]
    fn bare_return() {
        let t = kinds("function f() { return } function g() { return 1 }");
        assert!(t.contains(&Tok::ReturnBare));
        assert!(t.contains(&Tok::Return));
    }

    #[test]
    fn numbers_and_strings() {
        assert_eq!(
            kinds("0x10 0b101 42"),
            vec![Tok::Number(16), Tok::Number(5), Tok::Number(42)]
        );
        assert_eq!(kinds(r#""a\n\x41\101""#), vec![Tok::Str("a\nAA".into())]);
        assert_eq!(
            kinds("010 0 0777"),
            vec![Tok::Number(8), Tok::Number(0), Tok::Number(511)]
        );
        assert_eq!(lex("08", FileId(0)).1.len(), 1);
        let (_, e) = lex("99999999999999999999 \"abc", FileId(0));
        assert_eq!(e.len(), 2);
    }
}
