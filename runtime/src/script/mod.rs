//! The runtime side of compiled scripts: the handler context ([`ctx`]), the
//! helper table compiled handlers call ([`helper_table`]), the globals area in
//! the session ([`globals`]), the output record format ([`record`]), the
//! module metadata ([`meta`]).

pub mod attach;
pub mod control;
pub mod ctx;
pub mod fire;
pub mod globals;
mod h_args;
mod h_ctx;
mod h_mem;
mod h_out;
mod h_stack;
mod h_stats;
mod h_str;
pub mod helper_table;
pub mod load;
pub mod map;
mod map_helpers;
pub mod meta;
pub mod modules;
pub mod process_hooks;
pub mod record;
pub mod regex;
pub mod resolve;

use core::sync::atomic::Ordering;

use ctx::{Handler, ProbeCtx, ERR_NEXT, ERR_NONE};
use session::Session;

use crate::session;

/// Call a compiled handler with `ctx`; on a runtime error, write the error
/// record (format id [`record::FMT_ERROR`]) and count it in the globals
/// header. Returns the error code (0: none). Hit-path safe.
///
/// # Safety
/// `h` must be a handler of a module whose globals area `ctx.globals` is,
/// and every pointer in `ctx` must be valid (or NULL where allowed).
#[inline(always)]
pub unsafe fn run_handler(h: Handler, ctx: &mut ProbeCtx) -> u32 {
    // SAFETY: caller contract.
    unsafe { h(ctx) };
    if ctx.error == ERR_NEXT {
        ctx.error = ERR_NONE;
    }
    if ctx.error != ERR_NONE {
        report_error(ctx);
    }
    ctx.error
}

/// Write `ctx`'s error as a record and count it. Out of line: the hit path
/// ([`run_handler`], inlined into every caller) rarely gets here.
#[cold]
#[inline(never)]
pub fn report_error(ctx: &ProbeCtx) {
    if !ctx.globals.is_null() {
        // SAFETY: a non-NULL globals pointer is the session's globals area.
        let g = unsafe { globals::Globals::from_raw(ctx.globals) };
        g.header().errors.fetch_add(1, Ordering::Relaxed);
    }
    if ctx.session.is_null() {
        return;
    }
    // SAFETY: a non-NULL session pointer is a live session mapping.
    let s = unsafe { Session::from_raw(ctx.session) };
    record::write(
        &s,
        record::FMT_ERROR,
        &[
            record::Arg::Long(i64::from(ctx.error)),
            record::Arg::Long(i64::from(ctx.error_loc)),
            record::Arg::Long(i64::from(ctx.probe)),
            record::Arg::Long(i64::from(ctx.point)),
            record::Arg::Long(ctx.error_arg as i64),
            record::Arg::Str(ctx.errmsg()),
        ],
    );
}
