//! Registration glue: turns a loaded module's kprobe / jprobe / kretprobe
//! points into registrations with the runtime's Kprobes API, each calling a
//! compiled handler through a small trampoline that builds the
//! [`ProbeCtx`]. begin/end/timer points are ptap's (skipped here).
//!
//! - `kprobe(T)`: a kprobe whose pre_handler runs the handler.
//! - `jprobe(T)`: a kprobe at the function entry (the handler reads the
//!   arguments from the registers; no jprobe mirror is needed for that).
//! - `kretprobe(T)`: a kretprobe; with `@entry`, its entry_handler runs the
//!   module's entry handler, which saves the values in the instance data.
//! - `0xADDR`: a link-time address of the main executable (+ its load bias).
//! - `lib:pat*`: every matching function symbol.
//! - `kprobe(sys_*)` / `kretprobe(sys_*)`: a syscall probe
//!   (`crate::syscall`) with an entry / return handler; `arg1..6` use the
//!   syscall ABI, `ret` is the raw kernel value. `@entry` values live in
//!   the call's scratch (`crate::syscall::call_data`, 64 bytes: 8 numbers).
//!
//! Once the session has seen more than MAXERRORS runtime errors, handlers
//! stop running (ptap ends the session).

use core::ffi::c_int;
use core::sync::atomic::Ordering;

use super::ctx::{ABI_SYSCALL, ABI_SYSV};
use super::fire::{
    kprobe_pre, kprobe_pre_addr, kretprobe_entry, kretprobe_ret, syscall_entry_hit, syscall_hit,
    syscall_ret_hit, Env, ScriptKprobe, ScriptKretprobe,
};
use super::process_hooks::{run_process_point, this_program_is, PROCESS_POINTS};
use super::resolve::{func_name, sites, syscall_table, Site};

use super::load::LoadedModule;
use super::meta::{PointKind, TargetSpec};
/// What ptap shares with the runtime's attach step: the environment variable
/// and exit codes of a session, and how points name objects.
pub use super::modules::{ENV_TARGET, EXIT_ABORT, EXIT_ARM_FAILED};
pub use super::resolve::{glob, module_matches};
use crate::abi::{Kprobe, Kretprobe};
use crate::syscall::ProbeId;

/// How a REPL module is attached (`super::control`): its hit counter in
/// the session and the session-wide number of its first probe (error
/// records name probes by that number).
#[derive(Clone, Copy)]
pub struct Extra {
    pub hits: *const core::sync::atomic::AtomicU64,
    pub probe_base: u32,
}

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            hits: core::ptr::null(),
            probe_base: 0,
        }
    }
}

/// A module whose probes are registered. Dropping it does not unregister:
/// call [`Attached::detach`].
pub struct Attached {
    pub module: LoadedModule,
    kprobes: Vec<*mut ScriptKprobe>,
    kretprobes: Vec<*mut ScriptKretprobe>,
    syscalls: Vec<ProbeId>,
    /// `process.begin` / `process.end` handlers that apply to this process.
    begins: Vec<Env>,
    ends: Vec<Env>,
}

// SAFETY: the registration records are owned by Attached and only read by handlers.
unsafe impl Send for Attached {}

impl Attached {
    /// Run this module's `process.begin` (`begin`) or `process.end` handlers.
    pub fn run_process_points(&self, begin: bool) {
        for e in if begin { &self.begins } else { &self.ends } {
            run_process_point(e);
        }
    }

    /// (hits skipped by reentrancy, kretprobe returns not traced for
    /// want of a free instance) of this module's probes.
    pub fn missed(&self) -> (u64, u64) {
        let (mut nested, mut maxactive) = (0u64, 0u64);
        for &k in &self.kprobes {
            // SAFETY: leaked registration records; a racy read is fine
            // for a report.
            nested += unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*k).kp.nmissed)) };
        }
        for &r in &self.kretprobes {
            // SAFETY: as above.
            unsafe {
                nested += core::ptr::read_volatile(core::ptr::addr_of!((*r).rp.kp.nmissed));
                maxactive +=
                    core::ptr::read_volatile(core::ptr::addr_of!((*r).rp.nmissed)).max(0) as u64;
            }
        }
        (nested, maxactive)
    }

    /// Number of registered probes.
    pub fn count(&self) -> usize {
        self.kprobes.len() + self.kretprobes.len() + self.syscalls.len()
    }

    /// Unregister every probe (waits for running handlers). The records
    /// and the module's code are leaked on purpose: a thread may still be
    /// returning through a kretprobe trampoline that refers to them.
    pub fn detach(mut self) {
        self.detach_partial();
        std::mem::forget(self.module);
    }

    /// Unregister every probe, then free the module's code once no thread
    /// can be inside it (a grace period after the unregistration; if the
    /// grace period times out, or this thread runs a handler, the code is
    /// leaked instead). The registration records stay allocated (a few
    /// hundred bytes per probe): a thread may still return through a
    /// kretprobe trampoline that refers to them. Returns whether the code
    /// was freed.
    pub fn unload(mut self) -> bool {
        self.detach_partial();
        // The unregistrations waited for running handlers already; this
        // second (cheap) grace period is what makes freeing the code safe
        // whatever the probe kind.
        if crate::hit::threads::synchronize() && !crate::hit::threads::current_is_active() {
            drop(self.module);
            true
        } else {
            std::mem::forget(self.module);
            false
        }
    }

    /// (sites on the jump path, sites on the trap path, system-call probes).
    pub fn placements(&self) -> (u32, u32, u32) {
        let (mut jump, mut trap) = (0, 0);
        let addrs = self
            .kprobes
            .iter()
            // SAFETY: registered records; addr was set by the registration.
            .map(|&k| unsafe { (*k).kp.addr } as u64)
            .chain(
                self.kretprobes
                    .iter()
                    // SAFETY: as above.
                    .map(|&r| unsafe { (*r).rp.kp.addr } as u64),
            );
        for a in addrs {
            if crate::kprobes::optimize::is_optimized(a) {
                jump += 1;
            } else {
                trap += 1;
            }
        }
        (jump, trap, self.syscalls.len() as u32)
    }
}

/// Registration failed: which point and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachError {
    pub point: String,
    pub reason: String,
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot register probe {}: {}", self.point, self.reason)
    }
}

/// Which process the module is attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The process ptap started (the -c command): every non-optional point
    /// must register, or nothing stays registered.
    Target,
    /// A process the target exec'ed (e.g. the program `sh -c` runs): it is
    /// not what the points were resolved against, so a point that does not
    /// register here is skipped (and listed), not an error.
    Other,
}

/// Register every target point of `module`. `globals` / `session` are the
/// session's globals area and mapping (NULL: no output, no globals — only
/// for tests). On error nothing stays registered.
pub fn attach(
    module: LoadedModule,
    globals: *mut u8,
    session: *mut u8,
) -> Result<Attached, AttachError> {
    attach_as(module, globals, session, Role::Target).map(|(a, _)| a)
}

/// [`attach`] for a process of the given role. Ok also returns what was
/// left out: in [`Role::Other`] the non-optional points that did not
/// register there; in [`Role::Target`] the sites of wildcards that the
/// probe layer refused (a wildcard with no site armed is an error). Failed
/// registrations are never explained on stderr by the probe layer
/// (`KPROBE_FLAG_QUIET`): the caller reports them; an optional point (`?`)
/// that does not register is silently left out.
pub fn attach_as(
    module: LoadedModule,
    globals: *mut u8,
    session: *mut u8,
    role: Role,
) -> Result<(Attached, Vec<AttachError>), AttachError> {
    attach_in(module, globals, session, role, Extra::default())
}

/// [`attach_as`] for a REPL module ([`Extra`]).
pub fn attach_in(
    module: LoadedModule,
    globals: *mut u8,
    session: *mut u8,
    role: Role,
    extra: Extra,
) -> Result<(Attached, Vec<AttachError>), AttachError> {
    let mut skipped: Vec<AttachError> = Vec::new();
    super::h_ctx::note_exe_bias();
    // Compiled handlers run on the handler stack (their need is bounded by
    // the compiler); the hottest glue first.
    crate::hit::asm::set_stack_glue(&[
        kprobe_pre as unsafe extern "C" fn(_, _) -> _ as usize,
        kretprobe_ret as unsafe extern "C" fn(_, _) -> _ as usize,
        kretprobe_entry as unsafe extern "C" fn(_, _) -> _ as usize,
        syscall_hit as unsafe extern "C" fn(_, _) -> _ as usize,
        syscall_entry_hit as unsafe extern "C" fn(_, _) -> _ as usize,
        syscall_ret_hit as unsafe extern "C" fn(_, _) -> _ as usize,
        super::process_hooks::process_point_addr(),
    ]);
    if module.reads_symbols {
        // Its handlers name addresses or walk stacks: the index must exist
        // before the first hit (the hit path cannot build it), with every
        // object loaded now (`build` keeps an index that is still current).
        let _ = crate::proc::symbols::build();
    }
    let mut a = Attached {
        module,
        kprobes: Vec::new(),
        kretprobes: Vec::new(),
        syscalls: Vec::new(),
        begins: Vec::new(),
        ends: Vec::new(),
    };
    let meta = a.module.meta.clone();
    if !globals.is_null() {
        // The arrays' headers are shared memory: this process checks them
        // against its module's shapes from now on.
        for (off, shape) in meta.array_shapes() {
            super::map::Map::record_shape_at(globals as usize + off as usize, &shape);
        }
    }
    let maxaction = i64::try_from(meta.limits.maxaction).unwrap_or(i64::MAX);
    for (pi, p) in meta.probes.iter().enumerate() {
        let (Some(handler), entry) = (a.module.handler(pi), a.module.entry_handler(pi)) else {
            continue;
        };
        for (qi, pt) in p.points.iter().enumerate() {
            if matches!(
                pt.kind,
                PointKind::Begin | PointKind::End | PointKind::Timer(_)
            ) {
                continue;
            }
            let env = |func: Vec<u8>| {
                let (syscalls, names) = syscall_table(&pt.target);
                Env {
                    handler,
                    entry,
                    probe: extra.probe_base + pi as u32,
                    point: qi as u32,
                    abi: if matches!(pt.target, TargetSpec::Syscall { .. }) {
                        ABI_SYSCALL
                    } else {
                        ABI_SYSV
                    },
                    pp: pt.text.as_bytes().into(),
                    func: func.into(),
                    syscalls,
                    _names: names,
                    globals,
                    session,
                    maxaction,
                    maxerrors: meta.limits.maxerrors,
                    hits: extra.hits,
                }
            };
            let fail = |reason: String| AttachError {
                point: pt.text.clone(),
                reason,
            };
            if let (
                PointKind::ProcessBegin | PointKind::ProcessEnd,
                TargetSpec::Process { module },
            ) = (pt.kind, &pt.target)
            {
                if this_program_is(module) {
                    PROCESS_POINTS.store(true, Ordering::Release);
                    let e = env(Vec::new());
                    if pt.kind == PointKind::ProcessBegin {
                        a.begins.push(e);
                    } else {
                        a.ends.push(e);
                    }
                }
                continue;
            }
            if let TargetSpec::Syscall { calls, .. } = &pt.target {
                let with_entry = p.entry_values > 0 && matches!(pt.kind, PointKind::Kretprobe(_));
                let r = if with_entry
                    && 8 * p.entry_values as usize > crate::hit::sigsys::probes::CALL_DATA_SIZE
                {
                    Err(format!(
                        "`@entry` in a system-call return probe keeps at most {} numbers per call (a string does not fit); save larger values in the entry probe",
                        crate::hit::sigsys::probes::CALL_DATA_SIZE / 8
                    ))
                } else {
                    let nrs: Vec<i32> = calls.iter().map(|c| c.1 as i32).collect();
                    let func = match &pt.target {
                        // The point's name is already `sys_NAME` (or an alias).
                        TargetSpec::Syscall { name, .. } if name.starts_with("sys_") => {
                            name.clone().into_bytes()
                        }
                        TargetSpec::Syscall { name, .. } => format!("sys_{name}").into_bytes(),
                        _ => Vec::new(),
                    };
                    let data = Box::into_raw(Box::new(env(func))) as *mut core::ffi::c_void;
                    let (entry_h, ret_h) = match pt.kind {
                        // `@entry`: the entry handler saves the values in the
                        // call's scratch (`crate::syscall::call_data`), where
                        // the return handler finds them.
                        PointKind::Kretprobe(_) if with_entry => (
                            Some(syscall_entry_hit as crate::hit::sigsys::probes::Handler),
                            Some(syscall_ret_hit as crate::hit::sigsys::probes::Handler),
                        ),
                        PointKind::Kretprobe(_) => (
                            None,
                            Some(syscall_hit as crate::hit::sigsys::probes::Handler),
                        ),
                        _ => (
                            Some(syscall_hit as crate::hit::sigsys::probes::Handler),
                            None,
                        ),
                    };
                    crate::syscall::register_fns(&nrs, entry_h, ret_h, data)
                        .map_err(|e| format!("error {}", -e))
                };
                match r {
                    Ok(id) => a.syscalls.push(id),
                    Err(_) if pt.optional => {}
                    Err(e) if role == Role::Other => skipped.push(fail(e)),
                    Err(e) => {
                        a.detach_partial();
                        return Err(fail(e));
                    }
                }
                continue;
            }
            let entry_kind = match pt.kind {
                PointKind::Kretprobe(_) => Some("kretprobe"),
                PointKind::Jprobe => Some("jprobe"),
                _ => None,
            };
            let list = match sites(&pt.target, entry_kind) {
                Ok(l) => l,
                Err(_) if pt.optional => continue,
                Err(e) if role == Role::Other => {
                    skipped.push(fail(e));
                    continue;
                }
                Err(e) => {
                    a.detach_partial();
                    return Err(fail(e));
                }
            };
            // A wildcard's sites are independent: one the probe layer
            // refuses (an instruction it cannot displace, ...) is left out
            // and listed; only a wildcard with no site armed is an error.
            let is_pattern = matches!(pt.target, TargetSpec::Pattern { .. });
            let (nsites, mut armed, mut first_refusal) = (list.len(), 0usize, None);
            for site in list {
                let func = func_name(&site, &pt.target);
                let (addr, name, off) = match site {
                    Site::Name(c, o) => (core::ptr::null_mut(), Some(c), o),
                    Site::Addr(x) | Site::Func(x, _) => (x as *mut u8, None, 0),
                };
                // SAFETY: Kprobe/Kretprobe are plain C structs; all-zero is their empty value.
                let mut kp: Kprobe = unsafe { core::mem::zeroed() };
                kp.addr = addr;
                kp.symbol_name = name.as_ref().map_or(core::ptr::null(), |c| c.as_ptr());
                kp.offset = off;
                kp.flags = crate::abi::KPROBE_FLAG_QUIET;
                let r = match pt.kind {
                    PointKind::Kretprobe(maxactive) => {
                        // SAFETY: as above.
                        let mut rp: Kretprobe = unsafe { core::mem::zeroed() };
                        rp.kp = kp;
                        rp.handler = Some(kretprobe_ret);
                        rp.entry_handler = entry.map(|_| kretprobe_entry as _);
                        crate::kprobes::known::set_script_kretprobe_handlers(
                            kretprobe_entry as *const () as usize,
                            kretprobe_ret as *const () as usize,
                        );
                        rp.data_size = 8 * p.entry_values as usize;
                        let m = if maxactive > 0 {
                            maxactive
                        } else {
                            meta.limits.kretactive
                        };
                        rp.maxactive = c_int::try_from(m).unwrap_or(0);
                        let b = Box::into_raw(Box::new(ScriptKretprobe {
                            rp,
                            env: env(func.clone()),
                            _name: name,
                        }));
                        // SAFETY: b stays alive (leaked until detach).
                        let r = unsafe {
                            crate::kprobes::register::register_ret(core::ptr::addr_of_mut!((*b).rp))
                        };
                        if r == 0 {
                            a.kretprobes.push(b);
                        }
                        r
                    }
                    _ => {
                        kp.pre_handler = Some(kprobe_pre);
                        crate::kprobes::known::set_script_pre_handler(kprobe_pre_addr());
                        let b = Box::into_raw(Box::new(ScriptKprobe {
                            kp,
                            env: env(func.clone()),
                            _name: name,
                        }));
                        // SAFETY: b stays alive (leaked until detach).
                        let r = unsafe {
                            crate::kprobes::register::register_kp(core::ptr::addr_of_mut!((*b).kp))
                        };
                        if r == 0 {
                            a.kprobes.push(b);
                        }
                        r
                    }
                };
                if r == 0 {
                    armed += 1;
                }
                if r != 0 && !pt.optional {
                    let why = crate::kprobes::register::LAST_ERROR
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default();
                    let why = if why.is_empty() {
                        format!("error {}", -r)
                    } else {
                        why
                    };
                    if role == Role::Other {
                        skipped.push(fail(why));
                        continue;
                    }
                    if is_pattern {
                        let e = fail(format!("{}: {why}", String::from_utf8_lossy(&func)));
                        first_refusal.get_or_insert_with(|| e.reason.clone());
                        skipped.push(e);
                        continue;
                    }
                    a.detach_partial();
                    return Err(fail(why));
                }
            }
            if is_pattern && role == Role::Target && armed == 0 && nsites > 0 && !pt.optional {
                a.detach_partial();
                return Err(fail(format!(
                    "none of the {nsites} matching functions could be probed (first: {})",
                    first_refusal.unwrap_or_default()
                )));
            }
        }
    }
    // Every probe of the module is armed: its `process.begin` handlers run.
    a.run_process_points(true);
    Ok((a, skipped))
}

impl Attached {
    fn detach_partial(&mut self) {
        for k in self.kprobes.drain(..) {
            // SAFETY: registered above.
            unsafe { crate::kprobes::register::unregister_kp(core::ptr::addr_of_mut!((*k).kp)) };
        }
        for r in self.kretprobes.drain(..) {
            // SAFETY: registered above.
            unsafe { crate::kprobes::register::unregister_ret(core::ptr::addr_of_mut!((*r).rp)) };
        }
        for id in self.syscalls.drain(..) {
            crate::syscall::unregister_id(id);
        }
    }
}
