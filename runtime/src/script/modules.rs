//! The modules attached in this process: attaching one from its file (the
//! runtime's constructor), the list kept for the life of the process, and
//! the hits it did not trace (miss counts, published to ptap and reported
//! at exit).

use core::ffi::c_int;
use core::sync::atomic::Ordering;

use super::attach::{attach_as, Attached, Role};
use super::globals::Globals;

/// The target side of `PTAP_MODULE=NAME.o`: load the module, find the
/// globals area in the session, register every probe. For the runtime's
/// constructor (`loader.rs`); the registration is kept for the life of the
/// process (`crate::kprobes::register::unregister_all` removes it at exit or detach).
pub fn attach_file(path: &str) -> Result<usize, String> {
    attach_file_as(path, Role::Target)
}

/// [`attach_file`] in a process of the given role. With `PTAP_VERBOSE`,
/// says how many probes were armed and how long it took, and (in
/// [`Role::Other`]) which points were left out of this process.
pub fn attach_file_as(path: &str, role: Role) -> Result<usize, String> {
    let t0 = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read module {path}: {e}"))?;
    let module = super::load::load(&bytes).map_err(|e| format!("module {path}: {e}"))?;
    let (globals, session) = match crate::session::output::session() {
        Some(s) => {
            // SAFETY: the globals area follows the ring in the session mapping (ptap sized it).
            let g = unsafe {
                s.base()
                    .add(super::globals::offset_in_session(s.ring_size()))
            };
            // SAFETY: as above; validated by magic before use.
            if !unsafe { Globals::from_raw(g) }.valid() {
                return Err(format!(
                    "module {path}: the session has no globals area (ptap must create it)"
                ));
            }
            (g, s.base())
        }
        None if module.meta.globals.is_empty() => (core::ptr::null_mut(), core::ptr::null_mut()),
        None => {
            return Err(format!(
                "module {path} uses globals but no ptap session is attached"
            ))
        }
    };
    let (a, skipped) = attach_as(module, globals, session, role).map_err(|e| e.to_string())?;
    let n = a.count();
    if crate::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
        let pid = crate::base::sys::getpid();
        let mut msg = format!(
            "ptap: pid {pid}: {n} probe(s) armed in {:.2?}{}\n",
            t0.elapsed(),
            if role == Role::Target {
                " (the target)"
            } else {
                ""
            }
        );
        if crate::proc::symbols::current().is_none() {
            msg.push_str(&format!(
                "ptap: pid {pid}: its points were resolved through the dynamic linker's symbol tables (no symbol index built)\n"
            ));
        }
        let own = crate::hit::threads::OWN_WORK_HITS.load(Ordering::Relaxed);
        if own > 0 {
            msg.push_str(&format!(
                "ptap: pid {pid}: {own} hit(s) while ptap armed probes ran no handler (ptap's own calls, not the target's)\n"
            ));
        }
        if !skipped.is_empty() && role == Role::Other {
            msg.push_str(&format!(
                "ptap: pid {pid}: {} point(s) not armed here (an exec'ed process, not the target):\n",
                skipped.len()
            ));
            for e in &skipped {
                msg.push_str(&format!("ptap:   {}: {}\n", e.point, e.reason));
            }
        }
        crate::session::output::diag(msg.as_bytes());
    }
    if role == Role::Target {
        warn_left_out(&skipped);
    }
    // Registered for the life of the process (crate::kprobes::register::unregister_all takes
    // them out); kept here for their miss counts.
    if let Ok(mut live) = LIVE.lock() {
        live.push(a);
    } else {
        std::mem::forget(a);
    }
    Ok(n)
}

/// Never silent: one warning a wildcard site the probe layer refused in the
/// target (the other matches are armed).
pub(super) fn warn_left_out(skipped: &[super::attach::AttachError]) {
    if skipped.is_empty() {
        return;
    }
    let mut msg = String::new();
    for e in skipped {
        msg.push_str(&format!(
            "WARNING: {}: left out {} (the other matches are armed)\n",
            e.point, e.reason
        ));
    }
    crate::session::output::diag(msg.as_bytes());
}

/// Modules attached by [`attach_file_as`] in this process (never freed).
pub(super) static LIVE: std::sync::Mutex<Vec<Attached>> = std::sync::Mutex::new(Vec::new());

static FORK_LIVE: crate::base::forklock::MutexSlot<Vec<Attached>> =
    crate::base::forklock::MutexSlot::new(&LIVE);

/// [`LIVE`] for the fork handlers (`crate::base::forklock`).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_LIVE
}

/// Hits this process did not trace: (hits skipped because a handler was
/// already running on the thread — reentrancy —, kretprobe returns not
/// traced because all `maxactive` instances were in use), since this
/// process started (a forked child starts from its parent's counts, see
/// [`rebase_missed`]).
pub fn missed() -> (u64, u64) {
    // try_lock: a forked child may inherit the lock held by a thread that
    // does not exist in it.
    let Ok(live) = LIVE.try_lock() else {
        return (0, 0);
    };
    // A REPL session's modules: those loaded now, and those unloaded.
    let (mut nested, mut maxactive) = super::control::missed();
    nested += GONE_NESTED.load(Ordering::Relaxed);
    maxactive += GONE_MAXACTIVE.load(Ordering::Relaxed);
    for a in live.iter() {
        let (n, m) = a.missed();
        nested += n;
        maxactive += m;
    }
    let (bn, bm) = (
        BASE_NESTED.load(Ordering::Relaxed),
        BASE_MAXACTIVE.load(Ordering::Relaxed),
    );
    (nested.saturating_sub(bn), maxactive.saturating_sub(bm))
}

/// What unloaded modules (a REPL session's) had missed: kept in the
/// process's counts ([`retire_missed`]).
static GONE_NESTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static GONE_MAXACTIVE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Module `a` goes (unloaded, detached): its misses stay counted.
pub(crate) fn retire_missed(a: &Attached) {
    let (n, m) = a.missed();
    GONE_NESTED.fetch_add(n, Ordering::Relaxed);
    GONE_MAXACTIVE.fetch_add(m, Ordering::Relaxed);
}

static BASE_NESTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static BASE_MAXACTIVE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// In a forked child: the counts so far are the parent's to report.
pub fn rebase_missed() {
    crate::hit::unwind::rebase();
    let (n, m) = missed();
    BASE_NESTED.fetch_add(n, Ordering::Relaxed);
    BASE_MAXACTIVE.fetch_add(m, Ordering::Relaxed);
    // Nothing of the child's own is in the session yet.
    PUBLISHED_NESTED.store(0, Ordering::Relaxed);
    PUBLISHED_MAXACTIVE.store(0, Ordering::Relaxed);
}

/// How much of [`missed`] this process has added to the session's counts.
static PUBLISHED_NESTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static PUBLISHED_MAXACTIVE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Add what this process skipped since the last call to the session's
/// counts, so that ptap sees skips while the process runs (MAXSKIPPED stops
/// a session within about a second, not only when a process exits). Called
/// by the runtime's control thread and once more at shutdown; the counts
/// only grow, so `fetch_max` makes concurrent callers add each skip once.
/// Returns the process's totals (reentrancy, maxactive).
pub fn publish_missed() -> (u64, u64) {
    let (nested, maxactive) = missed();
    if let Some(g) = session_globals() {
        crate::hit::unwind::publish(&g.header().unwound);
    }
    if nested == PUBLISHED_NESTED.load(Ordering::Acquire)
        && maxactive == PUBLISHED_MAXACTIVE.load(Ordering::Acquire)
    {
        return (nested, maxactive); // nothing new
    }
    let Some(g) = session_globals() else {
        return (nested, maxactive);
    };
    let dn = nested.saturating_sub(PUBLISHED_NESTED.fetch_max(nested, Ordering::AcqRel));
    let dm = maxactive.saturating_sub(PUBLISHED_MAXACTIVE.fetch_max(maxactive, Ordering::AcqRel));
    if dn + dm > 0 {
        g.add_missed(dm, dn);
    }
    (nested, maxactive)
}

/// The session's globals area, if this process is in a ptap session.
pub(crate) fn session_globals() -> Option<Globals> {
    let s = crate::session::output::session()?;
    // A `ptap load` session has no globals area: never read past the ring.
    let at = super::globals::offset_in_session(s.ring_size());
    if crate::session::output::SESSION_LEN.load(Ordering::Acquire)
        < at + super::globals::HEADER_SIZE
    {
        return None;
    }
    // SAFETY: the globals area follows the ring in the session mapping
    // (ptap sized it); checked by magic.
    let g = unsafe {
        Globals::from_raw(
            s.base()
                .add(super::globals::offset_in_session(s.ring_size())),
        )
    };
    g.valid().then_some(g)
}

/// At shutdown (once per process): add what this process did not trace
/// to the session's counts, which ptap prints in its end-of-run summary
/// (`WARNING: Number of errors: N, skipped probes: M` and the causes).
/// With `PTAP_VERBOSE`, also say it per process.
pub fn report_missed() {
    let (nested, maxactive) = publish_missed();
    if nested + maxactive == 0 {
        return;
    }
    match session_globals() {
        Some(_) => {}
        None => _ = crate::session::output::diag(
            format!(
                "WARNING: {nested} probe hit(s) skipped while a handler was running (reentrancy), {maxactive} kretprobe return(s) not traced (maxactive)\n"
            )
            .as_bytes(),
        ),
    }
    if crate::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
        crate::session::output::diag(
            format!(
                "ptap: pid {}: {nested} hit(s) skipped (reentrancy), {maxactive} kretprobe return(s) not traced (maxactive)\n",
                crate::base::sys::getpid()
            )
            .as_bytes(),
        );
    }
}

/// Environment variable naming the process's role: ptap sets
/// `PTAP_TARGET=1` for the -c command; the runtime there rewrites it to `0`,
/// so that the processes it execs know they are not the target. Absent
/// (the runtime preloaded by hand): the process is the target.
pub const ENV_TARGET: &str = "PTAP_TARGET";

/// Value of the globals header's `exit` word when the target could not arm
/// its probes and stopped before `main` (`exit()` stores 1).
pub const EXIT_ARM_FAILED: u32 = 2;

/// Value of the `exit` word after `abort()`: ptap ends the session at once,
/// without the end probes.
pub const EXIT_ABORT: u32 = 3;

/// The target could not arm its probes: count it as a runtime error and
/// tell ptap (which then ends the session without running the end probes).
pub fn report_failed_start() {
    if let Some(g) = session_globals() {
        g.header().errors.fetch_add(1, Ordering::AcqRel);
        g.header().exit.store(EXIT_ARM_FAILED, Ordering::Release);
    }
}

/// C entry point: a C probe module can host a compiled script
/// (`int init_module(void) { return ptap_script_attach("m.o"); }`).
/// Returns 0, or -EINVAL after writing the reason as a runtime diagnostic.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ptap_script_attach(path: *const core::ffi::c_char) -> c_int {
    if path.is_null() {
        return -crate::kprobes::register::EINVAL;
    }
    // SAFETY: caller contract.
    let p = unsafe { std::ffi::CStr::from_ptr(path) }.to_string_lossy();
    match attach_file(&p) {
        Ok(_) => 0,
        Err(e) => {
            crate::session::output::diag(format!("ptap: {e}\n").as_bytes());
            -crate::kprobes::register::EINVAL
        }
    }
}
