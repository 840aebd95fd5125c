//! `process.begin` / `process.end`: the handlers that run when a process of
//! the session has its probes armed (start, fork, exec, attach) and when it
//! exits through `exit()`.

use core::ffi::c_int;
use core::sync::atomic::Ordering;

use super::fire::{fire, Env};
use super::meta::ModuleSpec;
use super::modules::LIVE;
use super::resolve::module_matches;
use crate::abi::PtRegs;
use crate::proc::symbols;

/// Does `module` (a `process("PATH")` filter) name this process's program?
pub(super) fn this_program_is(module: &Option<ModuleSpec>) -> bool {
    if module.is_none() {
        return true;
    }
    module_matches(&symbols::exe_path(), module)
}

/// Run one `process.begin`/`.end` handler on this thread, outside any probe
/// hit: no registers (the point offers none), the handler reentrancy rule
/// and the fault guard as for a hit. Skipped inside a handler.
pub(super) fn run_process_point(env: &Env) {
    let Some(ts) = crate::hit::threads::current() else {
        return;
    };
    // SAFETY: a zeroed PtRegs is a valid value (plain integers).
    let mut regs: PtRegs = unsafe { core::mem::zeroed() };
    // SAFETY: ts is this thread's slot; `enter`/`leave` pair around the
    // call; `process_point` is a C function of two pointers.
    unsafe {
        // Not inside a probe handler; inside the runtime's own work (the
        // module's attach, the exit path) is where these run.
        if (*ts).in_handler > (*ts).own_work {
            return;
        }
        (*ts).in_handler += 1;
        crate::hit::threads::enter(ts);
        let r = crate::hit::asm::guarded(
            ts,
            process_point as unsafe extern "C" fn(_, _) -> _ as usize,
            env as *const Env as usize,
            &mut regs as *mut PtRegs as usize,
            0,
        );
        crate::hit::threads::leave(ts);
        (*ts).in_handler -= 1;
        if r.is_none() {
            crate::session::output::diag(
                b"ptap: a process.begin/.end handler faulted and was aborted\n",
            );
        }
    }
}

/// Address of the glue process.begin/.end handlers are called through.
pub(super) fn process_point_addr() -> usize {
    process_point as unsafe extern "C" fn(_, _) -> _ as usize
}

unsafe extern "C" fn process_point(env: *const Env, regs: *mut PtRegs) -> c_int {
    // SAFETY: env is a live Env of an attached module; regs is the caller's.
    unsafe { fire(&*env, regs, core::ptr::null_mut(), (*env).handler) };
    0
}

/// Has a module attached here `process.begin`/`.end` points? (The fork
/// and exit hooks do nothing otherwise.)
pub(super) static PROCESS_POINTS: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// `process.end` handlers of every module attached here: this process is
/// exiting (`exit()`, a return from main). Not on the hit path.
pub fn process_exiting() {
    run_process_hooks(false);
}

/// `m`, waiting up to 100 ms for another thread (the control thread
/// publishing counts) to let go of it; None past that (never blocks for
/// good: the holder may be a thread a forked child lacks).
pub(crate) fn lock_briefly<T>(m: &std::sync::Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    for _ in 0..200 {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => crate::base::sys::sleep_us(500),
        }
    }
    None
}

/// A forked child is a new process: `process.begin` handlers run in it.
pub fn process_forked() {
    run_process_hooks(true);
}

/// The `process.begin` (`begin`) or `process.end` handlers of the script
/// module and of the REPL's modules, if any module has such points. A list
/// another thread holds for over 100 ms is skipped.
pub(super) fn run_process_hooks(begin: bool) {
    if !PROCESS_POINTS.load(Ordering::Acquire) {
        return;
    }
    if let Some(live) = lock_briefly(&LIVE) {
        for a in live.iter() {
            a.run_process_points(begin);
        }
    }
    super::control::each_loaded(|a| a.run_process_points(begin));
}
