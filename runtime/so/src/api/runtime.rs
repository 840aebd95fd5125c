//! `runtime/include/ptap/runtime.h`: helpers for compiled script handlers
//! and C modules, hit-path safe.

use core::ffi::c_char;
use core::sync::atomic::{AtomicU8, Ordering};

use ptap_rt_core::base::peek;
use ptap_rt_core::base::sys;
use ptap_rt_core::session::output;
use ptap_rt_core::session::{Part, REC_FORMAT, REC_TEXT};

/// `ptap_probe_read`: see [`peek::read`].
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_probe_read(dst: *mut u8, src: u64, len: usize) -> i32 {
    // SAFETY: the caller's contract, passed on.
    unsafe { peek::read(dst, src, len) }
}

/// `ptap_probe_read_str`: see [`peek::read_str`].
///
/// # Safety
/// `dst` must be valid for `max` bytes of writes, max >= 1.
#[no_mangle]
pub unsafe extern "C" fn ptap_probe_read_str(dst: *mut u8, src: u64, max: usize) -> i64 {
    // SAFETY: the caller's contract, passed on.
    unsafe { peek::read_str(dst, src, max) }
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

/// Number of probe hits and runtime traps so far (for tests and ptap -v).
/// # Safety
/// `hits` and `traps` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_stats(hits: *mut u64, traps: *mut u64) {
    use core::sync::atomic::Ordering;
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !hits.is_null() {
            *hits = ptap_rt_core::hit::dispatch::HITS.load(Ordering::Relaxed);
        }
        if !traps.is_null() {
            *traps = ptap_rt_core::hit::dispatch::TRAPS.load(Ordering::Relaxed);
        }
    }
}

/// `void ptap_rt_site_count(int on)`: start (non-zero: the count restarts
/// at 0) or stop counting reads of the runtime's site table (for tests: an
/// int3 is dispatched with exactly one).
#[no_mangle]
pub extern "C" fn ptap_rt_site_count(on: core::ffi::c_int) {
    ptap_rt_core::hit::site::count_lookups(on != 0);
}

/// Site-table reads counted so far, and int3 traps of moved libc system call
/// sites sent on (for tests).
/// # Safety
/// `lookups` and `syscall_int3` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_site_stats(lookups: *mut u64, syscall_int3: *mut u64) {
    use core::sync::atomic::Ordering;
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !lookups.is_null() {
            *lookups = ptap_rt_core::hit::site::lookups();
        }
        if !syscall_int3.is_null() {
            *syscall_int3 = ptap_rt_core::hit::sigsys::hooks::INT3_HITS.load(Ordering::Relaxed);
        }
    }
}
