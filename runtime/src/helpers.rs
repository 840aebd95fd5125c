//! Helpers for compiled script handlers (and C modules): hit-path safe,
//! exported with a C ABI and declared in `ptap/runtime.h`.

use core::ffi::c_char;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::session::{Part, REC_FORMAT, REC_TEXT};
use crate::{output, sys};

/// Copy `len` bytes of this process's memory at `src` to `dst` without ever
/// faulting (process_vm_readv on ourselves). Returns 0, or -EFAULT if any
/// byte was unreadable (dst may then be partly written).
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_probe_read(dst: *mut u8, src: u64, len: usize) -> i32 {
    if len == 0 {
        return 0;
    }
    let local = [dst as usize, len];
    let remote = [src as usize, len];
    // SAFETY: the kernel validates `remote`; `local` is the caller's buffer.
    let r = unsafe {
        sys::syscall6(
            310,
            sys::getpid() as usize,
            local.as_ptr() as usize,
            1,
            remote.as_ptr() as usize,
            1,
            0,
        )
    };
    if r == len as isize {
        0
    } else {
        -14
    }
}

/// Copy a NUL-terminated string from `src` (at most `max - 1` bytes, always
/// NUL-terminating `dst`). Stops at the first unreadable byte. Returns the
/// string length copied, or -EFAULT if nothing was readable.
///
/// # Safety
/// `dst` must be valid for `max` bytes of writes, max >= 1.
#[no_mangle]
pub unsafe extern "C" fn ptap_probe_read_str(dst: *mut u8, src: u64, max: usize) -> i64 {
    if max == 0 || dst.is_null() {
        return -22;
    }
    let mut n = 0usize;
    while n + 1 < max {
        // Read up to the end of the current page at once.
        let addr = src + n as u64;
        let chunk = ((4096 - (addr & 4095)) as usize).min(max - 1 - n);
        // SAFETY: dst has room for chunk bytes at n (n + chunk <= max - 1).
        if unsafe { ptap_probe_read(dst.add(n), addr, chunk) } != 0 {
            if n == 0 {
                // SAFETY: max >= 1.
                unsafe { *dst = 0 };
                return -14;
            }
            break;
        }
        // SAFETY: just written.
        let part = unsafe { core::slice::from_raw_parts(dst.add(n), chunk) };
        if let Some(z) = part.iter().position(|&b| b == 0) {
            return (n + z) as i64;
        }
        n += chunk;
    }
    // SAFETY: n <= max - 1.
    unsafe { *dst.add(n) = 0 };
    n as i64
}

/// Write `len` bytes as one text record to ptap's output. Returns 0, or -1
/// if the ring was full or `buf` was not readable (the record is counted as
/// lost). Never faults: the bytes are copied with `process_vm_readv`.
///
/// # Safety
/// None beyond the C ABI: an unreadable `buf` is reported, not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ptap_write(buf: *const u8, len: usize) -> i32 {
    let p = [Part::Untrusted {
        addr: buf as u64,
        len,
    }];
    if output::record_parts(REC_TEXT, &p) {
        0
    } else {
        -1
    }
}

/// Emit a binary record for ptap to format: `u32 fmt_id, u32 n, u64 args[n]`
/// (little endian). Returns 0, or -1 if the ring was full or `args` was not
/// readable (never faults).
///
/// # Safety
/// None beyond the C ABI: an unreadable `args` is reported, not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ptap_emit(fmt_id: u32, args: *const u64, n: u32) -> i32 {
    let mut hb = [0u8; 8];
    hb[..4].copy_from_slice(&fmt_id.to_le_bytes());
    hb[4..].copy_from_slice(&n.to_le_bytes());
    let p = [
        Part::Bytes(&hb),
        Part::Untrusted {
            addr: args as u64,
            len: n as usize * 8,
        },
    ];
    if output::record_parts(REC_FORMAT, &p) {
        0
    } else {
        -1
    }
}

#[no_mangle]
pub extern "C" fn ptap_tid() -> i32 {
    sys::gettid()
}

#[no_mangle]
pub extern "C" fn ptap_pid() -> i32 {
    sys::getpid()
}

static EXECNAME: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];

/// Record the process name (called at init, on the main thread).
pub fn init_execname() {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    for (d, s) in EXECNAME.iter().zip(buf) {
        d.store(s, Ordering::Relaxed);
    }
}

/// The process name (comm of the main thread at start), NUL-terminated in
/// `dst` (at most `max` bytes including the NUL). Returns its length.
///
/// # Safety
/// `dst` must be valid for `max` bytes.
#[no_mangle]
pub unsafe extern "C" fn ptap_execname(dst: *mut c_char, max: usize) -> usize {
    if max == 0 {
        return 0;
    }
    let mut n = 0;
    while n + 1 < max && n < 15 {
        let b = EXECNAME[n].load(Ordering::Relaxed);
        if b == 0 {
            break;
        }
        // SAFETY: n < max.
        unsafe { *dst.add(n) = b as c_char };
        n += 1;
    }
    // SAFETY: n < max.
    unsafe { *dst.add(n) = 0 };
    n
}
