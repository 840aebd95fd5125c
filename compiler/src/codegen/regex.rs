//! `=~` patterns (POSIX extended syntax) compiled at compile time into the
//! small NFA program `ptap_rt_core::script::regex` runs in the handler:
//! literals, `.`, bracket expressions (ranges, `^` negation, `[:alpha:]`
//! style classes), `^`, `$`, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, `|` and
//! groups. Hand-written: the program format is the runtime's own (see
//! there why no regex crate runs in the target).

use ptap_rt_core::script::regex::{
    MAX_GROUPS, MAX_INSTR, OP_ANY, OP_BOL, OP_CHAR, OP_CLASS, OP_EOL, OP_JMP, OP_MATCH, OP_SAVE,
    OP_SPLIT,
};

#[derive(Debug, Clone)]
enum Node {
    Char(u8),
    Any,
    Class([u8; 32]),
    Bol,
    Eol,
    Cat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat(Box<Node>, u32, Option<u32>),
    /// A parenthesized subexpression: its number when it captures (1..=MAX_GROUPS).
    Group(Box<Node>, Option<u32>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Parenthesized subexpressions seen so far.
    groups: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn alt(&mut self) -> Result<Node, RegexError> {
        let mut alts = vec![self.cat()?];
        while self.peek() == Some(b'|') {
            self.i += 1;
            alts.push(self.cat()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Cat(Vec::new()))
        } else {
            Node::Alt(alts)
        })
    }

    fn cat(&mut self) -> Result<Node, RegexError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.repeats(atom)?);
        }
        Ok(Node::Cat(items))
    }

    fn repeats(&mut self, mut atom: Node) -> Result<Node, RegexError> {
        loop {
            let (lo, hi) = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => {
                    self.i += 1;
                    let lo = self.number()?;
                    let hi = if self.peek() == Some(b',') {
                        self.i += 1;
                        if self.peek() == Some(b'}') {
                            None
                        } else {
                            Some(self.number()?)
                        }
                    } else {
                        Some(lo)
                    };
                    if self.peek() != Some(b'}') {
                        return Err(RegexError::Unclosed("{", "}"));
                    }
                    if hi.is_some_and(|h| h < lo) || lo > 100 || hi.is_some_and(|h| h > 100) {
                        return Err(RegexError::Bounds);
                    }
                    (lo, hi)
                }
                _ => return Ok(atom),
            };
            self.i += 1;
            atom = Node::Repeat(Box::new(atom), lo, hi);
        }
    }

    fn number(&mut self) -> Result<u32, RegexError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(RegexError::NumberExpected)
    }

    fn atom(&mut self) -> Result<Node, RegexError> {
        let Some(c) = self.peek() else {
            return Err(RegexError::UnexpectedEnd);
        };
        self.i += 1;
        Ok(match c {
            b'.' => Node::Any,
            b'^' => Node::Bol,
            b'$' => Node::Eol,
            b'(' => {
                self.groups += 1;
                let k = self.groups;
                let inner = self.alt()?;
                if self.peek() != Some(b')') {
                    return Err(RegexError::Unclosed("(", ")"));
                }
                self.i += 1;
                let k = (k as usize <= MAX_GROUPS).then_some(k);
                Node::Group(Box::new(inner), k)
            }
            b'[' => Node::Class(self.class()?),
            b'*' | b'+' | b'?' | b'{' => return Err(RegexError::NothingToRepeat(c as char)),
            b'\\' => {
                let Some(e) = self.peek() else {
                    return Err(RegexError::TrailingBackslash);
                };
                self.i += 1;
                Node::Char(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    other => other,
                })
            }
            other => Node::Char(other),
        })
    }

    fn class(&mut self) -> Result<[u8; 32], RegexError> {
        let mut set = [0u8; 32];
        let mut add = |c: u8| set[c as usize >> 3] |= 1 << (c & 7);
        let negate = self.peek() == Some(b'^');
        if negate {
            self.i += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(RegexError::Unclosed("[", "]"));
            };
            if c == b']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            if c == b'[' && self.s.get(self.i + 1) == Some(&b':') {
                let end = self.s[self.i..]
                    .windows(2)
                    .position(|w| w == b":]")
                    .ok_or(RegexError::UnterminatedClass)?;
                let name = std::str::from_utf8(&self.s[self.i + 2..self.i + end]).unwrap_or("");
                let f: fn(u8) -> bool = match name {
                    "alpha" => |c| c.is_ascii_alphabetic(),
                    "digit" => |c| c.is_ascii_digit(),
                    "alnum" => |c| c.is_ascii_alphanumeric(),
                    "space" => |c| c.is_ascii_whitespace() || c == 0x0b,
                    "upper" => |c| c.is_ascii_uppercase(),
                    "lower" => |c| c.is_ascii_lowercase(),
                    "punct" => |c| c.is_ascii_punctuation(),
                    "xdigit" => |c| c.is_ascii_hexdigit(),
                    _ => return Err(RegexError::UnknownClass(name.to_string())),
                };
                (0..=255u8).filter(|&c| f(c)).for_each(&mut add);
                self.i += end + 2;
                continue;
            }
            self.i += 1;
            if self.peek() == Some(b'-') && self.s.get(self.i + 1).is_some_and(|&n| n != b']') {
                let hi = self.s[self.i + 1];
                if hi < c {
                    return Err(RegexError::BackwardRange);
                }
                (c..=hi).for_each(&mut add);
                self.i += 2;
            } else {
                add(c);
            }
        }
        if negate {
            set.iter_mut().for_each(|b| *b = !*b);
        }
        Ok(set)
    }
}

struct Emit {
    code: Vec<u32>,
    classes: Vec<[u8; 32]>,
}

impl Emit {
    fn op(&mut self, op: u32, arg: usize) -> usize {
        self.code.push(op << 24 | arg as u32);
        self.code.len() - 1
    }

    /// SPLIT to `a` first, then `b` (patched later when `b` is unknown).
    fn split(&mut self, a: usize, b: usize) -> usize {
        let at = self.op(OP_SPLIT, a);
        self.code.push(b as u32);
        at
    }

    fn patch_arg(&mut self, at: usize, target: usize) {
        self.code[at] = (self.code[at] & 0xff00_0000) | target as u32;
    }

    fn node(&mut self, n: &Node) -> Result<(), RegexError> {
        if self.code.len() > MAX_INSTR {
            return Err(RegexError::TooLarge);
        }
        match n {
            Node::Char(c) => _ = self.op(OP_CHAR, *c as usize),
            Node::Any => _ = self.op(OP_ANY, 0),
            Node::Bol => _ = self.op(OP_BOL, 0),
            Node::Eol => _ = self.op(OP_EOL, 0),
            Node::Class(set) => {
                let k = self.classes.len();
                self.classes.push(*set);
                self.op(OP_CLASS, k);
            }
            Node::Cat(items) => items.iter().try_for_each(|i| self.node(i))?,
            Node::Group(inner, None) => self.node(inner)?,
            Node::Group(inner, Some(k)) => {
                self.op(OP_SAVE, 2 * *k as usize);
                self.node(inner)?;
                self.op(OP_SAVE, 2 * *k as usize + 1);
            }
            Node::Alt(alts) => {
                // split L1, next; L1: a; jmp end; next: split L2, ... last alternative.
                let mut jumps = Vec::new();
                for (k, a) in alts.iter().enumerate() {
                    if k + 1 < alts.len() {
                        let s = self.split(0, 0);
                        self.patch_arg(s, s + 2);
                        self.node(a)?;
                        jumps.push(self.op(OP_JMP, 0));
                        let here = self.code.len();
                        self.code[s + 1] = here as u32;
                    } else {
                        self.node(a)?;
                    }
                }
                let end = self.code.len();
                jumps.into_iter().for_each(|j| self.patch_arg(j, end));
            }
            Node::Repeat(inner, lo, hi) => {
                for _ in 0..*lo {
                    self.node(inner)?;
                }
                match hi {
                    None => {
                        // L: split body, end; body; jmp L
                        let l = self.split(0, 0);
                        self.patch_arg(l, l + 2);
                        self.node(inner)?;
                        self.op(OP_JMP, l);
                        let end = self.code.len();
                        self.code[l + 1] = end as u32;
                    }
                    Some(h) => {
                        // Up to h - lo optional copies.
                        let mut outs = Vec::new();
                        for _ in *lo..*h {
                            let s = self.split(0, 0);
                            self.patch_arg(s, s + 2);
                            outs.push(s + 1);
                            self.node(inner)?;
                        }
                        let end = self.code.len();
                        outs.into_iter().for_each(|o| self.code[o] = end as u32);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a pattern cannot be compiled (shown after "the regular expression
/// `P`: ").
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegexError {
    #[error("`{0}` without a closing `{1}`")]
    Unclosed(&'static str, &'static str),
    #[error("bad repetition bounds (0..100)")]
    Bounds,
    #[error("a number is expected in `{{}}`")]
    NumberExpected,
    #[error("unexpected end")]
    UnexpectedEnd,
    #[error("`{0}` has nothing to repeat")]
    NothingToRepeat(char),
    #[error("`\\` at the end")]
    TrailingBackslash,
    #[error("unterminated `[:class:]`")]
    UnterminatedClass,
    #[error("unknown class `[:{0}:]`")]
    UnknownClass(String),
    #[error("a range whose end is before its start")]
    BackwardRange,
    #[error("unbalanced `)`")]
    Unbalanced,
    #[error("the pattern is too large (more than {MAX_INSTR} instructions)")]
    TooLarge,
}

/// Compile `pattern` into the runtime's program bytes.
pub(crate) fn compile(pattern: &str) -> Result<Vec<u8>, RegexError> {
    let mut p = Parser {
        s: pattern.as_bytes(),
        i: 0,
        groups: 0,
    };
    let tree = p.alt()?;
    if p.i != p.s.len() {
        return Err(RegexError::Unbalanced);
    }
    let mut e = Emit {
        code: Vec::new(),
        classes: Vec::new(),
    };
    // Slots 0 and 1: the whole match.
    e.op(OP_SAVE, 0);
    e.node(&tree)?;
    e.op(OP_SAVE, 1);
    e.op(OP_MATCH, 0);
    if e.code.len() > MAX_INSTR {
        return Err(RegexError::TooLarge);
    }
    let mut out = Vec::new();
    out.extend((e.code.len() as u32).to_le_bytes());
    out.extend((e.classes.len() as u32).to_le_bytes());
    out.extend(p.groups.min(MAX_GROUPS as u32).to_le_bytes());
    e.code.iter().for_each(|w| out.extend(w.to_le_bytes()));
    e.classes.iter().for_each(|c| out.extend(c));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::compile;
    use ptap_rt_core::script::regex::{captures, groups, is_match, UNSET};

    fn m(p: &str, s: &str) -> bool {
        is_match(&compile(p).unwrap(), s.as_bytes())
    }

    #[test]
    fn matching() {
        assert!(m("^ba(sh|r)$", "bash") && m("^ba(sh|r)$", "bar") && !m("^ba(sh|r)$", "bash2"));
        assert!(m("x", "abxc") && !m("x", "abc"));
        assert!(m("a.c", "zzabcz") && !m("a.c", "ac"));
        assert!(m("^[0-9]+$", "12345") && !m("^[0-9]+$", "12a45") && !m("^[0-9]+$", ""));
        assert!(m("^[^a-z]*$", "ABC1") && !m("^[^a-z]*$", "ABc"));
        assert!(m("colou?r", "color") && m("colou?r", "colour") && !m("colou?r", "colouur"));
        assert!(
            m("^a{2,3}$", "aa")
                && m("^a{2,3}$", "aaa")
                && !m("^a{2,3}$", "aaaa")
                && !m("^a{2,3}$", "a")
        );
        assert!(m("^(ab)*$", "") && m("^(ab)*$", "abab") && !m("^(ab)*$", "aba"));
        assert!(m("[[:digit:]][[:alpha:]]", "x1y") && !m("[[:digit:]][[:alpha:]]", "xy1"));
        assert!(m("", "anything") && m("$", "") && m("^$", ""));
        assert!(m("a\\.b", "a.b") && !m("a\\.b", "axb"));
        assert!(m("(a|b|c)+d", "zzbcad") && !m("(a|b|c)+d", "zzd"));
        assert!(m("^/nonexistent/", "/nonexistent/a"));
    }

    /// The captured texts of `p` in `s` (None: no match), "-" for unset groups.
    fn caps(p: &str, s: &str) -> Option<Vec<String>> {
        let prog = compile(p).unwrap();
        let c = captures(&prog, s.as_bytes())?;
        Some(
            (0..=groups(&prog))
                .map(|k| match (c[2 * k], c[2 * k + 1]) {
                    (a, b) if a == UNSET || b == UNSET => "-".to_string(),
                    (a, b) => s[a as usize..b as usize].to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn captures_follow_leftmost_greedy_rules() {
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            caps("([a-z]+)([0-9]+)", "abc123def"),
            v(&["abc123", "abc", "123"])
        );
        assert_eq!(caps("b(x)?c", "abcd"), v(&["bc", "-"]));
        assert_eq!(caps("(a|ab)(c|bcd)", "abcd"), v(&["abcd", "a", "bcd"]));
        assert_eq!(caps("(a)*", "aaa"), v(&["aaa", "a"]));
        assert_eq!(caps("x*", "abc"), v(&[""]));
        assert_eq!(caps("c$", "abc"), v(&["c"]));
        assert_eq!(caps("^(b)", "abc"), None);
        assert_eq!(caps("[0-9]+", "ab12c345"), v(&["12"]));
        assert_eq!(caps("((a)(b))", "zab"), v(&["ab", "ab", "a", "b"]));
        // Captures agree with is_match on the matching tests' cases.
        for (p, s) in [("a.c", "ac"), ("^ba(sh|r)$", "bar"), ("", "")] {
            assert_eq!(caps(p, s).is_some(), m(p, s), "{p} {s}");
        }
        // Beyond MAX_GROUPS groups still group but do not capture.
        let many = "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)";
        assert_eq!(groups(&compile(many).unwrap()), 9);
        assert_eq!(caps(many, "abcdefghij").unwrap()[9], "i");
    }

    #[test]
    fn bad_patterns() {
        for p in ["(", "a)", "[a", "*a", "a{3,1}", "[[:nope:]]", "\\"] {
            assert!(compile(p).is_err(), "{p}");
        }
        // What the user reads after "the regular expression `P`: ".
        let why = |p| compile(p).unwrap_err().to_string();
        assert_eq!(why("("), "`(` without a closing `)`");
        assert_eq!(why("a)"), "unbalanced `)`");
        assert_eq!(why("*a"), "`*` has nothing to repeat");
        assert_eq!(why("[[:nope:]]"), "unknown class `[:nope:]`");
        assert_eq!(why("a{x}"), "a number is expected in `{}`");
        assert_eq!(why("\\"), "`\\` at the end");
    }
}
