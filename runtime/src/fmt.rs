//! A minimal printf-style formatter for `printk` (C varargs, SysV x86-64),
//! and the one formatter of scripts' `printf` and `sprintf`: handlers call
//! it for `sprintf` in the target, ptap calls it for `printf` records, with
//! the format as `ptap_lang::printf::Format::to_source` writes it.
//!
//! Hand-written on purpose: libc's vsnprintf may be the probed function and
//! may take locks; `core::fmt` cannot read C varargs. Integer-class
//! arguments only: %d %i %u %x %X %o %p %s %c %% with flags `-0+ #`, width,
//! precision (`*` too) and length modifiers hh h l ll z j t. Scripts' own
//! conversions, letters C does not use (so a C `%m` still takes no
//! argument): `%P` (their `%p`), `%V` (their `%b`: a value's bytes, as many
//! as the width: 1, 2, 4 or 8) and `%R` / `%H` (their `%m` / `%M`: memory
//! the handler read, given as hex text: `%R` writes the bytes, `%H` the hex). Floating point
//! conversions (%f %e %g) are NOT supported: they print `<%f?>` and consume
//! nothing (floats travel in xmm registers, which the trampoline does not save).

/// Reads integer-class variadic arguments: first from the spilled argument
/// registers, then from the caller's stack.
pub struct ArgReader {
    regs: *const u64,
    nregs: usize,
    stack: *const u64,
    idx: usize,
}

impl ArgReader {
    /// # Safety
    /// `regs` must point to `nregs` u64s and `stack` to as many u64 stack
    /// arguments as the format string consumes beyond them.
    pub unsafe fn new(regs: *const u64, nregs: usize, stack: *const u64) -> ArgReader {
        ArgReader {
            regs,
            nregs,
            stack,
            idx: 0,
        }
    }

    pub fn next_arg(&mut self) -> u64 {
        let i = self.idx;
        self.idx += 1;
        // SAFETY: ArgReader::new's contract: the format matches the arguments.
        unsafe {
            if i < self.nregs {
                *self.regs.add(i)
            } else {
                *self.stack.add(i - self.nregs)
            }
        }
    }
}

/// A fixed-size output buffer (truncates silently).
pub struct Buf<'a> {
    pub data: &'a mut [u8],
    pub len: usize,
}

impl Buf<'_> {
    pub fn push(&mut self, b: u8) {
        if self.len < self.data.len() {
            self.data[self.len] = b;
            self.len += 1;
        }
    }
    pub fn extend(&mut self, s: &[u8]) {
        for &b in s {
            self.push(b);
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Length of a NUL-terminated string, bounded by `max`.
///
/// # Safety
/// `p` must point to readable memory up to its NUL or `max` bytes.
pub unsafe fn cstr_len(p: *const u8, max: usize) -> usize {
    let mut n = 0;
    // SAFETY: caller contract.
    while n < max && unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    n
}

#[derive(Default, Clone, Copy)]
struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    alt: bool,
    width: usize,
    prec: Option<usize>,
}

fn pad(out: &mut Buf, n: usize, c: u8) {
    for _ in 0..n {
        out.push(c);
    }
}

fn emit(out: &mut Buf, spec: &Spec, prefix: &[u8], body: &[u8]) {
    let len = prefix.len() + body.len();
    let fill = spec.width.saturating_sub(len);
    if spec.left {
        out.extend(prefix);
        out.extend(body);
        pad(out, fill, b' ');
    } else if spec.zero && spec.prec.is_none() {
        out.extend(prefix);
        pad(out, fill, b'0');
        out.extend(body);
    } else {
        pad(out, fill, b' ');
        out.extend(prefix);
        out.extend(body);
    }
}

fn digits(mut v: u64, base: u64, upper: bool, buf: &mut [u8; 24]) -> usize {
    let set = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = set[(v % base) as usize];
        v /= base;
        if v == 0 {
            break;
        }
    }
    i
}

fn number(out: &mut Buf, spec: &Spec, neg: bool, v: u64, base: u64, upper: bool, prefix: &[u8]) {
    // The number buffer holds 48 digits.
    let spec = &Spec {
        prec: spec.prec.map(|p| p.min(40)),
        ..*spec
    };
    let mut tmp = [0u8; 24];
    let start = digits(v, base, upper, &mut tmp);
    let mut body = [0u8; 48];
    let mut blen = 0;
    let nd = tmp.len() - start;
    let want = spec.prec.unwrap_or(1);
    if !(spec.prec == Some(0) && v == 0) {
        for _ in nd..want.max(nd) {
            body[blen] = b'0';
            blen += 1;
        }
        for &d in &tmp[start..] {
            body[blen] = d;
            blen += 1;
        }
    }
    // `%#o`: a leading 0, unless the digits already start with one.
    let prefix = if prefix == b"0" && blen > 0 && body[0] == b'0' {
        b""
    } else {
        prefix
    };
    let sign: &[u8] = if neg {
        b"-"
    } else if spec.plus {
        b"+"
    } else if spec.space {
        b" "
    } else {
        b""
    };
    let mut pre = [0u8; 4];
    let mut plen = 0;
    for &b in sign.iter().chain(prefix.iter()) {
        pre[plen] = b;
        plen += 1;
    }
    emit(out, spec, &pre[..plen], &body[..blen]);
}

/// Format `fmt` with `args` into `out`.
///
/// # Safety
/// `fmt` is a NUL-terminated string; %s arguments must be NULL or readable
/// NUL-terminated strings (a handler fault here is caught by the runtime).
pub unsafe fn format(out: &mut Buf, fmt: *const u8, args: &mut ArgReader) {
    let mut i = 0usize;
    loop {
        // SAFETY: fmt is NUL-terminated (caller contract).
        let c = unsafe { *fmt.add(i) };
        if c == 0 {
            return;
        }
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        // SAFETY: each read stops at the NUL.
        let at = |k: usize| unsafe { *fmt.add(k) };
        loop {
            match at(i) {
                b'-' => spec.left = true,
                b'0' => spec.zero = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alt = true,
                _ => break,
            }
            i += 1;
        }
        if at(i) == b'*' {
            let w = args.next_arg() as i32;
            if w < 0 {
                spec.left = true;
            }
            spec.width = w.unsigned_abs() as usize;
            i += 1;
        } else {
            while at(i).is_ascii_digit() {
                spec.width = spec
                    .width
                    .saturating_mul(10)
                    .saturating_add((at(i) - b'0') as usize);
                i += 1;
            }
        }
        if at(i) == b'.' {
            i += 1;
            let mut p = 0usize;
            if at(i) == b'*' {
                let v = args.next_arg() as i32;
                p = v.max(0) as usize;
                i += 1;
            } else {
                while at(i).is_ascii_digit() {
                    p = p.saturating_mul(10).saturating_add((at(i) - b'0') as usize);
                    i += 1;
                }
            }
            spec.prec = Some(p.min(4096));
        }
        spec.width = spec.width.min(512);
        // length: 0 = int, 1 = long/long long/size_t, -1 = short, -2 = char
        let mut lenmod = 0i32;
        loop {
            match at(i) {
                b'l' | b'z' | b'j' | b't' | b'q' | b'L' => lenmod = 1,
                b'h' => lenmod = if lenmod == -1 { -2 } else { -1 },
                _ => break,
            }
            i += 1;
        }
        let conv = at(i);
        if conv == 0 {
            return;
        }
        i += 1;
        let sext = |v: u64| -> i64 {
            match lenmod {
                1 => v as i64,
                -1 => v as i16 as i64,
                -2 => v as i8 as i64,
                _ => v as i32 as i64,
            }
        };
        let zext = |v: u64| -> u64 {
            match lenmod {
                1 => v,
                -1 => v as u16 as u64,
                -2 => v as u8 as u64,
                _ => v as u32 as u64,
            }
        };
        // `+` and ` ` apply to signed conversions only (as in C).
        let signed = spec;
        let spec = Spec {
            plus: false,
            space: false,
            ..spec
        };
        match conv {
            b'd' | b'i' => {
                let v = sext(args.next_arg());
                number(out, &signed, v < 0, v.unsigned_abs(), 10, false, b"");
            }
            b'u' => number(out, &spec, false, zext(args.next_arg()), 10, false, b""),
            b'x' | b'X' => {
                let v = zext(args.next_arg());
                let pre: &[u8] = if spec.alt && v != 0 {
                    if conv == b'x' {
                        b"0x"
                    } else {
                        b"0X"
                    }
                } else {
                    b""
                };
                number(out, &spec, false, v, 16, conv == b'X', pre)
            }
            b'o' => {
                let v = zext(args.next_arg());
                number(
                    out,
                    &spec,
                    false,
                    v,
                    8,
                    false,
                    if spec.alt { b"0" } else { b"" },
                )
            }
            b'p' => {
                // Kernel style: plain hex, no "0x" (so "0x%p" reads as in the 2005 Kprobes document's examples).
                let v = args.next_arg();
                number(out, &spec, false, v, 16, false, b"")
            }
            b'P' => {
                // A script's `%p` (ptap's own spelling, not C's): 0x and
                // the hex digits, for printf and sprintf alike.
                let v = args.next_arg();
                number(out, &spec, false, v, 16, false, b"0x")
            }
            b'c' => {
                let b = [args.next_arg() as u8];
                emit(out, &spec, b"", &b);
            }
            b's' => {
                let p = args.next_arg() as *const u8;
                if p.is_null() {
                    emit(out, &spec, b"", b"(null)");
                } else {
                    let max = spec.prec.unwrap_or(4096);
                    // SAFETY: caller contract (string arguments are readable).
                    let n = unsafe { cstr_len(p, max) };
                    // SAFETY: n bytes are readable.
                    let s = unsafe { core::slice::from_raw_parts(p, n) };
                    emit(out, &spec, b"", s);
                }
            }
            b'V' => {
                // A script's `%b`: the value's bytes, host order (little
                // endian), as many as the width says (1, 2, 4; else 8).
                let v = args.next_arg().to_le_bytes();
                let n = match spec.width {
                    1 | 2 | 4 => spec.width,
                    _ => 8,
                };
                out.extend(&v[..n]);
            }
            b'R' | b'H' => {
                // A script's `%m` / `%M`: the argument is the memory's bytes
                // as hex text (the handler read them); `%m` writes the bytes,
                // `%M` the hex digits, padded to the width.
                let p = args.next_arg() as *const u8;
                let hex = if p.is_null() {
                    &[][..]
                } else {
                    // SAFETY: caller contract (string arguments are readable).
                    let n = unsafe { cstr_len(p, 8192) };
                    // SAFETY: n bytes are readable.
                    unsafe { core::slice::from_raw_parts(p, n) }
                };
                let len = if conv == b'R' {
                    hex.len() / 2
                } else {
                    hex.len()
                };
                let fill = spec.width.saturating_sub(len);
                if !spec.left {
                    pad(out, fill, b' ');
                }
                if conv == b'H' {
                    out.extend(hex);
                } else {
                    let val = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    for pair in hex.chunks_exact(2) {
                        out.push(val(pair[0]) << 4 | val(pair[1]));
                    }
                }
                if spec.left {
                    pad(out, fill, b' ');
                }
            }
            b'%' => out.push(b'%'),
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                out.extend(b"<%");
                out.push(conv);
                out.extend(b"?>");
            }
            other => {
                out.push(b'%');
                out.push(other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fmt: &str, args: &[u64]) -> String {
        let c = std::ffi::CString::new(fmt).unwrap();
        let mut data = [0u8; 256];
        let mut out = Buf {
            data: &mut data,
            len: 0,
        };
        let regs: Vec<u64> = args.iter().copied().take(5).collect();
        let stack: Vec<u64> = args.iter().copied().skip(5).collect();
        // SAFETY: the test passes as many args as the format consumes.
        unsafe {
            let mut r = ArgReader::new(regs.as_ptr(), regs.len(), stack.as_ptr());
            format(&mut out, c.as_ptr() as *const u8, &mut r);
        }
        String::from_utf8(out.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn conversions() {
        assert_eq!(f("a%db", &[(-5i64) as u64]), "a-5b");
        assert_eq!(f("%u %x %X %o", &[7, 255, 255, 8]), "7 ff FF 10");
        assert_eq!(f("%ld", &[(-1i64) as u64]), "-1");
        assert_eq!(f("%d", &[0xffff_ffff]), "-1");
        assert_eq!(f("%lx", &[0xdead_beef_0000]), "deadbeef0000");
        assert_eq!(f("%5d|%-5d|%05d", &[42, 42, 42]), "   42|42   |00042");
        assert_eq!(f("%#x %#o", &[16, 8]), "0x10 010");
        assert_eq!(f("%.3d %+d", &[5, 5]), "005 +5");
        assert_eq!(f("%c%%", &[b'z' as u64]), "z%");
        assert_eq!(f("%p", &[0x1234]), "1234");
        assert_eq!(
            f("%V|%2V|%1V", &[0x41_42, 0x4344, 0x45]),
            "BA\0\0\0\0\0\0|DC|E"
        );
        // C's `%m` (and `%b`, `%M`) take no argument here.
        assert_eq!(f("%m%b%M", &[]), "%m%b%M");
        let hex = std::ffi::CString::new("41420a").unwrap();
        let h = hex.as_ptr() as u64;
        assert_eq!(f("%R|%5H|%-4R|", &[h, h, h]), "AB\n|41420a|AB\n |");
        assert_eq!(f("%*d", &[4, 7]), "   7");
        assert_eq!(f("%hhd", &[0x1ff]), "-1");
        assert_eq!(f("%f", &[]), "<%f?>");
        // Absurd widths and precisions are clamped, never overflow a buffer.
        assert_eq!(f("%.100d", &[5]).len(), 40);
        // 20+ digits used to overflow usize (a panic in debug builds).
        assert_eq!(f("%.99999999999999999999999d", &[5]).len(), 40);
        assert_eq!(f("%99999999999999999999999d", &[5]).len(), 256);
        assert_eq!(
            f("%9999d", &[5]).len(),
            256,
            "width 512, truncated to the buffer"
        );
    }

    #[test]
    fn strings_and_stack_args() {
        let s = std::ffi::CString::new("hey").unwrap();
        let p = s.as_ptr() as u64;
        assert_eq!(f("%s|%.2s|%5s|%s", &[p, p, p, 0]), "hey|he|  hey|(null)");
        assert_eq!(
            f("%d %d %d %d %d %d %d", &[1, 2, 3, 4, 5, 6, 7]),
            "1 2 3 4 5 6 7"
        );
    }
}
