//! String helpers of the helper table (`ptap_h_str_*`, substr, sprintf, ...):
//! NUL-terminated buffers of `cap` bytes, truncation at `cap - 1`.

use super::ctx::{ProbeCtx, ERRMSG_MAX, ERR_USER, MATCH_NONE, MATCH_OK, MATCH_UNTRACKED};
use super::globals::{c_len, copy_str};
use super::h_args::{cap_of, put, BIG};
use super::record::MAX_ARGS;

/// # Safety
/// `dst` valid for `cap` bytes; `src` a NUL-terminated string.
pub(super) unsafe extern "C" fn str_copy(dst: *mut u8, src: *const u8, cap: i64) {
    // SAFETY: caller contract.
    unsafe { copy_str(dst, src, cap_of(cap)) }
}

/// `dst = a . b`, truncated to `cap - 1` bytes. `dst` may be `a` or `b`.
///
/// # Safety
/// `dst` valid for `cap` bytes; `a`, `b` NUL-terminated strings of at most `cap - 1` bytes.
pub(super) unsafe extern "C" fn str_concat(dst: *mut u8, a: *const u8, b: *const u8, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract; copies use ptr::copy (overlap allowed). `b` is
    // moved first when it aliases dst's tail region.
    unsafe {
        let la = c_len(a, cap);
        let lb = c_len(b, cap).min((cap - 1).saturating_sub(la));
        core::ptr::copy(b, dst.add(la), lb);
        core::ptr::copy(a, dst, la);
        *dst.add(la + lb) = 0;
    }
}

/// # Safety
/// NUL-terminated strings.
pub(super) unsafe extern "C" fn str_cmp(a: *const u8, b: *const u8) -> i64 {
    let mut i = 0;
    loop {
        // SAFETY: caller contract; we stop at the first NUL of either.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y || x == 0 {
            return i64::from(x) - i64::from(y);
        }
        i += 1;
    }
}

/// # Safety
/// NUL-terminated string.
pub(super) unsafe extern "C" fn str_len(s: *const u8) -> i64 {
    // SAFETY: caller contract.
    unsafe { c_len(s, BIG) as i64 }
}

/// `substr(s, start, len)`: SystemTap semantics (0-based start; out of range gives "").
///
/// # Safety
/// As [`str_copy`].
pub(super) unsafe extern "C" fn substr(dst: *mut u8, s: *const u8, start: i64, len: i64, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract.
    unsafe {
        let n = c_len(s, BIG);
        let st = usize::try_from(start).unwrap_or(usize::MAX);
        let len = usize::try_from(len).unwrap_or(0);
        let take = if st >= n {
            0
        } else {
            len.min(n - st).min(cap - 1)
        };
        if take > 0 {
            core::ptr::copy(s.add(st), dst, take);
        }
        *dst.add(take) = 0;
    }
}

/// # Safety
/// NUL-terminated strings.
pub(super) unsafe extern "C" fn isinstr(a: *const u8, b: *const u8) -> i64 {
    // SAFETY: caller contract.
    let (hay, needle) = unsafe {
        (
            core::slice::from_raw_parts(a, c_len(a, BIG)),
            core::slice::from_raw_parts(b, c_len(b, BIG)),
        )
    };
    i64::from(needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle))
}

/// `strtol(s, base)`: like C strtol (leading blanks, sign, `0x` for base 16 or 0).
///
/// # Safety
/// `s` NUL-terminated.
pub(super) unsafe extern "C" fn strtol(_ctx: *mut ProbeCtx, s: *const u8, base: i64) -> i64 {
    // SAFETY: caller contract.
    let t = unsafe { core::slice::from_raw_parts(s, c_len(s, BIG)) };
    let mut i = 0;
    while i < t.len() && matches!(t[i], b' ' | b'\t' | b'\n') {
        i += 1;
    }
    let neg = i < t.len() && t[i] == b'-';
    if i < t.len() && matches!(t[i], b'-' | b'+') {
        i += 1;
    }
    let mut base = base as u32;
    let hex_prefix = i + 1 < t.len() && t[i] == b'0' && (t[i + 1] | 0x20) == b'x';
    if (base == 16 || base == 0) && hex_prefix {
        i += 2;
        base = 16;
    } else if base == 0 {
        base = if i < t.len() && t[i] == b'0' { 8 } else { 10 };
    }
    if !(2..=36).contains(&base) {
        return 0;
    }
    let mut v: i64 = 0;
    while i < t.len() {
        let Some(d) = (t[i] as char).to_digit(base) else {
            break;
        };
        v = v.wrapping_mul(i64::from(base)).wrapping_add(i64::from(d));
        i += 1;
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// `sprintf(fmt, ...)` into `dst`: `fmt` is the C-printf text of a checked
/// format; `args[i]` is a long or a string pointer (what `%s` reads).
/// Formats with the runtime's hit-path formatter (`crate::fmt`).
///
/// # Safety
/// `dst` valid for `cap` bytes; `fmt` NUL-terminated; `args` valid for
/// `nargs` entries matching the format.
pub(super) unsafe extern "C" fn sprintf(
    dst: *mut u8,
    fmt: *const u8,
    args: *const i64,
    nargs: i64,
    cap: i64,
) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract.
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap - 1) };
    let mut buf = crate::fmt::Buf { data: out, len: 0 };
    let n = usize::try_from(nargs).unwrap_or(0);
    // Conversions beyond `nargs` (the checker prevents them) read zeros.
    static NO_MORE: [u64; MAX_ARGS] = [0; MAX_ARGS];
    // SAFETY: args holds nargs values; at most MAX_ARGS more read NO_MORE.
    unsafe {
        let mut rd = crate::fmt::ArgReader::new(args as *const u64, n, NO_MORE.as_ptr());
        crate::fmt::format(&mut buf, fmt, &mut rd);
    }
    let len = buf.len;
    // SAFETY: len <= cap - 1.
    unsafe { *dst.add(len) = 0 };
}

/// `s =~ re`: `prog` is the pattern compiled by ptap (`len` bytes, see
/// `super::regex`); 1 when it matches anywhere in `s`. Leaves the match's
/// captures in `ctx` for `matched(n)` (a failed match clears them).
///
/// # Safety
/// `ctx` live; `s` NUL-terminated; `prog` valid for `len` bytes.
pub(super) unsafe extern "C" fn regex_match(
    ctx: *mut ProbeCtx,
    s: *const u8,
    prog: *const u8,
    len: i64,
) -> i64 {
    use super::regex::{can_capture, captures, groups, is_match, NSLOTS, UNSET};
    // SAFETY: caller contract.
    let (ctx, s, prog) = unsafe {
        (
            &mut *ctx,
            core::slice::from_raw_parts(s, c_len(s, BIG)),
            core::slice::from_raw_parts(prog, usize::try_from(len).unwrap_or(0)),
        )
    };
    ctx.match_state = MATCH_NONE;
    if !can_capture(prog) || s.len() >= UNSET as usize {
        let m = is_match(prog, s);
        if m {
            ctx.match_state = MATCH_UNTRACKED;
        }
        return i64::from(m);
    }
    let Some(caps) = captures(prog, s) else {
        return 0;
    };
    let (start, end) = (caps[0] as usize, (caps[1] as usize).min(s.len()));
    let text = s.get(start..end).unwrap_or(&[]);
    let mut rel = [UNSET; NSLOTS];
    for k in 0..NSLOTS {
        rel[k] = match caps[k] {
            UNSET => UNSET,
            at => at.saturating_sub(caps[0]),
        };
    }
    ctx.set_match(text, &rel, groups(prog) as u32);
    1
}

/// `matched(n)`: the text of subexpression `n` (0: the whole match) of the
/// last successful `=~` of this hit, or an error.
///
/// # Safety
/// `ctx` live; `dst` holds `cap` bytes.
pub(super) unsafe extern "C" fn matched(ctx: *mut ProbeCtx, dst: *mut u8, n: i64, cap: i64) {
    // SAFETY: caller contract.
    let ctx = unsafe { &mut *ctx };
    let fail = |ctx: &mut ProbeCtx, what: &[u8], tail: &[u8]| {
        let mut w = crate::fmt::Buf {
            data: &mut ctx.errmsg_buf()[..ERRMSG_MAX - 1],
            len: 0,
        };
        w.extend(what);
        if n < 0 {
            w.push(b'-');
        }
        let mut digits = [0u8; 20];
        let (mut v, mut i) = (n.unsigned_abs(), digits.len());
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        w.extend(&digits[i..]);
        w.extend(tail);
        // the buffer was cleared: the message is NUL-terminated
        ctx.error = ERR_USER;
    };
    match ctx.match_state {
        MATCH_OK => {}
        MATCH_UNTRACKED => {
            return fail(
                ctx,
                b"Cannot get subexpression ",
                b": the last matched pattern is too large for subexpression tracking",
            )
        }
        _ => {
            return fail(
                ctx,
                b"Attempted to get subexpression ",
                b" from failed match",
            )
        }
    }
    if n < 0 || n > i64::from(ctx.match_groups) {
        return fail(ctx, b"Attempted to get nonexistent subexpression ", b"");
    }
    let k = 2 * n as usize;
    let (a, b) = (ctx.match_cap(k), ctx.match_cap(k + 1));
    let all = ctx.match_text();
    let len = all.len();
    let text = if a == super::regex::UNSET || b == super::regex::UNSET {
        &[][..]
    } else {
        let (a, b) = ((a as usize).min(len), (b as usize).min(len));
        all.get(a..b.max(a)).unwrap_or(&[])
    };
    // SAFETY: caller contract.
    unsafe { put(dst, cap, text) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut d = [0u8; 8];
        // SAFETY: literals are NUL-terminated, d has 8 bytes.
        unsafe {
            str_concat(
                d.as_mut_ptr(),
                c"abcd".as_ptr() as _,
                c"efghij".as_ptr() as _,
                8,
            );
            assert_eq!(&d, b"abcdefg\0");
            assert!(str_cmp(c"abc".as_ptr() as _, c"abd".as_ptr() as _) < 0);
            assert_eq!(str_cmp(c"abc".as_ptr() as _, c"abc".as_ptr() as _), 0);
            substr(d.as_mut_ptr(), c"hello".as_ptr() as _, 1, 3, 8);
            assert_eq!(&d[..4], b"ell\0");
            substr(d.as_mut_ptr(), c"hello".as_ptr() as _, 9, 3, 8);
            assert_eq!(d[0], 0);
            assert_eq!(isinstr(c"hello".as_ptr() as _, c"ll".as_ptr() as _), 1);
            assert_eq!(
                strtol(core::ptr::null_mut(), c" -0x1f".as_ptr() as _, 16),
                -31
            );
            assert_eq!(strtol(core::ptr::null_mut(), c"42z".as_ptr() as _, 10), 42);
        }
    }

    #[test]
    fn sprintf_formats_longs_and_strings() {
        let mut d = [0u8; 16];
        let args = [42i64, c"ab".as_ptr() as i64, 255];
        // SAFETY: NUL-terminated format, 3 args, d has 16 bytes.
        unsafe {
            sprintf(
                d.as_mut_ptr(),
                c"%d:%s:%04x|%5d".as_ptr() as _,
                args.as_ptr(),
                3,
                16,
            )
        };
        let n = d.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&d[..n], b"42:ab:00ff|    ");
    }
}
