//! ptap-side formatting of the records compiled handlers write: REC_FORMAT
//! payloads (format id + values) become text with the script's parsed
//! formats; runtime-error records become `ERROR: ...` lines.

use ptap_lang::printf::{Conv, Format, Piece, Spec};
use ptap_rt::script::ctx;
use ptap_rt::script::meta::Meta;
pub use ptap_rt::script::record::Value;
use ptap_rt::script::record::{self, FMT_ERROR, FMT_WARN};

/// printf-style formatting of `args` with `f` (a pure function). Missing
/// arguments format as 0 / ""; a long given to `%s` prints as a number and a
/// string given to a numeric conversion as 0 (the checker prevents both).
pub fn format_record(f: &Format, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    for p in &f.pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Spec(s) => format_one(&mut out, s, it.next()),
        }
    }
    out
}

fn format_one(out: &mut String, s: &Spec, v: Option<&Value>) {
    let long = match v {
        Some(Value::Long(v)) => *v,
        _ => 0,
    };
    let mut sign = String::new();
    let mut prefix = "";
    let mut digits;
    let zero_ok = !s.flags.left && s.precision.is_none();
    match s.conv {
        Conv::Str => {
            let text = match v {
                Some(Value::Str(t)) => t.clone(),
                Some(Value::Long(n)) => n.to_string(),
                None => String::new(),
            };
            let text: String = match s.precision {
                Some(p) => text.chars().take(p as usize).collect(),
                None => text,
            };
            return pad(out, s, "", &text, false);
        }
        Conv::Char => {
            let c = char::from(long as u8);
            return pad(out, s, "", &c.to_string(), false);
        }
        Conv::Signed => {
            if long < 0 {
                sign.push('-');
            }
            digits = long.unsigned_abs().to_string();
        }
        Conv::Unsigned => digits = (long as u64).to_string(),
        Conv::Hex { upper } => {
            digits = if upper {
                format!("{:X}", long as u64)
            } else {
                format!("{:x}", long as u64)
            };
            if s.flags.alt && long != 0 {
                prefix = if upper { "0X" } else { "0x" };
            }
        }
        Conv::Octal => {
            digits = format!("{:o}", long as u64);
            if s.flags.alt && !digits.starts_with('0') {
                prefix = "0";
            }
        }
        Conv::Pointer => {
            digits = format!("{:x}", long as u64);
            prefix = "0x";
        }
    }
    if let Some(p) = s.precision {
        while digits.len() < p as usize {
            digits.insert(0, '0');
        }
    }
    sign.push_str(prefix);
    pad(out, s, &sign, &digits, zero_ok && s.flags.zero)
}

/// Pad `head` + `body` to the spec's width: left-justified, zero-filled
/// between head and body, or right-justified with spaces.
fn pad(out: &mut String, s: &Spec, head: &str, body: &str, zeros: bool) {
    let len = head.chars().count() + body.chars().count();
    let fill = (s.width.unwrap_or(0) as usize).saturating_sub(len);
    if s.flags.left {
        out.push_str(head);
        out.push_str(body);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if zeros {
        out.push_str(head);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(body);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(head);
        out.push_str(body);
    }
}

pub use ctx::error_text;

/// The formats of a module's metadata, parsed (for a module loaded from a
/// file: `ptap run NAME.o`).
pub fn formats_of(meta: &Meta) -> Result<Vec<Format>, String> {
    meta.formats
        .iter()
        .map(|f| {
            ptap_lang::printf::parse(f).map_err(|e| format!("bad format `{f}` in the module: {e}"))
        })
        .collect()
}

/// A decoded record, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Script output (stdout or -o FILE).
    Out(String),
    /// A runtime error (stderr; counts towards MAXERRORS).
    Error(String),
    /// A warning (stderr).
    Warning(String),
}

/// Render one REC_FORMAT payload of the module described by `meta` / `formats`.
pub fn render_record(meta: &Meta, formats: &[Format], payload: &[u8]) -> Rendered {
    let Some((id, vals)) = record::decode(payload) else {
        return Rendered::Warning("WARNING: malformed output record dropped\n".into());
    };
    let long = |i: usize| match vals.get(i) {
        Some(Value::Long(v)) => *v,
        _ => 0,
    };
    let text = |i: usize| match vals.get(i) {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    match id {
        FMT_ERROR => Rendered::Error(error_line(
            meta,
            long(0) as u32,
            long(1) as u32,
            long(2),
            long(3),
            long(4),
            &text(5),
        )),
        FMT_WARN => Rendered::Warning(format!("WARNING: {}\n", text(0))),
        _ => match formats.get(id as usize) {
            Some(f) => Rendered::Out(format_record(f, &vals)),
            None => Rendered::Warning(format!(
                "WARNING: output record with unknown format {id} dropped\n"
            )),
        },
    }
}

/// `ERROR: <what> near <token> at file:line:col in probe <point>`.
pub fn error_line(
    meta: &Meta,
    code: u32,
    loc: u32,
    probe: i64,
    point: i64,
    arg: i64,
    msg: &str,
) -> String {
    let what = match code {
        ctx::ERR_USER => msg.to_string(),
        ctx::ERR_FAULT => format!("user memory read fault at 0x{:x}", arg as u64),
        ctx::ERR_OVERFLOW => format!("Array overflow, check size limit ({arg})"),
        c => error_text(c).to_string(),
    };
    let mut line = format!("ERROR: {what}");
    if let Some(l) = meta.locations.get(loc as usize) {
        line.push_str(&format!(
            " near `{}` at {}:{}:{}",
            l.token, l.file, l.line, l.col
        ));
    }
    let pt = usize::try_from(probe)
        .ok()
        .and_then(|p| meta.probes.get(p))
        .and_then(|p| p.points.get(usize::try_from(point).ok()?));
    if let Some(pt) = pt {
        line.push_str(&format!(" in probe {}", pt.text));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptap_lang::printf::parse;

    fn f(fmt: &str, args: &[Value]) -> String {
        format_record(&parse(fmt).unwrap(), args)
    }

    #[test]
    fn conversions() {
        use Value::{Long as L, Str as S};
        assert_eq!(
            f("%d|%5d|%-5d|%05d", &[L(-42), L(7), L(7), L(-7)]),
            "-42|    7|7    |-0007"
        );
        assert_eq!(
            f(
                "%u %x %X %#x %o %#o",
                &[L(-1), L(255), L(255), L(255), L(8), L(8)]
            ),
            "18446744073709551615 ff FF 0xff 10 010"
        );
        assert_eq!(
            f(
                "%s|%8s|%-4s|%.2s",
                &[
                    S("ab".into()),
                    S("cd".into()),
                    S("e".into()),
                    S("xyz".into())
                ]
            ),
            "ab|      cd|e   |xy"
        );
        assert_eq!(
            f("%c%c %p 100%%", &[L(72), L(105), L(0x1000)]),
            "Hi 0x1000 100%"
        );
        assert_eq!(f("%.3d", &[L(5)]), "005");
        assert_eq!(f("%d %s", &[]), "0 ");
    }
}
