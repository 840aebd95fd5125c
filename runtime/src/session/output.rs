//! Output: `printk` and runtime diagnostics, written as whole records to
//! the session ring (or straight to stderr when no ptap session exists).

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::base::sys;
use crate::fmt::Buf;
use crate::session::{Part, Session, REC_DIAG, REC_TEXT};

static SESSION: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

/// Bytes of the session mapping (0 until mapped). A `ptap load` session
/// (C modules) has no globals area after its ring: readers of that area
/// check this first.
pub static SESSION_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Handler faults when no session exists.
static LOCAL_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Make `base` the session every later record goes to.
///
/// # Safety
/// `base` is a validated session mapping that stays mapped for the life of
/// the process ([`session`] hands it out as a [`Session`]).
pub unsafe fn set_session(base: *mut u8) {
    SESSION.store(base, Ordering::Release);
}

pub fn session() -> Option<Session> {
    let p = SESSION.load(Ordering::Acquire);
    // SAFETY: only a validated, permanently mapped session is ever stored.
    (!p.is_null()).then(|| unsafe { Session::from_raw(p) })
}

/// Write one record (kind REC_TEXT / REC_DIAG / REC_FORMAT). Hit-path safe.
pub fn record(kind: u16, parts: &[&[u8]]) -> bool {
    match session() {
        Some(s) => s.write_record(kind, parts),
        None => {
            let fd = if kind == REC_TEXT { 1 } else { 2 };
            for p in parts {
                sys::write_all(fd, p);
            }
            true
        }
    }
}

/// Write one record whose parts may be caller memory (never faults: an
/// unreadable part loses the record). Hit-path safe.
pub fn record_parts(kind: u16, parts: &[Part<'_>]) -> bool {
    match session() {
        Some(s) => s.write_parts(kind, parts),
        None => {
            let fd = if kind == REC_TEXT { 1 } else { 2 };
            for p in parts {
                match *p {
                    Part::Bytes(b) => sys::write_all(fd, b),
                    // write(2) reads the memory itself: EFAULT, never a fault.
                    Part::Untrusted { addr, len } => {
                        // SAFETY: the kernel validates the buffer.
                        unsafe { sys::syscall3(sys::SYS_WRITE, fd as usize, addr as usize, len) };
                    }
                }
            }
            true
        }
    }
}

pub fn text(b: &[u8]) -> bool {
    record(REC_TEXT, &[b])
}

pub fn diag(b: &[u8]) -> bool {
    record(REC_DIAG, &[b])
}

/// A C module did not load in this process (ptap exits 1).
pub fn count_module_error() {
    if let Some(s) = session() {
        s.control().module_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The C module loaded in this process.
pub fn count_module_load() {
    if let Some(s) = session() {
        s.control().module_loads.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn count_handler_fault() {
    match session() {
        Some(s) => s.control().handler_faults.fetch_add(1, Ordering::Relaxed),
        None => LOCAL_FAULTS.fetch_add(1, Ordering::Relaxed),
    };
}

pub fn push_dec(b: &mut Buf, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend(&tmp[i..]);
}

pub fn push_hex(b: &mut Buf, v: u64) {
    b.extend(b"0x");
    let mut started = false;
    for i in (0..16).rev() {
        let d = ((v >> (i * 4)) & 0xf) as usize;
        if d != 0 || started || i == 0 {
            started = true;
            b.push(b"0123456789abcdef"[d]);
        }
    }
}
