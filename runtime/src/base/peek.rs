//! Reading this process's memory without ever faulting
//! (process_vm_readv on ourselves).

use crate::base::sys;

/// Copy `len` bytes of this process's memory at `src` to `dst` without ever
/// faulting (process_vm_readv on ourselves). Returns 0, or -EFAULT if any
/// byte was unreadable (dst may then be partly written).
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes.
pub unsafe fn read(dst: *mut u8, src: u64, len: usize) -> i32 {
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
pub unsafe fn read_str(dst: *mut u8, src: u64, max: usize) -> i64 {
    if max == 0 || dst.is_null() {
        return -22;
    }
    let mut n = 0usize;
    while n + 1 < max {
        // Read up to the end of the current page at once.
        let addr = src + n as u64;
        let chunk = ((4096 - (addr & 4095)) as usize).min(max - 1 - n);
        // SAFETY: dst has room for chunk bytes at n (n + chunk <= max - 1).
        if unsafe { read(dst.add(n), addr, chunk) } != 0 {
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
