//! Fault-safe access to target memory: process_vm_readv/writev on ourselves
//! fail (EFAULT or a short count) instead of raising SIGSEGV.

use super::ctx::{ProbeCtx, ERR_FAULT};
use super::h_args::cap_of;
use crate::base::sys;

pub(super) const SYS_PROCESS_VM_READV: usize = 310;
pub(super) const SYS_PROCESS_VM_WRITEV: usize = 311;

/// The process whose memory a handler reads: the probed one (this
/// process), or the sampled one in system-wide mode.
///
/// # Safety
/// `ctx` live.
unsafe fn mem_pid(ctx: *mut ProbeCtx) -> i32 {
    // SAFETY: caller contract.
    match unsafe { super::h_ctx::sample(ctx) } {
        Some(s) => s.pid,
        None => sys::getpid(),
    }
}

/// A failed read of a sampled process (system-wide mode) is counted.
///
/// # Safety
/// `ctx` live.
unsafe fn count_failed_read(ctx: *mut ProbeCtx) {
    // SAFETY: caller contract.
    if let Some(s) = unsafe { super::h_ctx::sample(ctx) } {
        s.failed_reads
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Fault-safe copy of target memory: process_vm_readv (on ourselves, or on
/// the sampled process) returns EFAULT (or a short count) for an unmapped
/// address instead of raising SIGSEGV, so no signal handling is needed; a
/// process that is gone reads nothing (ESRCH).
fn read_pid(pid: i32, addr: u64, dst: &mut [u8]) -> usize {
    let local = [dst.as_mut_ptr() as usize, dst.len()];
    let remote = [addr as usize, dst.len()];
    // SAFETY: iovecs describe our own buffer and a remote range the kernel checks.
    let r = unsafe {
        sys::syscall6(
            SYS_PROCESS_VM_READV,
            pid as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

/// Record a faulting read/write of `addr` in the handler's context.
///
/// # Safety
/// `ctx` is the running handler's live context.
pub(super) unsafe fn fault(ctx: *mut ProbeCtx, addr: i64) {
    // SAFETY: caller contract.
    unsafe {
        (*ctx).error = ERR_FAULT;
        (*ctx).error_arg = addr as u64;
    }
}

/// `user_long/int/char(addr)`: `size` 8, 4 or 1 bytes, sign-extended.
///
/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn user_read(ctx: *mut ProbeCtx, addr: i64, size: i64) -> i64 {
    let mut b = [0u8; 8];
    let n = match size {
        1 | 2 | 4 | 8 => size as usize,
        _ => 8,
    };
    // SAFETY: the helper's live ctx (helper contract).
    let pid = unsafe { mem_pid(ctx) };
    if read_pid(pid, addr as u64, &mut b[..n]) != n {
        // SAFETY: the helper's live ctx (helper contract).
        unsafe {
            count_failed_read(ctx);
            fault(ctx, addr);
        }
        return 0;
    }
    match n {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => i64::from_le_bytes(b),
    }
}

/// `user_string(addr)` / `user_string_n(addr, n)`: at most `maxlen` bytes
/// (and `cap - 1`), stopping at NUL. A fault before any NUL is an error.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn user_string(
    ctx: *mut ProbeCtx,
    dst: *mut u8,
    addr: i64,
    maxlen: i64,
    cap: i64,
) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let limit = usize::try_from(maxlen).unwrap_or(0).min(cap - 1);
    // SAFETY: dst valid for cap bytes (contract).
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    // SAFETY: the helper's live ctx (helper contract).
    let pid = unsafe { mem_pid(ctx) };
    let mut n = 0;
    while n < limit {
        // Read up to the end of the current page: a string may end just before an unmapped page.
        let a = (addr as u64).wrapping_add(n as u64);
        let chunk = ((4096 - (a & 4095)) as usize).min(limit - n);
        let got = read_pid(pid, a, &mut out[n..n + chunk]);
        if got == 0 {
            out[n] = 0;
            // SAFETY: the helper's live ctx (helper contract).
            unsafe {
                count_failed_read(ctx);
                fault(ctx, a as i64)
            };
            return;
        }
        if let Some(z) = out[n..n + got].iter().position(|&c| c == 0) {
            out[n + z] = 0;
            return;
        }
        n += got;
    }
    out[n] = 0;
}

/// `set_user_long/int/char(addr, v)` (guru mode): write `size` bytes of
/// `v` with process_vm_writev on ourselves, which fails instead of faulting
/// on an unmapped or read-only address (an ERR_FAULT error).
///
/// # Safety
/// `ctx` live. Writing target memory is what guru mode asks for.
pub(super) unsafe extern "C" fn user_write(ctx: *mut ProbeCtx, addr: i64, size: i64, v: i64) {
    let n = match size {
        1 | 2 | 4 | 8 => size as usize,
        _ => 8,
    };
    let b = v.to_le_bytes();
    let local = [b.as_ptr() as usize, n];
    let remote = [addr as usize, n];
    // SAFETY: the helper's live ctx (helper contract).
    let pid = unsafe { mem_pid(ctx) };
    // SAFETY: iovecs describe our own buffer and a remote range the kernel checks.
    let r = unsafe {
        sys::syscall6(
            SYS_PROCESS_VM_WRITEV,
            pid as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    if r != n as isize {
        // SAFETY: the helper's live ctx (helper contract).
        unsafe { fault(ctx, addr) };
    }
}

/// A C string of the target as SystemTap's pretty printing shows it
/// (`$p$`, `$$parms$`): quoted, with `\n`, `\t`, `\"`, `\\` and octal
/// escapes; `NULL` for address 0 and `<unknown>` when unreadable (never
/// an error: one bad pointer inside a structure does not end the probe).
/// A string longer than the buffer ends in `...`.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn user_string_quoted(
    ctx: *mut ProbeCtx,
    dst: *mut u8,
    addr: i64,
    cap: i64,
) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: dst valid for cap bytes (contract).
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    let put = |out: &mut [u8], s: &[u8]| {
        let n = s.len().min(out.len() - 1);
        out[..n].copy_from_slice(&s[..n]);
        out[n] = 0;
    };
    if addr == 0 {
        return put(out, b"NULL");
    }
    if cap < 16 {
        return put(out, b"...");
    }
    // SAFETY: the helper's live ctx (helper contract).
    let pid = unsafe { mem_pid(ctx) };
    // Room for the quotes, `...` and the NUL.
    let limit = cap.saturating_sub(6);
    let mut n = 0;
    out[n] = b'"';
    n += 1;
    let mut a = addr as u64;
    let mut done = false;
    while !done {
        let mut chunk = [0u8; 64];
        let want = (4096 - (a & 4095) as usize).min(chunk.len());
        let got = read_pid(pid, a, &mut chunk[..want]);
        if got == 0 {
            if a == addr as u64 {
                return put(out, b"<unknown>");
            }
            break;
        }
        for &c in &chunk[..got] {
            if c == 0 {
                done = true;
                break;
            }
            let mut esc = [0u8; 4];
            let e: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\t' => b"\\t",
                b'\r' => b"\\r",
                0x20..=0x7e => {
                    esc[0] = c;
                    &esc[..1]
                }
                _ => {
                    esc = [
                        b'\\',
                        b'0' + (c >> 6),
                        b'0' + ((c >> 3) & 7),
                        b'0' + (c & 7),
                    ];
                    &esc
                }
            };
            if n + e.len() > limit {
                out[n..n + 3].copy_from_slice(b"...");
                n += 3;
                done = true;
                break;
            }
            out[n..n + e.len()].copy_from_slice(e);
            n += e.len();
        }
        a = a.wrapping_add(got as u64);
    }
    if n < cap - 1 {
        out[n] = b'"';
        n += 1;
    }
    out[n.min(cap - 1)] = 0;
}

/// printf's `%m` / `%M` (and sprintf's): `n` bytes of target memory at
/// `addr`, written to `dst` as hex text (two digits a byte, NUL-terminated),
/// which the formatter prints raw (`%m`) or as it is (`%M`): the bytes
/// travel as text because the output records and string buffers hold
/// NUL-terminated strings. More bytes than `dst` holds (`(cap - 1) / 2`,
/// MAXSTRINGLEN / 2) is an error, as is a fault.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn user_hex(
    ctx: *mut ProbeCtx,
    dst: *mut u8,
    addr: i64,
    n: i64,
    cap: i64,
) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: dst valid for cap bytes (contract).
    let out = unsafe { core::slice::from_raw_parts_mut(dst, cap) };
    out[0] = 0;
    let n = usize::try_from(n).unwrap_or(0);
    if n > (cap - 1) / 2 {
        // SAFETY: the helper's live ctx (helper contract).
        unsafe {
            super::h_out::error(
                ctx,
                c"%m/%M reads at most MAXSTRINGLEN / 2 bytes (raise it with -D MAXSTRINGLEN=N)"
                    .as_ptr() as *const u8,
            )
        };
        return;
    }
    // The raw bytes go in the buffer's upper half, the hex digits from its
    // start: digit pair i (bytes 2i, 2i + 1) never overtakes byte
    // (cap - 1 - n) + i, which is read before it is overwritten.
    let raw_at = cap - 1 - n;
    // SAFETY: the helper's live ctx (helper contract).
    let pid = unsafe { mem_pid(ctx) };
    let mut got = 0;
    while got < n {
        let a = (addr as u64).wrapping_add(got as u64);
        let chunk = ((4096 - (a & 4095)) as usize).min(n - got);
        let r = read_pid(pid, a, &mut out[raw_at + got..raw_at + got + chunk]);
        if r == 0 {
            // SAFETY: the helper's live ctx (helper contract).
            unsafe {
                count_failed_read(ctx);
                fault(ctx, a as i64)
            };
            return;
        }
        got += r;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..n {
        let b = out[raw_at + i];
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out[2 * n] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_safe_writes() {
        let mut ctx = ProbeCtx::new(
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            10,
        );
        let mut v: i64 = 0;
        // SAFETY: ctx live; v is ours.
        unsafe {
            user_write(&mut ctx, &mut v as *mut i64 as i64, 4, -2);
            assert_eq!((v, ctx.error), (0xffff_fffe, 0));
            user_write(&mut ctx, 8, 8, 1);
            assert_eq!(ctx.error, ERR_FAULT);
        }
    }

    #[test]
    fn fault_safe_reads() {
        let mut ctx = ProbeCtx::new(
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            10,
        );
        let v: i64 = -7;
        // SAFETY: ctx is live.
        unsafe {
            assert_eq!(user_read(&mut ctx, &v as *const i64 as i64, 8), -7);
            assert_eq!(ctx.error, 0);
            assert_eq!(user_read(&mut ctx, 8, 8), 0);
            assert_eq!(ctx.error, ERR_FAULT);
            assert_eq!(ctx.error_arg, 8);
            ctx.error = 0;
            let mut d = [0xffu8; 16];
            user_string(
                &mut ctx,
                d.as_mut_ptr(),
                c"hi there".as_ptr() as i64,
                100,
                16,
            );
            assert_eq!(&d[..9], b"hi there\0");
            user_string(&mut ctx, d.as_mut_ptr(), c"hi there".as_ptr() as i64, 2, 16);
            assert_eq!(&d[..3], b"hi\0");
            assert_eq!(ctx.error, 0);
        }
    }

    #[test]
    fn quoted_strings_never_fail() {
        let mut ctx = ProbeCtx::new(
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            10,
        );
        let text = |d: &[u8]| {
            let n = d.iter().position(|&c| c == 0).unwrap();
            String::from_utf8_lossy(&d[..n]).into_owned()
        };
        let mut d = [0xffu8; 32];
        // SAFETY: ctx live; d has 32 bytes; the strings are NUL-terminated.
        unsafe {
            user_string_quoted(&mut ctx, d.as_mut_ptr(), c"a\"b\n\x01".as_ptr() as i64, 32);
            assert_eq!(text(&d), r#""a\"b\n\001""#);
            user_string_quoted(&mut ctx, d.as_mut_ptr(), 0, 32);
            assert_eq!(text(&d), "NULL");
            user_string_quoted(&mut ctx, d.as_mut_ptr(), 8, 32);
            assert_eq!(text(&d), "<unknown>");
            let long = c"0123456789012345678901234567890123456789";
            user_string_quoted(&mut ctx, d.as_mut_ptr(), long.as_ptr() as i64, 32);
            assert_eq!(text(&d), "\"0123456789012345678901234...\"");
            assert_eq!(ctx.error, 0);
        }
    }
}
