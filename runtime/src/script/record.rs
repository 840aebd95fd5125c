//! The REC_FORMAT record of compiled scripts: what `printf`/`print` write to
//! the session ring, and what ptap decodes and formats.
//!
//! Payload (little endian): `u32 format id, u32 nargs, u64 string mask`
//! (bit i set: argument i is a string), then each argument: a long is 8
//! bytes; a string is a `u64` length, its bytes, and zero padding to 8.
//! The format itself stays in ptap (metadata); only ids and values travel.

use crate::session::{Session, REC_FORMAT};

/// Most arguments one record carries (the compiler rejects more).
pub const MAX_ARGS: usize = 32;
/// Format id of a runtime-error record: longs `code, loc, probe, point, arg`, string `errmsg`.
pub const FMT_ERROR: u32 = u32::MAX;
/// Format id of a `warn(msg)` record: one string.
pub const FMT_WARN: u32 = u32::MAX - 1;
/// Format id of a histogram: longs `kind (0 log, 1 linear), lo, step,
/// buckets`, then a string of `index:count,` for every non-empty bucket.
pub const FMT_HIST: u32 = u32::MAX - 2;

/// An argument, as the writer sees it.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Long(i64),
    Str(&'a [u8]),
}

const ZEROS: [u8; 8] = [0; 8];

/// Write one record; false (and a drop counted by the ring) when it does not fit.
/// Hit-path safe: no allocation, no locks.
pub fn write(session: &Session, fmt: u32, args: &[Arg<'_>]) -> bool {
    let n = args.len().min(MAX_ARGS);
    let mut mask = 0u64;
    let mut words = [[0u8; 8]; MAX_ARGS];
    for (i, a) in args[..n].iter().enumerate() {
        match a {
            Arg::Long(v) => words[i] = v.to_le_bytes(),
            Arg::Str(s) => {
                mask |= 1 << i;
                words[i] = (s.len() as u64).to_le_bytes();
            }
        }
    }
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(&fmt.to_le_bytes());
    head[4..8].copy_from_slice(&(n as u32).to_le_bytes());
    head[8..].copy_from_slice(&mask.to_le_bytes());
    let mut parts: [&[u8]; 1 + 3 * MAX_ARGS] = [&[]; 1 + 3 * MAX_ARGS];
    parts[0] = &head;
    let mut k = 1;
    for (i, a) in args[..n].iter().enumerate() {
        parts[k] = &words[i];
        k += 1;
        if let Arg::Str(s) = a {
            parts[k] = s;
            parts[k + 1] = &ZEROS[..(8 - s.len() % 8) % 8];
            k += 2;
        }
    }
    session.write_record(REC_FORMAT, &parts[..k])
}

/// A decoded argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Long(i64),
    Str(String),
}

/// Decode a REC_FORMAT payload: the format id and the arguments.
/// `None` when the payload is malformed.
pub fn decode(payload: &[u8]) -> Option<(u32, Vec<Value>)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let fmt = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let n = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?) as usize;
    if n > MAX_ARGS {
        return None;
    }
    let mask = word(8)?;
    let mut at = 16;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let w = word(at)?;
        at += 8;
        if mask & (1 << i) != 0 {
            let len = usize::try_from(w).ok()?;
            let bytes = payload.get(at..at.checked_add(len)?)?;
            out.push(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
            at += len.div_ceil(8) * 8;
        } else {
            out.push(Value::Long(w as i64));
        }
    }
    Some((fmt, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut mem = vec![0u64; Session::total_size(4096) / 8];
        // SAFETY: mem outlives the session.
        let s = unsafe { Session::create(mem.as_mut_ptr() as *mut u8, 4096) };
        assert!(write(
            &s,
            7,
            &[
                Arg::Long(-5),
                Arg::Str(b"hello"),
                Arg::Long(1 << 40),
                Arg::Str(b"")
            ]
        ));
        let mut got = Vec::new();
        s.drain(|k, p| got.push((k, decode(p))));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, REC_FORMAT);
        let (fmt, vals) = got[0].1.clone().unwrap();
        assert_eq!(fmt, 7);
        assert_eq!(
            vals,
            vec![
                Value::Long(-5),
                Value::Str("hello".into()),
                Value::Long(1 << 40),
                Value::Str(String::new())
            ]
        );
    }

    #[test]
    fn malformed_is_none() {
        assert_eq!(decode(&[1, 2, 3]), None);
        let mut p = vec![0u8; 16];
        p[4] = 1; // one argument announced, none present
        assert_eq!(decode(&p), None);
    }
}
