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
use std::ffi::CString;

use super::ctx::{Handler, ProbeCtx, SyscallName, ABI_SYSCALL, ABI_SYSV};
use super::globals::Globals;
use super::load::LoadedModule;
use super::meta::{ModuleSpec, PointKind, TargetSpec};
use crate::abi::{Kprobe, Kretprobe, KretprobeInstance, PtRegs};
use crate::hit::sigsys::probes::SyscallProbe;
use crate::proc::symbols;
use crate::syscall::ProbeId;

/// What a trampoline needs to call a handler.
struct Env {
    handler: Handler,
    entry: Option<Handler>,
    probe: u32,
    point: u32,
    /// `ABI_SYSV` or `ABI_SYSCALL`.
    abi: u32,
    pp: Box<[u8]>,
    /// `probefunc()`.
    func: Box<[u8]>,
    /// `syscall_name()` table; its names point into `_names`.
    syscalls: Box<[SyscallName]>,
    _names: Names,
    globals: *mut u8,
    session: *mut u8,
    maxaction: i64,
    maxerrors: u64,
    /// A REPL module's hit counter in the session (NULL: not counted).
    hits: *const core::sync::atomic::AtomicU64,
}

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

#[repr(C)]
struct ScriptKprobe {
    kp: Kprobe,
    env: Env,
    _name: Option<CString>,
}

#[repr(C)]
struct ScriptKretprobe {
    rp: Kretprobe,
    env: Env,
    _name: Option<CString>,
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

unsafe fn fire(env: &Env, regs: *mut PtRegs, entry: *mut i64, h: Handler) {
    if !env.hits.is_null() {
        // SAFETY: a counter in the session mapping, which is never unmapped.
        unsafe { (*env.hits).fetch_add(1, Ordering::Relaxed) };
    }
    if !env.globals.is_null() {
        // SAFETY: the session's globals area (validated by attach).
        let g = unsafe { Globals::from_raw(env.globals) };
        if g.header().errors.load(Ordering::Relaxed) > env.maxerrors {
            return;
        }
        // After `exit()` no new handler runs (SystemTap's semantics: the
        // session is stopping); handlers already running finish.
        if g.header().exit.load(Ordering::Acquire) != 0 {
            return;
        }
    }
    let mut ctx = ProbeCtx::new(regs, env.globals, env.session, env.maxaction);
    ctx.probe = env.probe;
    ctx.point = env.point;
    ctx.abi = env.abi;
    ctx.pp = env.pp.as_ptr();
    ctx.pp_len = env.pp.len() as u64;
    ctx.func = env.func.as_ptr();
    ctx.func_len = env.func.len() as u64;
    ctx.syscalls = env.syscalls.as_ptr();
    ctx.nsyscalls = env.syscalls.len() as u64;
    ctx.entry = entry;
    // SAFETY: a handler of the loaded module with a fully initialised ctx.
    unsafe { super::run_handler(h, &mut ctx) };
}

/// Address of the pre_handler every script kprobe uses (the runtime tells
/// compiled-script probes from C ones by it).
pub fn kprobe_pre_addr() -> usize {
    kprobe_pre as unsafe extern "C" fn(_, _) -> _ as usize
}

unsafe extern "C" fn kprobe_pre(kp: *mut Kprobe, regs: *mut PtRegs) -> c_int {
    // SAFETY: kp is the first field of a ScriptKprobe registered by attach.
    let env = unsafe { &(*(kp as *mut ScriptKprobe)).env };
    // SAFETY: regs is the live register frame.
    unsafe { fire(env, regs, core::ptr::null_mut(), env.handler) };
    0
}

fn instance_data(ri: *mut KretprobeInstance) -> *mut i64 {
    // SAFETY: data[] follows the instance header (runtime/src/abi.rs).
    unsafe { ri.add(1) as *mut i64 }
}

unsafe fn ret_env<'a>(ri: *mut KretprobeInstance) -> &'a Env {
    // SAFETY: ri.rp is the first field of a ScriptKretprobe registered by attach.
    unsafe { &(*((*ri).rp as *mut ScriptKretprobe)).env }
}

unsafe extern "C" fn kretprobe_ret(ri: *mut KretprobeInstance, regs: *mut PtRegs) -> c_int {
    // SAFETY: live instance and registers.
    unsafe {
        let env = ret_env(ri);
        fire(env, regs, instance_data(ri), env.handler);
    }
    0
}

unsafe extern "C" fn kretprobe_entry(ri: *mut KretprobeInstance, regs: *mut PtRegs) -> c_int {
    // SAFETY: live instance and registers.
    unsafe {
        let env = ret_env(ri);
        if let Some(h) = env.entry {
            fire(env, regs, instance_data(ri), h);
        }
    }
    0
}

unsafe extern "C" fn syscall_hit(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int {
    // SAFETY: data is the leaked Env registered with this probe.
    let env = unsafe { &*((*p).data as *const Env) };
    // SAFETY: regs is the live register frame of the call.
    unsafe { fire(env, regs, core::ptr::null_mut(), env.handler) };
    0
}

/// Entry of a system-call return probe with `@entry`: the module's entry
/// handler writes the values into this call's scratch.
unsafe extern "C" fn syscall_entry_hit(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int {
    // SAFETY: data is the leaked Env registered with this probe.
    let env = unsafe { &*((*p).data as *const Env) };
    let scratch = crate::syscall::call_data() as *mut i64;
    if let (Some(h), false) = (env.entry, scratch.is_null()) {
        // SAFETY: regs is the live frame; scratch holds CALL_DATA_SIZE bytes
        // (attach checked the entry values fit).
        unsafe { fire(env, regs, scratch, h) };
    }
    0
}

/// Return of a system-call probe with `@entry`: the values saved at the
/// entry of this call. Without scratch (a ninth probe on one call) the
/// handler cannot run: counted as a miss.
unsafe extern "C" fn syscall_ret_hit(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int {
    // SAFETY: data is the leaked Env registered with this probe.
    let env = unsafe { &*((*p).data as *const Env) };
    let scratch = crate::syscall::call_data() as *mut i64;
    if scratch.is_null() {
        // SAFETY: p is live; nmissed is an aligned unsigned long.
        unsafe {
            (*(core::ptr::addr_of_mut!((*p).nmissed) as *const core::sync::atomic::AtomicU64))
                .fetch_add(1, Ordering::Relaxed);
        }
        return 0;
    }
    // SAFETY: as above.
    unsafe { fire(env, regs, scratch, env.handler) };
    0
}

/// The wildcard matcher (shared with ptap).
pub use crate::proc::names::glob;

/// Does a `lib:` qualifier name the object at `path`? (`libc` matches
/// libc.so.6.) ptap uses it too.
pub fn module_matches(path: &str, m: &Option<ModuleSpec>) -> bool {
    match m {
        None => true,
        Some(ModuleSpec::Path(p)) => path == p,
        Some(ModuleSpec::Name(n)) => {
            let base = path.rsplit('/').next().unwrap_or(path);
            base == n
                || base
                    .strip_prefix(n.as_str())
                    .is_some_and(|r| r.starts_with(['.', '-']))
        }
    }
}

/// Where a point is: a symbol name (+offset), an absolute address, or
/// the address of a function selected by its demangled name or a wildcard
/// (with the name to show).
enum Site {
    Name(CString, u32),
    Addr(u64),
    Func(u64, String),
}

/// The name `probefunc()` gives for a site.
fn func_name(site: &Site, target: &TargetSpec) -> Vec<u8> {
    match (site, target) {
        (Site::Name(..), TargetSpec::Symbol { name, .. }) => crate::proc::names::demangle(name)
            .unwrap_or_else(|| name.clone())
            .into_bytes(),
        (Site::Func(_, name), _) => name.as_bytes().to_vec(),
        (Site::Addr(a), _) => {
            let idx = symbols::get_or_build();
            symbols::containing_at(idx, *a)
                .map(|(o, i)| {
                    o.demangle_all();
                    o.display_name(i).as_bytes().to_vec()
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Owned names backing a `SyscallName` table.
type Names = Box<[Box<[u8]>]>;

fn syscall_table(target: &TargetSpec) -> (Box<[SyscallName]>, Names) {
    let TargetSpec::Syscall { calls, .. } = target else {
        return (Box::new([]), Box::new([]));
    };
    let names: Names = calls.iter().map(|(n, _)| n.as_bytes().into()).collect();
    let table = calls
        .iter()
        .zip(names.iter())
        .map(|((_, nr), n)| SyscallName {
            nr: u64::from(*nr),
            name: n.as_ptr(),
            len: n.len() as u64,
        })
        .collect();
    (table, names)
}

/// The sites of a point. `entry_kind`: "kretprobe" or "jprobe" for
/// points that need a function entry (not a `.cold` fragment).
fn sites(target: &TargetSpec, entry_kind: Option<&str>) -> Result<Vec<Site>, String> {
    let refuse = |sym: &str| match entry_kind {
        Some(k) => crate::proc::names::entry_refusal(sym, k).map_or(Ok(()), Err),
        None => Ok(()),
    };
    match target {
        TargetSpec::Symbol {
            module,
            name,
            offset,
        } => {
            let full = match module {
                None => name.clone(),
                Some(ModuleSpec::Name(m) | ModuleSpec::Path(m)) => format!("{m}:{name}"),
            };
            let off = u32::try_from(*offset).map_err(|_| "offset too large".to_string())?;
            let c = CString::new(full.clone())
                .map_err(|_| "symbol name with a NUL byte".to_string())?;
            // The symbol itself (the probe layer looks it up again), else
            // the functions whose demangled name it is (crate::proc::names).
            if let Some(f) = crate::proc::symcache::lookup(&full) {
                refuse(name)?;
                demangle_object_of(f.addr);
                return Ok(vec![Site::Name(c, off)]);
            }
            let idx = symbols::get_or_build();
            let accept = |o: &symbols::Obj| module_matches(&o.path, module);
            let sel = symbols::select_demangled(idx, &accept, module.is_some(), name)?;
            if sel.is_empty() {
                // Not found: the probe layer says so.
                return Ok(vec![Site::Name(c, off)]);
            }
            Ok(sel
                .into_iter()
                .map(|s| {
                    demangle_object_of(s.addr);
                    Site::Func(s.addr + u64::from(off), s.display)
                })
                .collect())
        }
        // Not code: `attach_in` takes these points before asking for sites.
        TargetSpec::Process { .. } => Ok(Vec::new()),
        TargetSpec::Address(a) => {
            let idx = symbols::get_or_build();
            let main = idx
                .objs
                .iter()
                .find(|o| o.is_main)
                .ok_or("no main executable found")?;
            let at = main.bias + a;
            if let Some((o, i)) = symbols::containing_at(idx, at) {
                if o.syms[i].addr == at {
                    refuse(o.syms[i].name)?;
                }
            }
            demangle_object_of(at);
            Ok(vec![Site::Addr(at)])
        }
        TargetSpec::Pattern { module, pattern } => {
            let idx = symbols::get_or_build();
            let accept = |o: &symbols::Obj| module_matches(&o.path, module);
            let sel = symbols::select_pattern(idx, &accept, pattern);
            if sel.is_empty() {
                return Err(format!("no function matches `{pattern}`"));
            }
            Ok(sel
                .into_iter()
                .map(|s| {
                    demangle_object_of(s.addr);
                    Site::Func(s.addr, s.display)
                })
                .collect())
        }
        TargetSpec::Syscall { .. } => Err("system-call points register as syscall probes".into()),
        TargetSpec::None => Err("not a probe of the target".into()),
    }
}

/// Demangle the names of the object holding a probe site, so that
/// backtraces and `usymname()` through it show demangled names (done once
/// per object, at registration; never on the hit path).
fn demangle_object_of(addr: u64) {
    let idx = symbols::get_or_build();
    if let Some(o) = symbols::object_of(idx, addr) {
        if !o.is_runtime {
            o.demangle_all();
        }
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
                        crate::kprobes::register::set_known_pre_handler(kprobe_pre_addr());
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

/// Does `module` (a `process("PATH")` filter) name this process's program?
fn this_program_is(module: &Option<ModuleSpec>) -> bool {
    if module.is_none() {
        return true;
    }
    module_matches(&symbols::exe_path(), module)
}

/// Run one `process.begin`/`.end` handler on this thread, outside any probe
/// hit: no registers (the point offers none), the handler reentrancy rule
/// and the fault guard as for a hit. Skipped inside a handler.
fn run_process_point(env: &Env) {
    let Some(ts) = crate::hit::threads::current() else {
        return;
    };
    // SAFETY: a zeroed PtRegs is a valid value (plain integers).
    let mut regs: PtRegs = unsafe { core::mem::zeroed() };
    // SAFETY: ts is this thread's slot; `enter`/`leave` pair around the
    // call; `process_point` is a C function of two pointers.
    unsafe {
        if (*ts).in_handler != 0 {
            return;
        }
        (*ts).in_handler = 1;
        crate::hit::threads::enter(ts);
        let r = crate::hit::asm::guarded(
            ts,
            process_point as unsafe extern "C" fn(_, _) -> _ as usize,
            env as *const Env as usize,
            &mut regs as *mut PtRegs as usize,
            0,
        );
        crate::hit::threads::leave(ts);
        (*ts).in_handler = 0;
        if r.is_none() {
            crate::session::output::diag(
                b"ptap: a process.begin/.end handler faulted and was aborted\n",
            );
        }
    }
}

unsafe extern "C" fn process_point(env: *const Env, regs: *mut PtRegs) -> c_int {
    // SAFETY: env is a live Env of an attached module; regs is the caller's.
    unsafe { fire(&*env, regs, core::ptr::null_mut(), (*env).handler) };
    0
}

/// Has a module attached here `process.begin`/`.end` points? (The fork
/// and exit hooks do nothing otherwise.)
static PROCESS_POINTS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

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
fn run_process_hooks(begin: bool) {
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
    if role == Role::Target && !skipped.is_empty() {
        // Never silent: wildcard sites the probe layer refused.
        let mut msg = String::new();
        for e in &skipped {
            msg.push_str(&format!(
                "WARNING: {}: left out {} (the other matches are armed)\n",
                e.point, e.reason
            ));
        }
        crate::session::output::diag(msg.as_bytes());
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

/// Modules attached by [`attach_file_as`] in this process (never freed).
static LIVE: std::sync::Mutex<Vec<Attached>> = std::sync::Mutex::new(Vec::new());

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
