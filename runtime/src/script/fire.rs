//! What runs when a script probe fires: the record each registration
//! carries ([`Env`]), and the pre/entry/return/system-call handlers the
//! Kprobes layer calls, which build the [`ProbeCtx`] and run the module's
//! compiled handler. Hit path: no allocation, no lock.

use core::ffi::c_int;
use core::sync::atomic::Ordering;
use std::ffi::CString;

use super::ctx::{Handler, ProbeCtx, SyscallName};
use super::globals::Globals;
use super::resolve::Names;
use crate::abi::{Kprobe, Kretprobe, KretprobeInstance, PtRegs};
use crate::hit::sigsys::probes::SyscallProbe;

/// What a trampoline needs to call a handler.
pub(super) struct Env {
    pub(super) handler: Handler,
    pub(super) entry: Option<Handler>,
    pub(super) probe: u32,
    pub(super) point: u32,
    /// `ABI_SYSV` or `ABI_SYSCALL`.
    pub(super) abi: u32,
    pub(super) pp: Box<[u8]>,
    /// `probefunc()`.
    pub(super) func: Box<[u8]>,
    /// `syscall_name()` table; its names point into `_names`.
    pub(super) syscalls: Box<[SyscallName]>,
    pub(super) _names: Names,
    pub(super) globals: *mut u8,
    pub(super) session: *mut u8,
    pub(super) maxaction: i64,
    pub(super) maxerrors: u64,
    /// A REPL module's hit counter in the session (NULL: not counted).
    pub(super) hits: *const core::sync::atomic::AtomicU64,
}

#[repr(C)]
pub(super) struct ScriptKprobe {
    pub(super) kp: Kprobe,
    pub(super) env: Env,
    pub(super) _name: Option<CString>,
}

#[repr(C)]
pub(super) struct ScriptKretprobe {
    pub(super) rp: Kretprobe,
    pub(super) env: Env,
    pub(super) _name: Option<CString>,
}

pub(super) unsafe fn fire(env: &Env, regs: *mut PtRegs, entry: *mut i64, h: Handler) {
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

pub(super) unsafe extern "C" fn kprobe_pre(kp: *mut Kprobe, regs: *mut PtRegs) -> c_int {
    // SAFETY: kp is the first field of a ScriptKprobe registered by attach.
    let env = unsafe { &(*(kp as *mut ScriptKprobe)).env };
    // SAFETY: regs is the live register frame.
    unsafe { fire(env, regs, core::ptr::null_mut(), env.handler) };
    0
}

pub(super) fn instance_data(ri: *mut KretprobeInstance) -> *mut i64 {
    // SAFETY: data[] follows the instance header (runtime/src/abi.rs).
    unsafe { ri.add(1) as *mut i64 }
}

pub(super) unsafe fn ret_env<'a>(ri: *mut KretprobeInstance) -> &'a Env {
    // SAFETY: ri.rp is the first field of a ScriptKretprobe registered by attach.
    unsafe { &(*((*ri).rp as *mut ScriptKretprobe)).env }
}

pub(super) unsafe extern "C" fn kretprobe_ret(
    ri: *mut KretprobeInstance,
    regs: *mut PtRegs,
) -> c_int {
    // SAFETY: live instance and registers.
    unsafe {
        let env = ret_env(ri);
        fire(env, regs, instance_data(ri), env.handler);
    }
    0
}

pub(super) unsafe extern "C" fn kretprobe_entry(
    ri: *mut KretprobeInstance,
    regs: *mut PtRegs,
) -> c_int {
    // SAFETY: live instance and registers.
    unsafe {
        let env = ret_env(ri);
        if let Some(h) = env.entry {
            fire(env, regs, instance_data(ri), h);
        }
    }
    0
}

pub(super) unsafe extern "C" fn syscall_hit(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int {
    // SAFETY: data is the leaked Env registered with this probe.
    let env = unsafe { &*((*p).data as *const Env) };
    // SAFETY: regs is the live register frame of the call.
    unsafe { fire(env, regs, core::ptr::null_mut(), env.handler) };
    0
}

/// Entry of a system-call return probe with `@entry`: the module's entry
/// handler writes the values into this call's scratch.
pub(super) unsafe extern "C" fn syscall_entry_hit(
    p: *mut SyscallProbe,
    regs: *mut PtRegs,
) -> c_int {
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
pub(super) unsafe extern "C" fn syscall_ret_hit(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int {
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
