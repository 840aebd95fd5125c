//! ptap-side formatting of the records compiled handlers write: REC_FORMAT
//! payloads (format id + values) become text with the script's parsed
//! formats; runtime-error records become `ERROR: ...` lines.

use ptap_lang::printf::Format;
use ptap_rt_core::script::ctx;
use ptap_rt_core::script::meta::Meta;
pub use ptap_rt_core::script::record::Value;
use ptap_rt_core::script::record::{self, FMT_ERROR, FMT_HIST, FMT_WARN};

/// printf-style formatting of `args` with `f` (a pure function), by the
/// same formatter `sprintf` uses in the handlers (`ptap_rt_core::fmt::format`),
/// so that printf and sprintf cannot differ. Missing arguments format as
/// 0 / ""; a long given to `%s` prints as a number and a string given to a
/// numeric conversion as 0 (the checker prevents both).
pub fn format_record(f: &Format, args: &[Value]) -> String {
    String::from_utf8_lossy(&format_record_bytes(f, args)).into_owned()
}

/// [`format_record`]'s bytes as the formatter wrote them (`%b`, `%m` and
/// strings from the target need not be UTF-8).
pub fn format_record_bytes(f: &Format, args: &[Value]) -> Vec<u8> {
    let kinds = f.record_kinds();
    // Strings live here, NUL-terminated, while the formatter reads them.
    let mut strings: Vec<std::ffi::CString> = Vec::new();
    let mut cap = 64;
    for (i, want_string) in kinds.iter().enumerate() {
        let text = match (args.get(i), want_string) {
            (Some(Value::Str(t)), true) => t.clone(),
            (Some(Value::Long(n)), true) => n.to_string(),
            (_, true) => String::new(),
            _ => continue,
        };
        cap += text.len();
        let bytes: Vec<u8> = text.into_bytes().into_iter().filter(|&b| b != 0).collect();
        strings.push(std::ffi::CString::new(bytes).unwrap_or_default());
    }
    let mut words: Vec<u64> = Vec::with_capacity(kinds.len());
    let mut next_string = strings.iter();
    for (i, want_string) in kinds.iter().enumerate() {
        if *want_string {
            words.push(next_string.next().map_or(0, |c| c.as_ptr() as u64));
        } else {
            words.push(match args.get(i) {
                Some(Value::Long(n)) => *n as u64,
                _ => 0,
            });
        }
    }
    let source = std::ffi::CString::new(f.to_runtime()).unwrap_or_default();
    cap += source.as_bytes().len();
    // Each conversion pads to at most 512 (width) or 4096 (precision) bytes.
    cap += kinds.len().max(1) * (4096 + 64);
    let mut data = vec![0u8; cap];
    let mut buf = ptap_rt_core::fmt::Buf {
        data: &mut data,
        len: 0,
    };
    static NO_MORE: [u64; 64] = [0; 64];
    // SAFETY: `words` holds one word per argument the format reads (stars
    // included), string words point to live NUL-terminated CStrings, and
    // any read beyond them (impossible for a checked format) gets zeros.
    unsafe {
        let mut rd =
            ptap_rt_core::fmt::ArgReader::new(words.as_ptr(), words.len(), NO_MORE.as_ptr());
        ptap_rt_core::fmt::format(&mut buf, source.as_ptr() as *const u8, &mut rd);
    }
    let len = buf.len;
    data.truncate(len);
    data
}

pub use ctx::error_text;

/// A format string in a module's metadata that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad format `{format}` in the module: {error}")]
pub struct BadFormat {
    pub format: String,
    pub error: ptap_lang::printf::FormatError,
}

/// The formats of a module's metadata, parsed (for a module loaded from a
/// file: `ptap run NAME.o`).
pub fn formats_of(meta: &Meta) -> Result<Vec<Format>, BadFormat> {
    meta.formats
        .iter()
        .map(|f| {
            ptap_lang::printf::parse(f).map_err(|error| BadFormat {
                format: f.clone(),
                error,
            })
        })
        .collect()
}

/// A decoded record, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Script output (stdout or -o FILE).
    Out(String),
    /// Script output that is not UTF-8 (`%b`, `%m`): written as it is;
    /// where only text can go (JSON, the REPL) it is converted lossily.
    Raw(Vec<u8>),
    /// A runtime error (stderr; counts towards MAXERRORS).
    Error(String),
    /// A warning (stderr).
    Warning(String),
}

/// Records this process could not decode (any process of a session can
/// write the ring): the first one is reported as it comes, the others are
/// only counted; the end summary gives the total ([`malformed_records`]).
static MALFORMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Output records dropped as malformed so far (see [`render_record`]).
pub fn malformed_records() -> u64 {
    MALFORMED.load(std::sync::atomic::Ordering::Relaxed)
}

fn malformed(text: String) -> Rendered {
    let n = MALFORMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Rendered::Warning(if n == 0 { text } else { String::new() })
}

/// Render one REC_FORMAT payload of the module described by `meta` / `formats`.
pub fn render_record(meta: &Meta, formats: &[Format], payload: &[u8]) -> Rendered {
    let Some((id, vals)) = record::decode(payload) else {
        return malformed("WARNING: malformed output record dropped\n".into());
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
        FMT_HIST => match decode_hist(&vals) {
            Some((kind, counts)) => Rendered::Out(format_histogram(kind, &counts)),
            None => malformed("WARNING: malformed histogram record dropped\n".into()),
        },
        _ => match formats.get(id as usize) {
            Some(f) => match String::from_utf8(format_record_bytes(f, &vals)) {
                Ok(t) => Rendered::Out(t),
                Err(e) => Rendered::Raw(e.into_bytes()),
            },
            None => malformed(format!(
                "WARNING: output record with unknown format {id} dropped\n"
            )),
        },
    }
}

/// The shape and bucket counts of a FMT_HIST record's values:
/// (0 = log | 1 = linear, lo, step, number of buckets, "i:count,..." text).
pub fn decode_hist(vals: &[Value]) -> Option<(HistShape, Vec<i64>)> {
    let long = |i: usize| match vals.get(i) {
        Some(Value::Long(v)) => *v,
        _ => 0,
    };
    let n = usize::try_from(long(3)).unwrap_or(0).min(1 << 16);
    let mut counts = vec![0i64; n];
    let text = match vals.get(4) {
        Some(Value::Str(s)) => s.as_str(),
        _ => "",
    };
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (i, c) = pair.split_once(':')?;
        let (i, c) = (i.parse::<usize>().ok()?, c.parse::<i64>().ok()?);
        *counts.get_mut(i)? = c;
    }
    let kind = if long(0) == 0 {
        HistShape::Log
    } else {
        HistShape::Linear {
            lo: long(1),
            step: long(2),
        }
    };
    Some((kind, counts))
}

/// The value range of bucket `i` of `n` buckets of a histogram: (min, max),
/// `None` for an open end (the underflow and overflow of a linear one).
pub fn bucket_range(kind: HistShape, i: usize, n: usize) -> (Option<i64>, Option<i64>) {
    match kind {
        HistShape::Log => {
            let b = i as i64 - LOG_BUCKET0 as i64;
            let pow = |e: i64| 1i64.checked_shl(e as u32).unwrap_or(i64::MAX);
            match b {
                0 => (Some(0), Some(0)),
                b if b > 0 => (Some(pow(b - 1)), Some(pow(b).wrapping_sub(1))),
                b => (Some(-(pow(-b).wrapping_sub(1))), Some(-pow(-b - 1))),
            }
        }
        HistShape::Linear { lo, step } => {
            let at = |k: i64| lo.saturating_add(step.saturating_mul(k));
            if i == 0 {
                (None, Some(lo.saturating_sub(1)))
            } else if i + 1 == n {
                (Some(at(i as i64 - 1)), None)
            } else {
                (Some(at(i as i64 - 1)), Some(at(i as i64).saturating_sub(1)))
            }
        }
    }
}

/// Which histogram a bucket array is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistShape {
    /// 128 buckets: 64 holds 0, 64 + n values of n significant bits, 64 - n their negatives.
    Log,
    /// Underflow, one bucket per `step` from `lo`, overflow.
    Linear { lo: i64, step: i64 },
}

const HIST_WIDTH: i64 = 50;
const HIST_ELISION: usize = 2;
const LOG_BUCKET0: usize = 64;

/// Characters `v` takes in decimal.
fn needed_space(v: i64) -> i64 {
    v.to_string().len() as i64
}

fn log_bucket_value(i: usize) -> i64 {
    let pow = |n: usize| {
        if n == 0 {
            0
        } else {
            1i64.wrapping_shl(n as u32 - 1)
        }
    };
    if i >= LOG_BUCKET0 {
        pow(i - LOG_BUCKET0)
    } else {
        pow(LOG_BUCKET0 - i).wrapping_neg()
    }
}

/// A histogram in SystemTap's layout (its runtime's
/// `_stp_stat_print_histogram`): a `value |---...--- count` header, one
/// row per bucket from two empty buckets below the data to two above, bars
/// of `@` scaled to 50 columns, runs of empty buckets elided as `~`, linear
/// under/overflow rows as `<lo` / `>hi`, then an empty line.
pub fn format_histogram(shape: HistShape, counts: &[i64]) -> String {
    let nb = counts.len();
    let mut out = String::new();
    let (Some(mut low), Some(mut high)) = (
        counts.iter().position(|&c| c > 0),
        counts.iter().rposition(|&c| c > 0),
    ) else {
        out.push_str("value |");
        out.push_str(&"-".repeat(HIST_WIDTH as usize));
        out.push_str(" count\n\n");
        return out;
    };
    let valmax = counts.iter().copied().max().unwrap_or(0);
    for _ in 0..2 {
        match shape {
            HistShape::Log if low != LOG_BUCKET0 && low > 0 => low -= 1,
            HistShape::Linear { .. } if low > 0 => low -= 1,
            _ => {}
        }
        if high < nb - 1 {
            high += 1;
        }
    }
    let (mut under, mut over) = (0, 0);
    if let HistShape::Linear { .. } = shape {
        if low == 0 && counts[0] == 0 {
            low += 1;
        }
        if high == nb - 1 && counts[high] == 0 {
            high -= 1;
        }
        under = i64::from(low == 0);
        over = i64::from(high == nb - 1);
    }
    let scale = if valmax <= HIST_WIDTH {
        1
    } else {
        valmax / HIST_WIDTH + i64::from(valmax % HIST_WIDTH != 0)
    };
    let cnt_space = needed_space(valmax);
    let mut val_space = match shape {
        HistShape::Linear { lo, step } => (needed_space(lo) + under)
            .max(needed_space(lo.saturating_add(step.saturating_mul(nb as i64 - 2))) + over),
        HistShape::Log => {
            needed_space(log_bucket_value(low)).max(needed_space(log_bucket_value(high)))
        }
    };
    if val_space > 5 {
        out.push_str(&" ".repeat((val_space - 5) as usize));
    } else {
        val_space = 5;
    }
    out.push_str("value |");
    out.push_str(&"-".repeat(HIST_WIDTH as usize));
    out.push_str(" count\n");
    let mut eliding = false;
    for i in low..=high {
        let lo_k = i.saturating_sub(HIST_ELISION).max(low);
        let hi_k = (i + HIST_ELISION).min(high);
        if counts[lo_k..=hi_k].iter().all(|&c| c == 0) {
            eliding = true;
            continue;
        }
        if eliding {
            out.push_str(&" ".repeat(val_space as usize));
            out.push_str(" ~\n");
            eliding = false;
        }
        let (val, prefix) = match shape {
            HistShape::Linear { lo, .. } if i == 0 => (lo, "<"),
            HistShape::Linear { lo, step } if i == nb - 1 => {
                (lo.saturating_add((i as i64 - 2).saturating_mul(step)), ">")
            }
            HistShape::Linear { lo, step } => {
                (lo.saturating_add((i as i64 - 1).saturating_mul(step)), "")
            }
            HistShape::Log => (log_bucket_value(i), ""),
        };
        let pad = (val_space - needed_space(val) - prefix.len() as i64).max(0);
        out.push_str(&" ".repeat(pad as usize));
        out.push_str(&format!("{prefix}{val} |"));
        let v = counts[i] / scale;
        out.push_str(&"@".repeat(v.max(0) as usize));
        let fill = (HIST_WIDTH - v + 1 + cnt_space - needed_space(counts[i])).max(0);
        out.push_str(&" ".repeat(fill as usize));
        out.push_str(&format!("{}\n", counts[i]));
    }
    out.push('\n');
    out
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
    fn log_histogram_layout() {
        let mut c = vec![0i64; 128];
        c[66] = 2; // 2..3
        c[67] = 50; // 4..7
        let want = "\
value |-------------------------------------------------- count
    0 |                                                    0
    1 |                                                    0
    2 |@@                                                  2
    4 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ 50
    8 |                                                    0
   16 |                                                    0

";
        assert_eq!(format_histogram(HistShape::Log, &c), want);
    }

    #[test]
    fn linear_histogram_elides_and_scales() {
        // lo 0, step 10, hi 100: 13 buckets (underflow, 0..100, overflow).
        let mut c = vec![0i64; 13];
        c[1] = 200; // 0..9
        c[11] = 100; // 100
        c[12] = 1; // overflow
        let want = "\
value |-------------------------------------------------- count
    0 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ 200
   10 |                                                     0
   20 |                                                     0
      ~
   80 |                                                     0
   90 |                                                     0
  100 |@@@@@@@@@@@@@@@@@@@@@@@@@                          100
 >100 |                                                     1

";
        assert_eq!(
            format_histogram(HistShape::Linear { lo: 0, step: 10 }, &c),
            want
        );
    }

    /// C's snprintf of one long or string argument.
    fn c_printf(fmt: &str, arg: &Value) -> String {
        let cfmt = std::ffi::CString::new(fmt).unwrap();
        let mut buf = vec![0u8; 8192];
        // SAFETY: a valid buffer and format; the argument matches the one
        // conversion of the format (a long for numbers, a C string for %s).
        let n = unsafe {
            match arg {
                Value::Long(v) => libc::snprintf(
                    buf.as_mut_ptr() as *mut libc::c_char,
                    buf.len(),
                    cfmt.as_ptr(),
                    *v as libc::c_long,
                ),
                Value::Str(t) => {
                    let c = std::ffi::CString::new(t.as_str()).unwrap();
                    libc::snprintf(
                        buf.as_mut_ptr() as *mut libc::c_char,
                        buf.len(),
                        cfmt.as_ptr(),
                        c.as_ptr(),
                    )
                }
            }
        };
        String::from_utf8_lossy(&buf[..n as usize]).into_owned()
    }

    #[test]
    fn every_conversion_matches_c_printf() {
        use Value::{Long as L, Str as S};
        let longs = [0i64, 1, -1, 42, -42, 255, 4096, i64::MAX, i64::MIN, 1 << 40];
        let mut checked = 0;
        for flags in ["", "-", "0", "+", " ", "#", "-+", "0+", "- ", "+ "] {
            for width in ["", "1", "8", "25"] {
                for prec in ["", ".0", ".3", ".30"] {
                    for conv in ['d', 'i', 'u', 'x', 'X', 'o'] {
                        if flags.contains('#') && !matches!(conv, 'x' | 'X' | 'o') {
                            continue;
                        }
                        let ours = format!("%{flags}{width}{prec}{conv}");
                        let theirs = format!("%{flags}{width}{prec}l{conv}");
                        for v in longs {
                            assert_eq!(
                                f(&ours, &[L(v)]),
                                c_printf(&theirs, &L(v)),
                                "{ours} of {v}"
                            );
                            checked += 1;
                        }
                    }
                    for t in ["", "a", "hello, world"] {
                        let ours =
                            format!("%{}{width}{prec}s", flags.replace(['0', '+', ' ', '#'], ""));
                        assert_eq!(
                            f(&ours, &[S(t.into())]),
                            c_printf(&ours, &S(t.into())),
                            "{ours} of {t:?}"
                        );
                        checked += 1;
                    }
                }
                let ours = format!("%{}{width}c", flags.replace(['0', '+', ' ', '#'], ""));
                assert_eq!(f(&ours, &[L(65)]), c_printf(&ours, &L(65)), "{ours}");
            }
        }
        // %p: C's (glibc's) 0x form for non-null pointers.
        for v in [1i64, 4096, 0x7fff_1234_5678] {
            for (ours, theirs) in [("%p", "%p"), ("%20p", "%20p"), ("%-20p|", "%-20p|")] {
                // SAFETY in c_printf: a pointer-sized argument.
                assert_eq!(f(ours, &[L(v)]), c_printf(theirs, &L(v)), "{ours} of {v}");
            }
        }
        // `*` widths and precisions.
        assert_eq!(
            f(
                "%*d|%-*s|%.*s",
                &[L(5), L(42), L(4), S("ab".into()), L(2), S("xyz".into())]
            ),
            "   42|ab  |xy"
        );
        assert_eq!(f("%*d", &[L(-5), L(42)]), "42   ");
        assert!(checked > 9000, "{checked}");
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
