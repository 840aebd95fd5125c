//! The REPL's control channel: the set of probe modules a session wants
//! loaded, kept by ptap in a table inside the session's globals area, and
//! applied by every process of the session.
//!
//! ptap (the only writer of the table's desired state) puts the table at
//! offset `Header::repl` of the globals area, writes the directory holding
//! the module files once, then for each change fills a [`Slot`] (module id,
//! state), bumps `gen` and wakes the processes' control threads (a
//! FUTEX_WAKE on the session's `detach` word, which `ptap-ctl` waits on).
//! Each process compares the table with what it has loaded
//! ([`poll`]): it loads `DIR/repl-ID.o` for a slot that is on and not
//! loaded here, unloads (live unpatching, then the module's code is freed
//! after a grace period) a module whose slot is off, free or reused, and
//! then writes `gen` into its entry of `acks` (the index of its pid in the
//! session's pid table). ptap waits until every live process of the
//! session has acknowledged. A process that joins later (an exec'ed
//! program, a fork) applies the table when its runtime starts, before
//! `main`.
//!
//! What a process writes back is numbers only (acknowledged generation,
//! hit counts, placements, failures), which ptap reads with plain bounded
//! loads: a target cannot make ptap read out of bounds. What the runtime
//! reads from the table (the directory, ids, states) is bounded and
//! checked the same way.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::attach::{self, Attached, Extra, Role};
use super::globals::Globals;
use super::{modules, process_hooks};
use crate::session::MAX_PIDS;

pub const MAGIC: u64 = 0x5054_4150_5245_504c; // "PTAPREPL"
/// Modules a session can have loaded at once (deleted ones free their slot).
pub const MAX_MODULES: usize = 256;
/// Bytes of the module directory (NUL-terminated).
pub const DIR_LEN: usize = 256;

/// Slot states.
pub const FREE: u32 = 0;
pub const ON: u32 = 1;
pub const OFF: u32 = 2;

/// One module of the session.
#[repr(C)]
pub struct Slot {
    /// Module id (> 0 while the slot is used): the file is `DIR/repl-ID.o`.
    pub id: AtomicU32,
    /// [`FREE`], [`ON`] (loaded in every process) or [`OFF`] (unloaded,
    /// kept by ptap to be turned on again).
    pub state: AtomicU32,
    /// Handler runs of the module's probes, all processes.
    pub hits: AtomicU64,
    /// Session-wide number of the module's first probe.
    pub probe_base: AtomicU32,
    /// Processes that could not arm the module (the reason went to the
    /// output ring as a diagnostic).
    pub failed: AtomicU32,
    /// Processes that armed it, and the sites they placed on the jump
    /// path, on the trap path, and the system-call probes (sums).
    pub armed: AtomicU32,
    pub jump: AtomicU32,
    pub trap: AtomicU32,
    pub sys: AtomicU32,
}

#[repr(C)]
pub struct Table {
    pub magic: AtomicU64,
    /// Bumped by ptap after each change of `slots`.
    pub gen: AtomicU64,
    /// Generation applied by the process at the same index of the
    /// session's pid table.
    pub acks: [AtomicU64; MAX_PIDS],
    /// Directory of the module files, NUL-terminated (written once by ptap
    /// before any process starts).
    pub dir: [u8; DIR_LEN],
    pub slots: [Slot; MAX_MODULES],
}

/// Bytes the table takes in the globals area.
pub const TABLE_SIZE: usize = core::mem::size_of::<Table>().div_ceil(64) * 64;

impl Table {
    /// The table of a globals area, if it has one (and the area, whose
    /// mapped length is `mapped` bytes from `g`, holds it).
    pub fn of(g: &Globals, mapped: usize) -> Option<&Table> {
        let off = g.header().repl.load(Ordering::Acquire) as usize;
        if off == 0 || !off.is_multiple_of(64) || off.checked_add(TABLE_SIZE)? > mapped {
            return None;
        }
        // SAFETY: inside the mapping (checked above), 64-aligned; the table
        // is atomics and bytes, valid for any bit pattern.
        let t = unsafe { &*(g.base().add(off) as *const Table) };
        (t.magic.load(Ordering::Acquire) == MAGIC).then_some(t)
    }

    /// Initialise a zeroed table at `off` of `g` (ptap).
    ///
    /// # Safety
    /// `g` must be mapped for at least `off + TABLE_SIZE` bytes; `off` 64-aligned.
    pub unsafe fn init<'a>(g: &'a Globals, off: usize, dir: &str) -> &'a Table {
        // SAFETY: caller contract.
        let t = unsafe { &*(g.base().add(off) as *const Table) };
        let d = dir.as_bytes();
        let n = d.len().min(DIR_LEN - 1);
        // SAFETY: ptap writes the directory once, before any process reads it.
        unsafe {
            let p = t.dir.as_ptr() as *mut u8;
            core::ptr::copy_nonoverlapping(d.as_ptr(), p, n);
            *p.add(n) = 0;
        }
        t.magic.store(MAGIC, Ordering::Release);
        g.header().repl.store(off as u64, Ordering::Release);
        t
    }

    fn dir(&self) -> Option<String> {
        let mut b = [0u8; DIR_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            // SAFETY: DIR_LEN bytes inside the table; volatile: shared memory.
            *x = unsafe { core::ptr::read_volatile(self.dir.as_ptr().add(i)) };
        }
        let n = b.iter().position(|&c| c == 0)?;
        std::str::from_utf8(&b[..n]).ok().map(str::to_string)
    }
}

/// What this process has loaded: per table slot, the module id and its
/// registration.
struct Local {
    applied: u64,
    loaded: Vec<Option<(u32, Attached)>>,
    role: Role,
}

static LOCAL: Mutex<Local> = Mutex::new(Local {
    applied: 0,
    loaded: Vec::new(),
    role: Role::Target,
});

static WARM: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

static FORK_LOCAL: crate::base::forklock::MutexSlot<Local> =
    crate::base::forklock::MutexSlot::new(&LOCAL);

/// [`LOCAL`] for the fork handlers (`crate::base::forklock`).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_LOCAL
}

fn table() -> Option<(&'static Table, Globals)> {
    let g = modules::session_globals()?;
    let s = crate::session::output::session()?;
    let start = g.base() as usize - s.base() as usize;
    let mapped = crate::session::output::SESSION_LEN
        .load(Ordering::Acquire)
        .checked_sub(start)?;
    let t = Table::of(&g, mapped)?;
    // SAFETY: the session mapping is never unmapped.
    let t: &'static Table = unsafe { &*(t as *const Table) };
    Some((t, g))
}

/// At the runtime's start (before `main` under `-c`): remember the
/// process's role and apply the table (a REPL session's probes arm in a
/// process that joins it, as a script's do).
pub fn start(role: Role) {
    if let Ok(mut l) = LOCAL.lock() {
        l.role = role;
    }
    apply_table();
}

/// Apply the table if it changed, then acknowledge. Called by the
/// control thread each time it wakes. Never panics.
pub fn poll() {
    if table().is_none() {
        return;
    }
    if !WARM.swap(true, Ordering::AcqRel) {
        // A REPL session: build the symbol index now, on the control
        // thread, rather than when the first probe is typed.
        let _ = crate::proc::symbols::get_or_build();
    }
    apply_table();
}

fn apply_table() {
    let Some((t, g)) = table() else { return };
    let Ok(mut l) = LOCAL.lock() else { return };
    let gen = t.gen.load(Ordering::Acquire);
    if gen != l.applied {
        apply(t, &g, &mut l);
        l.applied = gen;
    }
    ack(t, l.applied);
}

fn ack(t: &Table, gen: u64) {
    let Some(s) = crate::session::output::session() else {
        return;
    };
    let me = crate::base::sys::getpid();
    for (i, p) in s.control().pids.iter().enumerate() {
        if p.load(Ordering::Acquire) == me {
            t.acks[i].store(gen, Ordering::Release);
        }
    }
}

fn apply(t: &Table, g: &Globals, l: &mut Local) {
    if l.loaded.len() < MAX_MODULES {
        l.loaded.resize_with(MAX_MODULES, || None);
    }
    // Unload first: what goes away, then what comes.
    for (i, slot) in t.slots.iter().enumerate() {
        let (id, state) = (
            slot.id.load(Ordering::Acquire),
            slot.state.load(Ordering::Acquire),
        );
        let keep = matches!(&l.loaded[i], Some((have, _)) if *have == id && state == ON);
        if !keep {
            if let Some((_, a)) = l.loaded[i].take() {
                modules::retire_missed(&a);
                a.unload();
            }
        }
    }
    let Some(dir) = t.dir() else { return };
    for (i, slot) in t.slots.iter().enumerate() {
        let (id, state) = (
            slot.id.load(Ordering::Acquire),
            slot.state.load(Ordering::Acquire),
        );
        if id == 0 || state != ON || l.loaded[i].is_some() {
            continue;
        }
        let t0 = std::time::Instant::now();
        match load_one(&dir, id, slot, g, l.role) {
            Ok(a) => {
                if crate::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
                    crate::session::output::diag(
                        format!(
                            "ptap: pid {}: module {id} armed in {:.2?}\n",
                            crate::base::sys::getpid(),
                            t0.elapsed()
                        )
                        .as_bytes(),
                    );
                }
                let (j, tr, sy) = a.placements();
                slot.jump.fetch_add(j, Ordering::Relaxed);
                slot.trap.fetch_add(tr, Ordering::Relaxed);
                slot.sys.fetch_add(sy, Ordering::Relaxed);
                slot.armed.fetch_add(1, Ordering::Release);
                l.loaded[i] = Some((id, a));
            }
            Err(e) => {
                slot.failed.fetch_add(1, Ordering::Release);
                crate::session::output::diag(
                    format!("ptap: pid {}: {e}\n", crate::base::sys::getpid()).as_bytes(),
                );
            }
        }
    }
}

fn load_one(dir: &str, id: u32, slot: &Slot, g: &Globals, role: Role) -> Result<Attached, String> {
    let path = format!("{dir}/repl-{id}.o");
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let module = super::load::load(&bytes).map_err(|e| format!("{path}: {e}"))?;
    if module.meta.globals_size > g.header().size.load(Ordering::Acquire) {
        return Err(format!("{path}: its globals do not fit the session's area"));
    }
    let session = crate::session::output::session().map_or(core::ptr::null_mut(), |s| s.base());
    let extra = Extra {
        hits: &slot.hits,
        probe_base: slot.probe_base.load(Ordering::Acquire),
    };
    let (a, skipped) =
        attach::attach_in(module, g.base(), session, role, extra).map_err(|e| e.to_string())?;
    if role == Role::Target {
        modules::warn_left_out(&skipped);
    }
    Ok(a)
}

/// What the modules loaded here missed (see [`attach::missed`]); (0, 0)
/// while the table is being applied (the counts only grow: the next call
/// has them).
pub(crate) fn missed() -> (u64, u64) {
    let Ok(l) = LOCAL.try_lock() else {
        return (0, 0);
    };
    l.loaded.iter().flatten().fold((0, 0), |(n, m), (_, a)| {
        let (an, am) = a.missed();
        (n + an, m + am)
    })
}

/// Call `f` on every REPL module loaded here (skipped while the table is
/// being applied).
pub(crate) fn each_loaded(mut f: impl FnMut(&attach::Attached)) {
    if let Some(l) = process_hooks::lock_briefly(&LOCAL) {
        for (_, a) in l.loaded.iter().flatten() {
            f(a);
        }
    }
}

/// At shutdown (detach, exit): the modules' registrations go with
/// `crate::kprobes::register::unregister_all`; forget them here (their code stays mapped:
/// a thread may be returning through one).
pub fn forget_all() {
    if let Ok(mut l) = LOCAL.try_lock() {
        for x in l.loaded.iter_mut() {
            if let Some((_, a)) = x.take() {
                modules::retire_missed(&a);
                a.detach();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_found_only_inside_the_mapping_and_with_its_magic() {
        let size = super::super::globals::HEADER_SIZE + TABLE_SIZE;
        let mut mem = vec![0u64; size / 8];
        // SAFETY: mem is 8-aligned and outlives g.
        let g = unsafe { Globals::from_raw(mem.as_mut_ptr() as *mut u8) };
        g.init(size as u64, 0);
        assert!(Table::of(&g, size).is_none(), "no table announced");
        // SAFETY: the area holds the table at HEADER_SIZE.
        let t = unsafe { Table::init(&g, super::super::globals::HEADER_SIZE, "/tmp/x") };
        assert_eq!(t.dir().as_deref(), Some("/tmp/x"));
        assert!(Table::of(&g, size).is_some());
        assert!(Table::of(&g, size - 1).is_none(), "past the mapping");
        g.header().repl.store(72, Ordering::Relaxed);
        assert!(Table::of(&g, size).is_none(), "misaligned");
        g.header().repl.store(u64::MAX - 63, Ordering::Relaxed);
        assert!(Table::of(&g, size).is_none(), "overflowing offset");
        g.header()
            .repl
            .store(super::super::globals::HEADER_SIZE as u64, Ordering::Relaxed);
        t.magic.store(0, Ordering::Relaxed);
        assert!(Table::of(&g, size).is_none(), "no magic");
    }
}
