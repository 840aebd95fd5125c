//! SystemTap's user backtraces (helpers of [`super::helper_table::HELPERS`]):
//! the frames of the probed context ([`frames`], CFI unwinding as
//! `ubacktrace()` does) and their symbolic lines in SystemTap's layouts:
//! full (`print_ubacktrace`, `print_ustack`): ` 0x00000000004005d4 :
//! main+0x14/0x20 [/tmp/a.out]`; simple (`sprint_ubacktrace`,
//! `sprint_ustack`): `main+0x14 [/tmp/a.out]`. An address outside any
//! symbol shows its object and offset (`0x... [/lib/x.so+0x1234]`), one
//! outside every object the address alone. Hit-path safe: no allocation
//! (the symbol index exists once the runtime attached), no locks.

use super::ctx::ProbeCtx;
use super::h_args::cap_of;
use super::h_ctx::no_symbols_here;
use crate::fmt::Buf;

/// Frames `print_ubacktrace` prints at most.
const MAX_FRAMES: usize = 64;

/// The probed context's return addresses, innermost first, into `out`;
/// how many. A kretprobe's hijacked return address is replaced by the
/// real one; the walk stops where the CFI ends.
///
/// # Safety
/// `ctx` live; `ctx.regs` NULL or the probed registers.
pub(super) unsafe fn frames(ctx: *mut ProbeCtx, out: &mut [u64]) -> usize {
    use crate::proc::eh_frame::{step, Frame};
    // SAFETY: caller contract.
    let regs = unsafe { (*ctx).regs };
    let (false, Some(idx), true) = (
        regs.is_null(),
        crate::proc::symbols::current(),
        !out.is_empty(),
    ) else {
        return 0;
    };
    // SAFETY: live registers of the probed thread.
    let mut f = Frame::from_ptregs(unsafe { &*regs });
    out[0] = f.ip();
    let mut n = 1;
    let is_tramp = crate::hit::asm::is_ret_trampoline;
    let ts = crate::hit::threads::current();
    while n < out.len() {
        match step(idx, &f, n == 1) {
            Ok(mut next) if is_tramp(next.ip()) => {
                // A kretprobe's hijacked return: the thread's instance for
                // that stack slot holds the real address.
                // SAFETY: ts is this thread's own slot.
                match unsafe { crate::hit::backtrace::unhijack(ts, next.ra_slot) } {
                    Some(real) => next.regs[16] = real,
                    None => break,
                }
                out[n] = next.ip();
                f = next;
            }
            Ok(next) if next.ip() != 0 => {
                out[n] = next.ip();
                f = next;
            }
            _ => break,
        }
        n += 1;
    }
    n
}

fn hex(b: &mut Buf, v: u64, pad: bool) {
    b.extend(b"0x");
    let mut started = pad;
    for i in (0..16).rev() {
        let d = ((v >> (i * 4)) & 0xf) as u8;
        if d != 0 || started || i == 0 {
            started = true;
            b.push(b"0123456789abcdef"[d as usize]);
        }
    }
}

/// One address as a SystemTap backtrace line (`full`: the print layout).
fn line(b: &mut Buf, addr: u64, full: bool) {
    let idx = crate::proc::symbols::current();
    if full {
        b.push(b' ');
    }
    let sym = idx.and_then(|i| crate::proc::symbols::containing_at(i, addr));
    if let Some((o, i)) = sym {
        if full {
            hex(b, addr, true);
            b.extend(b" : ");
        }
        let s = &o.syms[i];
        b.extend(o.display_name(i).as_bytes());
        b.push(b'+');
        hex(b, addr - s.addr, false);
        if full {
            b.push(b'/');
            hex(b, s.size, false);
        }
        b.extend(b" [");
        b.extend(o.path.as_bytes());
        b.extend(b"]\n");
        return;
    }
    hex(b, addr, true);
    if let Some(o) = idx.and_then(|i| crate::proc::symbols::object_of(i, addr)) {
        b.extend(b" [");
        b.extend(o.path.as_bytes());
        b.push(b'+');
        hex(b, addr.wrapping_sub(o.bias), false);
        b.push(b']');
    }
    b.push(b'\n');
}

/// The hex addresses of `stk` (as `ubacktrace()` writes them), in order.
fn addresses(stk: &[u8]) -> impl Iterator<Item = u64> + '_ {
    stk.split(|&c| c == b' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let t = t.strip_prefix(b"0x").unwrap_or(t);
            t.iter().fold(0u64, |v, &c| {
                let d = (c as char).to_digit(16).unwrap_or(0);
                v.wrapping_shl(4) | u64::from(d)
            })
        })
}

/// Lines for `addrs` into the string buffer `dst` (`cap` bytes), truncated.
///
/// # Safety
/// `dst` valid for `cap` bytes.
unsafe fn lines_into(dst: *mut u8, cap: i64, addrs: impl Iterator<Item = u64>, full: bool) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract.
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    let mut b = Buf {
        data: &mut out[..cap - 1],
        len: 0,
    };
    for a in addrs {
        line(&mut b, a, full);
    }
    let n = b.len;
    out[n] = 0;
}

/// Lines for `addrs` to the output, as text records of whole lines.
fn lines_out(addrs: impl Iterator<Item = u64>) {
    let mut data = [0u8; 4096];
    let mut b = Buf {
        data: &mut data,
        len: 0,
    };
    for a in addrs {
        let at = b.len;
        line(&mut b, a, true);
        if b.len == b.data.len() {
            // Full: send what came before this line, then the line again.
            crate::session::output::text(&b.data[..at]);
            b.len = 0;
            line(&mut b, a, true);
        }
    }
    if b.len > 0 {
        crate::session::output::text(b.as_bytes());
    }
}

/// `print_ubacktrace()`: the probed context's frames, SystemTap's full lines.
///
/// # Safety
/// `ctx` live; `ctx.regs` NULL or the probed registers.
pub(super) unsafe extern "C" fn print_ubacktrace(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    if unsafe { no_symbols_here(ctx) } {
        return;
    }
    let mut ips = [0u64; MAX_FRAMES];
    // SAFETY: caller contract.
    let n = unsafe { frames(ctx, &mut ips) };
    lines_out(ips[..n].iter().copied());
}

/// `sprint_ubacktrace()`: the frames, SystemTap's simple lines, truncated
/// to the string.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn sprint_ubacktrace(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let mut ips = [0u64; MAX_FRAMES];
    // SAFETY: caller contract.
    let n = if unsafe { no_symbols_here(ctx) } {
        0
    } else {
        // SAFETY: caller contract.
        unsafe { frames(ctx, &mut ips) }
    };
    // SAFETY: caller contract.
    unsafe { lines_into(dst, cap, ips[..n].iter().copied(), false) };
}

/// `ucallers(n)`: the first `n` addresses of `ubacktrace()` (every one
/// when `n` < 0), hex, separated by spaces, truncated to the string.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn ucallers(ctx: *mut ProbeCtx, n: i64, dst: *mut u8, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let mut ips = [0u64; 25];
    // SAFETY: caller contract.
    let got = if unsafe { no_symbols_here(ctx) } {
        0
    } else {
        let want = usize::try_from(n).map_or(ips.len(), |n| n.min(ips.len()));
        // SAFETY: caller contract.
        unsafe { frames(ctx, &mut ips[..want]) }
    };
    // SAFETY: caller contract.
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    let mut b = Buf {
        data: &mut out[..cap - 1],
        len: 0,
    };
    for (i, &ip) in ips[..got].iter().enumerate() {
        if i > 0 {
            b.push(b' ');
        }
        crate::session::output::push_hex(&mut b, ip);
    }
    let len = b.len;
    out[len] = 0;
}

/// `sprint_ustack(stk)`: the addresses of `stk`, simple lines.
///
/// # Safety
/// `ctx` live; `stk` NUL-terminated; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn sprint_ustack(
    ctx: *mut ProbeCtx,
    stk: *const u8,
    dst: *mut u8,
    cap: i64,
) {
    // SAFETY: caller contract.
    let stk = unsafe { core::slice::from_raw_parts(stk, crate::fmt::cstr_len(stk, 1 << 20)) };
    // SAFETY: caller contract.
    let none = unsafe { no_symbols_here(ctx) };
    let addrs = addresses(if none { &[] } else { stk });
    // SAFETY: caller contract.
    unsafe { lines_into(dst, cap, addrs, false) };
}

/// `print_ustack(stk)`: the addresses of `stk`, full lines, to the output.
///
/// # Safety
/// `ctx` live; `stk` NUL-terminated.
pub(super) unsafe extern "C" fn print_ustack(ctx: *mut ProbeCtx, stk: *const u8) {
    // SAFETY: caller contract.
    if unsafe { no_symbols_here(ctx) } {
        return;
    }
    // SAFETY: caller contract.
    let stk = unsafe { core::slice::from_raw_parts(stk, crate::fmt::cstr_len(stk, 1 << 20)) };
    lines_out(addresses(stk));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_symbols_and_addresses() {
        let mut data = [0u8; 128];
        let mut b = Buf {
            data: &mut data,
            len: 0,
        };
        let v: Vec<u64> = addresses(b"0x10 0xdeadbeef  7f").collect();
        assert_eq!(v, vec![0x10, 0xdead_beef, 0x7f]);
        hex(&mut b, 0x4005d4, true);
        b.push(b'|');
        hex(&mut b, 0x14, false);
        assert_eq!(b.as_bytes(), b"0x00000000004005d4|0x14");
    }
}
