//! printf formats, parsed and checked at compile time.
//!
//! Conversions: `%d %i %u %x %X %o %c %p` (long), `%s` (string), `%%`;
//! SystemTap's `%b` (the value's bytes: 8, or the width 1, 2 or 4) and
//! `%m` / `%M` (the precision's number of bytes of target memory at the
//! address given, default 1, written raw / in hex).
//! Flags `-`, `0`, `#`, `+`, space; a width (`*`: from a long argument); a
//! precision `.N` (`.*` likewise); length modifiers `l`, `ll`, `h`, `hh` are
//! accepted and ignored (all integers are 64-bit).
//!
//! Both `printf` (formatted by ptap) and `sprintf` (formatted in the
//! handler) format with the runtime's `ptap_rt_core::fmt::format`, given
//! [`Format::to_source`].

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// `%d`, `%i`
    Signed,
    /// `%u`
    Unsigned,
    /// `%x` (`upper == false`) / `%X`
    Hex { upper: bool },
    /// `%o`
    Octal,
    /// `%c`
    Char,
    /// `%p`
    Pointer,
    /// `%s`
    Str,
    /// `%b`: the value's bytes (little endian), as many as the width.
    Binary,
    /// `%m` (raw bytes) / `%M` (hex): memory at the address given; the
    /// handler reads it and passes it on as hex text.
    Mem { hex: bool },
}

/// How many bytes a `%m` / `%M` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemLen {
    Const(u32),
    /// `%.*m`: the value of this argument.
    Arg(usize),
}

impl Conv {
    /// Whether the argument is a string (else a long).
    pub fn wants_string(self) -> bool {
        self == Conv::Str
    }

    pub fn letter(self) -> char {
        match self {
            Conv::Signed => 'd',
            Conv::Unsigned => 'u',
            Conv::Hex { upper: false } => 'x',
            Conv::Hex { upper: true } => 'X',
            Conv::Octal => 'o',
            Conv::Char => 'c',
            Conv::Pointer => 'p',
            Conv::Str => 's',
            Conv::Binary => 'b',
            Conv::Mem { hex: false } => 'm',
            Conv::Mem { hex: true } => 'M',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// `-`: left-justify.
    pub left: bool,
    /// `0`: pad with zeros.
    pub zero: bool,
    /// `#`: alternate form (0x prefix, leading 0).
    pub alt: bool,
    /// `+`: a sign on positive numbers too.
    pub plus: bool,
    /// ` `: a blank before positive numbers.
    pub space: bool,
    /// `*` width: taken from the argument before the value.
    pub star_width: bool,
    /// `.*` precision: taken from the argument before the value.
    pub star_prec: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub flags: Flags,
    pub width: Option<u32>,
    pub precision: Option<u32>,
    pub conv: Conv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (`%%` already turned into `%`).
    Text(String),
    Spec(Spec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pieces: Vec<Piece>,
}

impl Format {
    pub fn specs(&self) -> impl Iterator<Item = &Spec> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Spec(s) => Some(s),
            Piece::Text(_) => None,
        })
    }

    /// The kind of every argument the format consumes, in order: `true` for
    /// a string (`%s`), `false` for a long (other conversions, `*`).
    pub fn arg_kinds(&self) -> Vec<bool> {
        let mut v = Vec::new();
        for s in self.specs() {
            if s.flags.star_width {
                v.push(false);
            }
            if s.flags.star_prec {
                v.push(false);
            }
            v.push(s.conv.wants_string());
        }
        v
    }

    /// The kind of every value in an output record of this format: as
    /// [`Format::arg_kinds`], except that a `%m` / `%M` address travels as
    /// the memory's hex text.
    pub fn record_kinds(&self) -> Vec<bool> {
        let mut v = Vec::new();
        for s in self.specs() {
            if s.flags.star_width {
                v.push(false);
            }
            if s.flags.star_prec {
                v.push(false);
            }
            v.push(s.conv.wants_string() || matches!(s.conv, Conv::Mem { .. }));
        }
        v
    }

    /// Every `%m` / `%M`: the index of its address argument and how many
    /// bytes it reads.
    pub fn mem_args(&self) -> Vec<(usize, MemLen)> {
        let mut v = Vec::new();
        let mut i = 0;
        for s in self.specs() {
            i += usize::from(s.flags.star_width);
            let len = if s.flags.star_prec {
                i += 1;
                MemLen::Arg(i - 1)
            } else {
                MemLen::Const(s.precision.unwrap_or(1))
            };
            if matches!(s.conv, Conv::Mem { .. }) {
                v.push((i, len));
            }
            i += 1;
        }
        v
    }

    /// The format written back in printf syntax (for -p2).
    pub fn to_source(&self) -> String {
        self.write(false)
    }

    /// The format as the runtime's formatter reads it: 64-bit length
    /// modifiers on numeric conversions, `%p` as ptap's `%P`.
    pub fn to_runtime(&self) -> String {
        self.write(true)
    }

    fn write(&self, runtime: bool) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(&t.replace('%', "%%")),
                Piece::Spec(s) => {
                    out.push('%');
                    if s.flags.left {
                        out.push('-');
                    }
                    if s.flags.zero {
                        out.push('0');
                    }
                    if s.flags.alt {
                        out.push('#');
                    }
                    if s.flags.plus {
                        out.push('+');
                    }
                    if s.flags.space {
                        out.push(' ');
                    }
                    if s.flags.star_width {
                        out.push('*');
                    } else if let Some(w) = s.width {
                        out.push_str(&w.to_string());
                    }
                    if s.flags.star_prec {
                        out.push_str(".*");
                    } else if let Some(p) = s.precision {
                        out.push_str(&format!(".{p}"));
                    }
                    match s.conv {
                        Conv::Pointer if runtime => out.push('P'),
                        // The runtime's own letters for SystemTap's `%b %m %M`
                        // (the formatter also serves C's printk, where `%m`
                        // takes no argument).
                        Conv::Binary if runtime => out.push('V'),
                        Conv::Mem { hex: false } if runtime => out.push('R'),
                        Conv::Mem { hex: true } if runtime => out.push('H'),
                        Conv::Str | Conv::Char | Conv::Binary | Conv::Mem { .. } => {
                            out.push(s.conv.letter())
                        }
                        c => {
                            if runtime {
                                out.push('l');
                            }
                            out.push(c.letter());
                        }
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// `%` at the end of the format.
    #[error("the format ends in the middle of a `%` conversion")]
    Incomplete,
    /// `%q`
    #[error("`%{0}` is not a known conversion")]
    UnknownConversion(char),
    /// `#` with a conversion where it means nothing.
    #[error("the `#` flag has no meaning with `%{0}`")]
    AltFlag(char),
    #[error("width or precision is too large (at most 1024)")]
    WidthTooLarge,
    /// `%b` with a width other than 1, 2, 4, 8, or a precision.
    #[error("`%b` takes a width of 1, 2, 4 or 8 (bytes; default 8) and no precision")]
    BinaryWidth,
}

/// Parses a format string.
pub fn parse(fmt: &str) -> Result<Format, FormatError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let mut flags = Flags::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => flags.left = true,
                '0' => flags.zero = true,
                '#' => flags.alt = true,
                '+' => flags.plus = true,
                ' ' => flags.space = true,
                _ => break,
            }
            chars.next();
        }
        let width = if chars.peek() == Some(&'*') {
            chars.next();
            flags.star_width = true;
            None
        } else {
            number(&mut chars)?
        };
        let precision = if chars.peek() == Some(&'.') {
            chars.next();
            if chars.peek() == Some(&'*') {
                chars.next();
                flags.star_prec = true;
                None
            } else {
                Some(number(&mut chars)?.unwrap_or(0))
            }
        } else {
            None
        };
        while matches!(chars.peek(), Some('l' | 'h')) {
            chars.next();
        }
        let letter = chars.next().ok_or(FormatError::Incomplete)?;
        let conv = match letter {
            'd' | 'i' => Conv::Signed,
            'u' => Conv::Unsigned,
            'x' => Conv::Hex { upper: false },
            'X' => Conv::Hex { upper: true },
            'o' => Conv::Octal,
            'c' => Conv::Char,
            'p' => Conv::Pointer,
            's' => Conv::Str,
            'b' => Conv::Binary,
            'm' => Conv::Mem { hex: false },
            'M' => Conv::Mem { hex: true },
            other => return Err(FormatError::UnknownConversion(other)),
        };
        if conv == Conv::Binary
            && (flags.star_width
                || flags.star_prec
                || precision.is_some()
                || !matches!(width, None | Some(1 | 2 | 4 | 8)))
        {
            return Err(FormatError::BinaryWidth);
        }
        if flags.alt && !matches!(conv, Conv::Hex { .. } | Conv::Octal) {
            return Err(FormatError::AltFlag(letter));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Spec(Spec {
            flags,
            width,
            precision,
            conv,
        }));
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Format { pieces })
}

fn number(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Option<u32>, FormatError> {
    let mut v: Option<u32> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        let n = v.unwrap_or(0) * 10 + d;
        if n > 1024 {
            return Err(FormatError::WidthTooLarge);
        }
        v = Some(n);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let f = parse("%s: %-8d %#x 100%% %05.2lu").unwrap();
        let convs: Vec<char> = f.specs().map(|s| s.conv.letter()).collect();
        assert_eq!(convs, vec!['s', 'd', 'x', 'u']);
        assert_eq!(f.to_source(), "%s: %-8d %#x 100%% %05.2u");
    }

    #[test]
    fn rejects_bad_formats() {
        assert_eq!(parse("%q"), Err(FormatError::UnknownConversion('q')));
        assert_eq!(parse("abc %"), Err(FormatError::Incomplete));
        assert_eq!(parse("%#d"), Err(FormatError::AltFlag('d')));
        assert!(parse("%*d").is_ok());
    }

    #[test]
    fn stars_and_sign_flags() {
        let f = parse("%+d % d %-*s %.*x %p").unwrap();
        assert_eq!(
            f.arg_kinds(),
            vec![false, false, false, true, false, false, false]
        );
        assert_eq!(f.to_source(), "%+d % d %-*s %.*x %p");
        assert_eq!(f.to_runtime(), "%+ld % ld %-*s %.*lx %P");
    }

    #[test]
    fn binary_and_memory() {
        let f = parse("%b %4b %.4m %-8.*M %m").unwrap();
        assert_eq!(f.to_source(), "%b %4b %.4m %-8.*M %m");
        assert_eq!(f.to_runtime(), "%V %4V %.4R %-8.*H %R");
        assert_eq!(f.arg_kinds(), vec![false; 6]);
        assert_eq!(
            f.record_kinds(),
            vec![false, false, true, false, true, true]
        );
        assert_eq!(
            f.mem_args(),
            vec![
                (2, MemLen::Const(4)),
                (4, MemLen::Arg(3)),
                (5, MemLen::Const(1))
            ]
        );
        assert_eq!(parse("%3b"), Err(FormatError::BinaryWidth));
        assert_eq!(parse("%.2b"), Err(FormatError::BinaryWidth));
        assert_eq!(parse("%*b"), Err(FormatError::BinaryWidth));
    }
}
