//! How the helpers of [`super::helper_table::HELPERS`] take their
//! arguments: string-buffer capacities as compiled code passes them
//! ([`cap_of`], [`put`]), and the session and globals area a [`ProbeCtx`]
//! points at ([`session_of`], [`globals_of`]). Used on the hit path:
//! nothing here allocates or locks.

use super::ctx::ProbeCtx;
use super::globals::Globals;
use crate::session::Session;

// Capacities arrive as i64 from compiled code; anything odd becomes 0 (no copy).
pub(super) fn cap_of(cap: i64) -> usize {
    usize::try_from(cap).unwrap_or(0)
}

pub(super) const BIG: usize = 1 << 20;

pub(super) fn session_of(ctx: &ProbeCtx) -> Option<Session> {
    // SAFETY: the caller of the handler put a live session (or NULL) there.
    (!ctx.session.is_null()).then(|| unsafe { Session::from_raw(ctx.session) })
}

pub(super) fn globals_of(ctx: &ProbeCtx) -> Option<Globals> {
    // SAFETY: the caller of the handler put the session's globals area (or NULL) there.
    (!ctx.globals.is_null()).then(|| unsafe { Globals::from_raw(ctx.globals) })
}

/// Copy `src` into the string buffer `dst` (`cap` bytes), truncating.
///
/// # Safety
/// `dst` valid for `cap` bytes.
pub(super) unsafe fn put(dst: *mut u8, cap: i64, src: &[u8]) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    let n = src.len().min(cap - 1);
    // SAFETY: caller contract.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst, n);
        *dst.add(n) = 0;
    }
}
