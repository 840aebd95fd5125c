//! System call probes: observe the target's system calls from inside it.
//!
//! # Mechanism (see docs/syscalls.md for the measurements)
//!
//! **Syscall User Dispatch** (`prctl(PR_SET_SYSCALL_USER_DISPATCH)`), armed
//! per thread. Every armed thread has a selector byte in [`table`]; while it
//! holds BLOCK, each system call the thread makes from outside the runtime's
//! own executable segment (the exempt range) is not run by the kernel but
//! turned into a SIGSYS. The runtime's SIGSYS handler ([`handler`]) runs the
//! entry handlers of the probes watching that number, performs the call
//! itself from the exempt range, with the target's signal mask (so signals,
//! EINTR and SA_RESTART behave as without probes), runs the return handlers
//! and writes the raw result into the interrupted context's rax.
//!
//! * The kernel clears the dispatch on execve and does not pass it to
//!   children made by fork or clone: a program exec'ed without the runtime
//!   runs untouched. Threads and forked children are armed by the SIGSYS
//!   handler itself, which performs clone/clone3/fork/vfork for the target
//!   (see [`handler`]); exec'ed children re-arm through LD_PRELOAD.
//! * When the last probe is unregistered every selector is set to ALLOW
//!   (a later registration flips them back). When the runtime shuts down
//!   (ptap's detach, or the target's exit) each armed thread turns the
//!   dispatch off at its next system call: one last trap, then none.
//! * Only probed calls pay ([`sites`]): the exempt range is libc's text, so
//!   libc's calls do not trap; libc sites of probed numbers (and of the
//!   calls the handler must always see: clone, fork, exit, masks) are moved
//!   out of libc — probed ones take a direct path without a trap. Calls from
//!   outside libc (the executable's inline `syscall`, other libraries) trap
//!   as before. `PTAP_SYSCALL_LIBC=0` restores the first design (exempt
//!   range = the runtime's text: every call of an armed thread traps).
//!   seccomp RET_TRAP would filter by number, but its filters can never be
//!   removed and survive execve, so a child exec'ed without the runtime
//!   would be killed by SIGSYS.
//! * The runtime's own raw system calls (`crate::base::sys`, through a `syscall;
//!   ret` gadget in the exempt range) never trap. Probe handlers run with
//!   the thread's selector at ALLOW, so their system calls are not seen
//!   either.
//! * Arming waits for the runtime's constructor to finish
//!   ([`runtime_ready`]): probes registered from `init_module()` start
//!   firing when the target's `main` is about to run, and the runtime's own
//!   start-up (module loading, its control thread) is not traced.
//!
//! # Rust API (for the compiler's registration glue)
//!
//! ```ignore
//! use ptap_rt_core::syscall::{self, Handler, SyscallProbe};
//! // Handlers get the probe and the syscall-ABI registers:
//! //   entry: regs.di, si, dx, r10, r8, r9 = arguments, orig_ax = number,
//! //          ax = -ENOSYS; changing an argument register changes the call.
//! //   ret:   same, with ax = the raw kernel return (-errno on failure);
//! //          changing ax changes what the target sees.
//! unsafe extern "C" fn on_ret(p: *mut SyscallProbe, regs: *mut PtRegs) -> c_int { 0 }
//! // Owned registration (the runtime keeps the numbers and the struct):
//! let id = crate::syscall::register_fns(&[2, 257, 437, 85], None, Some(on_ret), data)?; // Result<ProbeId, i32 (-errno)>
//! crate::syscall::unregister_id(id);
//! // Inside a handler: per-call scratch shared by entry and return of one
//! // call (CALL_DATA_SIZE = 64 bytes, zeroed when the call traps):
//! let p: *mut u8 = crate::syscall::call_data();
//! // Or with a caller-owned struct, exactly like the C API:
//! // unsafe { crate::syscall::register(p: *mut SyscallProbe) -> i32 }  /  crate::syscall::unregister(p)
//! ```
//!
//! Also: [`arm_all_threads`] (arm threads that already exist, e.g. after
//! an attach; registration after start-up calls it), [`armed_threads`],
//! [`runtime_ready`] / [`shutdown`] / [`Untraced`] (the runtime's hooks), and
//! `PTAP_SYSCALL_FOLLOW=0` in the environment (trace the first process only).
//!
//! The C API is `runtime/include/ptap/syscalls.h`: `struct syscall_probe`,
//! `register_syscall_probe()`, `unregister_syscall_probe()`,
//! `syscall_probe_data()`, `ptap_syscall_stats()`,
//! `ptap_syscall_armed_threads()`.

pub mod cache;
pub mod sites;

use core::ffi::{c_int, c_void};

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub use ptap_arch::regs::PtRegs;

use crate::base::sys;
use crate::hit::sigsys::probes::disarm_self;
use crate::hit::sigsys::probes::resting_selector;
use crate::hit::sigsys::probes::SyscallProbe;
use crate::hit::sigsys::probes::Untraced;
use crate::hit::sigsys::probes::ARM_MAGIC;
use crate::hit::sigsys::probes::FOLLOW;
use crate::hit::sigsys::probes::MAX_NR;
use crate::hit::sigsys::probes::SHUT;
use crate::hit::sigsys::probes::{
    Handler, ENTRY_ANY, EXEMPT_LEN, EXEMPT_START, ON, REGS, RET_ANY, WORDS,
};
use crate::hit::sigsys::{self, table};

/// Registration lock (register/unregister only, never the hit path).
static REG_LOCK: AtomicBool = AtomicBool::new(false);

static FORK_REG_LOCK: crate::base::forklock::FlagSlot =
    crate::base::forklock::FlagSlot::new(&REG_LOCK);

/// The registry lock for the fork handlers (`crate::base::forklock`).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_REG_LOCK
}

/// The runtime's constructor has finished: arming is allowed.
static READY: AtomicBool = AtomicBool::new(false);

static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Environment variable limiting syscall probes to the first process.
pub const ENV_FOLLOW: &str = "PTAP_SYSCALL_FOLLOW";

const EINVAL: i32 = 22;

const EEXIST: i32 = 17;

const ENOSPC: i32 = 28;

const ENOSYS: i32 = 38;

struct Locked;

impl Locked {
    fn take() -> Locked {
        while REG_LOCK
            .compare_exchange_weak(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            sys::sched_yield();
        }
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        REG_LOCK.store(false, Ordering::Release);
    }
}

fn recompute_any() {
    for w in 0..WORDS {
        let (mut e, mut r) = (0u64, 0u64);
        for reg in &REGS {
            if !reg.probe.load(Ordering::Acquire).is_null() {
                e |= reg.entry[w].load(Ordering::Relaxed);
                r |= reg.ret[w].load(Ordering::Relaxed);
            }
        }
        ENTRY_ANY[w].store(e, Ordering::Release);
        RET_ANY[w].store(r, Ordering::Release);
    }
}

fn live_count() -> usize {
    REGS.iter()
        .filter(|r| !r.probe.load(Ordering::Acquire).is_null())
        .count()
}

/// Register a syscall probe. Returns 0 or a negative errno:
/// -EINVAL (NULL probe, NULL/empty `nrs`, a number outside 0..512, no
/// handler), -EEXIST (this struct is already registered), -ENOSPC (64 probes
/// registered), -ENOSYS (the kernel refuses Syscall User Dispatch).
///
/// # Safety
/// `p` must point to a `SyscallProbe` (and `nrs` to `n` ints) that stays
/// valid until [`unregister`] returns.
pub unsafe fn register(p: *mut SyscallProbe) -> i32 {
    if p.is_null() {
        return -EINVAL;
    }
    // SAFETY: caller contract.
    let (nrs, n, entry, ret) = unsafe { ((*p).nrs, (*p).n, (*p).entry, (*p).ret) };
    if nrs.is_null() || n <= 0 || (entry.is_none() && ret.is_none()) {
        return -EINVAL;
    }
    let mut mask = [0u64; WORDS];
    for i in 0..n as usize {
        // SAFETY: caller contract: nrs holds n ints.
        let nr = unsafe { *nrs.add(i) };
        if nr < 0 || nr as usize >= MAX_NR {
            return -EINVAL;
        }
        mask[nr as usize / 64] |= 1u64 << (nr as usize % 64);
    }
    if !table::init() {
        return -ENOSPC;
    }
    {
        let _l = Locked::take();
        if REGS.iter().any(|r| r.probe.load(Ordering::Acquire) == p) {
            return -EEXIST;
        }
        let Some((idx, r)) = REGS
            .iter()
            .enumerate()
            .find(|(_, r)| r.probe.load(Ordering::Acquire).is_null())
        else {
            return -ENOSPC;
        };
        for (w, m) in mask.iter().enumerate() {
            r.entry[w].store(if entry.is_some() { *m } else { 0 }, Ordering::Relaxed);
            r.ret[w].store(if ret.is_some() { *m } else { 0 }, Ordering::Relaxed);
        }
        // SAFETY: caller contract; private[0] is runtime-owned.
        unsafe { (*p).private[0] = (idx + 1) as *mut c_void };
        r.probe.store(p, Ordering::Release);
        recompute_any();
    }
    if READY.load(Ordering::Acquire) && !SHUT.load(Ordering::Acquire) {
        let e = arm_current();
        if e != 0 {
            // SAFETY: p was registered just above.
            unsafe { unregister(p) };
            return e;
        }
        turn_on();
        // Not from inside a syscall probe handler (signal context: the
        // broadcast reads /proc and allocates).
        let in_handler =
            table::find(sys::gettid()).is_some_and(|s| s.in_handler.load(Ordering::Relaxed) != 0);
        if !in_handler {
            sync_sites();
            arm_all_threads();
        }
    }
    0
}

/// Move libc's syscall sites in or out of libc to match the registered
/// probes (see [`sites`]). Not for the hit path, nor signal context.
fn sync_sites() {
    let active = ON.load(Ordering::Acquire) && !SHUT.load(Ordering::Acquire);
    crate::syscall::sites::sync(active);
}

/// Unregister a syscall probe. Once this returns no handler of `p` runs
/// again (a grace period waits for handlers running on other threads).
///
/// # Safety
/// `p` must be NULL or a pointer given to [`register`].
pub unsafe fn unregister(p: *mut SyscallProbe) {
    if p.is_null() {
        return;
    }
    let remaining;
    {
        let _l = Locked::take();
        let Some(r) = REGS.iter().find(|r| r.probe.load(Ordering::Acquire) == p) else {
            return;
        };
        r.probe.store(core::ptr::null_mut(), Ordering::Release);
        recompute_any();
        remaining = live_count();
        // SAFETY: p was registered (caller contract).
        unsafe { (*p).private[0] = core::ptr::null_mut() };
    }
    if remaining == 0 {
        turn_off();
    }
    let in_handler =
        table::find(sys::gettid()).is_some_and(|s| s.in_handler.load(Ordering::Relaxed) != 0);
    if !in_handler {
        sync_sites();
    }
    if !table::synchronize() {
        crate::session::output::diag(
            b"ptap: unregister_syscall_probe: a thread stayed inside syscall probe handlers for 3 s; gave up waiting\n",
        );
    }
}

/// A probe owned by the runtime, made by [`register_fns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeId(usize);

const MAX_OWNED_NRS: usize = MAX_NR;

struct Owned {
    probe: SyscallProbe,
    nrs: [c_int; MAX_OWNED_NRS],
}

/// Register handlers for a list of system call numbers (each at most once); the
/// runtime owns the probe struct (`data` is passed in `probe->data`).
/// Returns the probe's id or a negative errno (see [`register`]).
/// Not for the hit path (allocates).
pub fn register_fns(
    nrs: &[i32],
    entry: Option<Handler>,
    ret: Option<Handler>,
    data: *mut c_void,
) -> Result<ProbeId, i32> {
    if nrs.is_empty() || nrs.len() > MAX_OWNED_NRS {
        return Err(-EINVAL);
    }
    let mut o = Box::new(Owned {
        probe: SyscallProbe {
            nrs: core::ptr::null(),
            n: nrs.len() as c_int,
            entry,
            ret,
            nmissed: 0,
            flags: 0,
            data,
            private: [core::ptr::null_mut(); 2],
        },
        nrs: [0; MAX_OWNED_NRS],
    });
    o.nrs[..nrs.len()].copy_from_slice(nrs);
    o.probe.nrs = o.nrs.as_ptr();
    let raw = Box::into_raw(o);
    // SAFETY: raw is a live, leaked Owned whose nrs point into itself.
    let e = unsafe { register(core::ptr::addr_of_mut!((*raw).probe)) };
    if e != 0 {
        // SAFETY: never registered: we still own it.
        drop(unsafe { Box::from_raw(raw) });
        return Err(e);
    }
    Ok(ProbeId(raw as usize))
}

/// The running handler's per-call scratch: [`CALL_DATA_SIZE`] bytes, zeroed
/// when the call traps, the same at entry and at return of one call for one
/// probe (what a kretprobe's `ri->data` is for a function). NULL outside a
/// syscall probe handler, or for a ninth probe watching the same call.
/// Hit-path safe (one raw gettid).
pub fn call_data() -> *mut u8 {
    match table::find(sys::gettid()) {
        Some(s) => s.call_data.load(Ordering::Relaxed) as *mut u8,
        None => core::ptr::null_mut(),
    }
}

/// Unregister and free a probe made by [`register_fns`].
pub fn unregister_id(id: ProbeId) {
    let raw = id.0 as *mut Owned;
    // SAFETY: id came from register_fns; after unregister (grace period
    // included) nothing references the struct any more.
    unsafe {
        unregister(core::ptr::addr_of_mut!((*raw).probe));
        drop(Box::from_raw(raw));
    }
}

/// The probe struct of an id (to read `nmissed`).
pub fn probe_of(id: ProbeId) -> *const SyscallProbe {
    // SAFETY: field projection on a live Owned.
    unsafe { core::ptr::addr_of!((*(id.0 as *const Owned)).probe) }
}

/// Find the runtime's executable PT_LOAD segment (the exempt range).
fn find_exempt() -> bool {
    if EXEMPT_LEN.load(Ordering::Acquire) != 0 {
        return true;
    }
    // Only when the runtime's start-up found libc before installing its
    // signal handlers (their restorer must lie in the exempt range).
    {
        if let Some((start, len)) = crate::syscall::sites::exempt() {
            EXEMPT_START.store(start, Ordering::Release);
            // The kernel tests the address *after* the syscall instruction.
            EXEMPT_LEN.store(len + 2, Ordering::Release);
            return true;
        }
    }
    let me = sigsys::on_sigsys as *const () as u64;
    let mut found = (0u64, 0u64);
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr hands valid info; data is our (u64, u64, u64).
        unsafe {
            let out = &mut *(data as *mut (u64, u64, u64));
            let base = (*info).dlpi_addr;
            for i in 0..(*info).dlpi_phnum as usize {
                let ph = &*(*info).dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                    let s = base + ph.p_vaddr;
                    let e = s + ph.p_memsz;
                    if out.0 >= s && out.0 < e {
                        out.1 = s;
                        out.2 = e - s;
                        return 1;
                    }
                }
            }
        }
        0
    }
    let mut data = (me, 0u64, 0u64);
    // SAFETY: plain libc iteration (registration time, not the hit path).
    unsafe {
        libc::dl_iterate_phdr(Some(cb), &mut data as *mut (u64, u64, u64) as *mut c_void);
    }
    found.0 = data.1;
    found.1 = data.2;
    if found.1 == 0 {
        return false;
    }
    EXEMPT_START.store(found.0, Ordering::Release);
    // The kernel tests the address *after* the syscall instruction: a
    // syscall ending the segment must still count as inside.
    EXEMPT_LEN.store(found.1 + 2, Ordering::Release);
    true
}

/// Threads whose arming request is deferred (they were blocked in a call
/// that an interrupting handler would turn into EINTR): retried by the
/// runtime's control thread ([`retry_deferred_arming`]). 0 = free.
static DEFERRED: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// System calls that return EINTR after *any* signal handler ran, even
/// with SA_RESTART (signal(7)): an arming request must not interrupt them.
fn eintr_visible(nr: i64, args: &[u64]) -> bool {
    match nr {
        // poll, select, nanosleep, pause, semop, msgsnd, msgrcv,
        // rt_sigtimedwait, rt_sigsuspend, io_getevents, semtimedop,
        // clock_nanosleep, epoll_wait, pselect6, ppoll, epoll_pwait,
        // epoll_pwait2, io_pgetevents
        7 | 23 | 35 | 34 | 65 | 69 | 70 | 128 | 130 | 208 | 220 | 230 | 232 | 270 | 271 | 281
        | 441 | 333 => true,
        // futex: a wait with a timeout (ERESTART_RESTARTBLOCK).
        202 => args.get(3).is_some_and(|&t| t != 0),
        _ => false,
    }
}

/// Is thread `tid` of this process blocked in a call that an arming signal
/// would interrupt with EINTR (see [`eintr_visible`])? Reads
/// /proc/self/task/TID/{stat,syscall}; not for the hit path.
fn blocked_in_eintr_call(tid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    let state = stat
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|c| stat.get(c + 2).copied());
    if !matches!(state, Some(b'S') | Some(b'D')) {
        return false;
    }
    let Ok(sc) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let mut w = sc.split_whitespace();
    let Some(nr) = w.next().and_then(|n| n.parse::<i64>().ok()) else {
        return false; // "running" or "-1 ..." (not in a call)
    };
    let args: Vec<u64> = w
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    eintr_visible(nr, &args)
}

/// Send thread `tid` the SIGSYS that asks it to arm itself. True if sent.
fn ask_to_arm(pid: i32, tid: i32) -> bool {
    // siginfo: signo, errno, code = SI_QUEUE, pid, uid, value.
    let mut info = [0u64; 16];
    info[0] = sigsys::SIGSYS as u64; // si_signo, si_errno = 0
    info[1] = (-1i32) as u32 as u64; // si_code = SI_QUEUE
                                     // SAFETY: getuid takes no arguments.
    let uid = unsafe { sys::syscall3(102, 0, 0, 0) } as u64;
    info[2] = pid as u32 as u64 | (uid << 32);
    info[3] = ARM_MAGIC;
    // SAFETY: rt_tgsigqueueinfo to a thread of this process.
    let r = unsafe {
        sys::syscall6(
            297,
            pid as usize,
            tid as usize,
            sigsys::SIGSYS as usize,
            info.as_ptr() as usize,
            0,
            0,
        )
    };
    r == 0
}

fn is_armed(tid: i32) -> bool {
    table::find(tid).is_some_and(|s| s.armed.load(Ordering::Acquire) != 0)
}

/// Arm every thread of the process that is not armed yet (probes
/// registered after start-up, or a runtime attached to a running process):
/// each gets a SIGSYS carrying [`ARM_MAGIC`] and arms itself in the handler.
/// The runtime's control thread ("ptap-ctl") is skipped. Waits up to 100 ms
/// for the threads to answer (a thread that blocks SIGSYS arms when it
/// unblocks it).
///
/// EINTR: a thread blocked in a call that restarts after a SA_RESTART
/// handler (read, write, wait4, futex without timeout, ...) is asked at
/// once: the call restarts and the target sees nothing. A thread blocked in
/// a call that a handler would end with EINTR whatever SA_RESTART says
/// (nanosleep, poll, epoll_wait, futex with a timeout, ... see
/// [`eintr_visible`]) is not signalled there: it is asked as soon as it is
/// seen outside such a call (polled every millisecond for the first 100 ms,
/// then every 10 ms by the control thread, for up to 64 such threads).
/// What remains: such a thread's system calls between its wake-up and
/// its arming are not seen; without a ptap session (no control thread)
/// or past 64 deferred threads, a thread still blocked after 100 ms is
/// signalled anyway and may see EINTR once.
/// Not for the hit path (reads /proc/self/task).
pub fn arm_all_threads() {
    if SHUT.load(Ordering::Acquire) || !HANDLER_INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let _quiet = Untraced::new();
    let me = sys::gettid();
    let pid = sys::getpid();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut asked: Vec<i32> = Vec::new();
    let mut deferred: Vec<i32> = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        if tid == me || is_armed(tid) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "ptap-ctl" {
            continue;
        }
        if blocked_in_eintr_call(tid) {
            deferred.push(tid);
        } else if ask_to_arm(pid, tid) {
            asked.push(tid);
        }
    }
    for _ in 0..100 {
        deferred.retain(|&t| {
            if !sys::thread_alive(t) || is_armed(t) {
                return false;
            }
            if blocked_in_eintr_call(t) {
                return true;
            }
            if ask_to_arm(pid, t) {
                asked.push(t);
            }
            false
        });
        if deferred.is_empty() && asked.iter().all(|&t| is_armed(t) || !sys::thread_alive(t)) {
            break;
        }
        sys::sleep_us(1000);
    }
    let have_control_thread = crate::session::output::session().is_some();
    if !deferred.is_empty() {
        let _ = sigsys::ARM_DEFERRED.set(arm_if_deferred);
    }
    for t in deferred {
        let parked = have_control_thread
            && DEFERRED.iter().any(|d| {
                d.compare_exchange(0, t, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
        if !parked {
            ask_to_arm(pid, t);
        }
    }
    if DEFERRED.iter().any(|d| d.load(Ordering::Relaxed) != 0) {
        if let Some(s) = crate::session::output::session() {
            // Wake the control thread (a spurious wake-up elsewhere is harmless).
            // SAFETY: the session's detach futex word.
            unsafe { sys::futex_wake(s.control().detach.as_ptr() as *const u32) };
        }
    }
}

/// A deferred thread (see [`arm_all_threads`]) making its first watched
/// call through a moved libc site arms itself there (the direct path asks,
/// through `sigsys::ARM_DEFERRED`): a thread that sleeps most of the time
/// (a loop around `usleep`) was awake too briefly for the control thread's
/// 10 ms polls to catch it, and its calls went unseen for seconds.
fn arm_if_deferred(tid: i32) -> bool {
    let Some(d) = DEFERRED.iter().find(|d| d.load(Ordering::Acquire) == tid) else {
        return false;
    };
    if d.compare_exchange(tid, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    arm_current() == 0
}

/// Control thread: ask the deferred threads (see [`arm_all_threads`]) that
/// are no longer blocked in an EINTR-visible call to arm themselves.
/// Returns true while some remain deferred (call again soon).
pub fn retry_deferred_arming() -> bool {
    if DEFERRED.iter().all(|d| d.load(Ordering::Relaxed) == 0) {
        return false;
    }
    let _quiet = Untraced::new();
    let pid = sys::getpid();
    let shut = SHUT.load(Ordering::Acquire);
    let mut left = false;
    for d in &DEFERRED {
        let t = d.load(Ordering::Acquire);
        if t == 0 {
            continue;
        }
        // compare_exchange: the thread may have armed itself meanwhile (see
        // [`arm_if_deferred`]) and another thread parked in this entry.
        if shut || !sys::thread_alive(t) || is_armed(t) {
            let _ = d.compare_exchange(t, 0, Ordering::AcqRel, Ordering::Acquire);
        } else if blocked_in_eintr_call(t) {
            left = true;
        } else {
            ask_to_arm(pid, t);
            let _ = d.compare_exchange(t, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
    left
}

/// Install the SIGSYS handler (once) with the target's own mask semantics:
/// no extra blocked signals (sa_mask 0) and SA_NODEFER, so the call the
/// handler performs runs with exactly the target's signal mask. (SA_RESTART
/// does not touch trapped calls: their saved rax is the number, never an
/// -ERESTART code.)
/// Arm the calling thread (prctl) with its own selector, finding the exempt
/// range and installing the SIGSYS handler first. 0 or -errno.
pub(crate) fn arm_current() -> i32 {
    let Some(s) = table::current() else {
        return -ENOSPC;
    };
    if s.armed.load(Ordering::Acquire) != 0 || SHUT.load(Ordering::Acquire) {
        return 0;
    }
    if !find_exempt() {
        return -ENOSYS;
    }
    install_handler();
    sigsys::probes::arm_slot(s)
}

fn install_handler() {
    if HANDLER_INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    let act = sys::KSigaction {
        handler: sigsys::on_sigsys as *const () as usize,
        // SA_RESTART: a call interrupted by an arming request restarts.
        flags: sys::SA_SIGINFO | sys::SA_NODEFER | sys::SA_RESTART,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: installing our handler; the target's own SIGSYS action was
    // recorded by crate::lifecycle::install::install (SIGSYS is a managed signal) and is chained.
    unsafe { sys::rt_sigaction(sigsys::SIGSYS, Some(&act), None) };
    // Handlers the target installed before us must not block SIGSYS while
    // they run (a trapped syscall with SIGSYS blocked kills the process).
    for sig in 1..=64 {
        if sig == 9 || sig == 19 || crate::base::signo::managed(sig) {
            continue;
        }
        let mut old = sys::KSigaction::default();
        // SAFETY: query, then rewrite the same action with a narrower mask.
        unsafe {
            if sys::rt_sigaction(sig, None, Some(&mut old)) == 0
                && old.handler > 1
                && old.mask & crate::base::signo::managed_mask() != 0
            {
                old.mask &= !crate::base::signo::managed_mask();
                sys::rt_sigaction(sig, Some(&old), None);
            }
        }
    }
}

fn turn_on() {
    if SHUT.load(Ordering::Acquire) || !READY.load(Ordering::Acquire) {
        return;
    }
    ON.store(true, Ordering::Release);
    table::set_all_selectors(table::BLOCK);
}

fn turn_off() {
    ON.store(false, Ordering::Release);
    table::set_all_selectors(resting_selector());
}

/// Armed threads of this process (the kernel's dispatch is on for them).
pub fn armed_threads() -> usize {
    table::armed_count()
}

/// Hook: the runtime's constructor has finished (module loaded, control
/// thread started). Probes registered so far start firing on this thread
/// (the main thread, about to run `main`) and every thread it creates.
pub fn runtime_ready() {
    if let Ok(v) = std::env::var(ENV_FOLLOW) {
        if let Some(rest) = v.strip_prefix('0') {
            FOLLOW.store(false, Ordering::Release);
            let me = sys::getpid();
            match rest.strip_prefix(':').and_then(|p| p.parse::<i32>().ok()) {
                // A process exec'ed by the first one: never arm.
                Some(first) if first != me => SHUT.store(true, Ordering::Release),
                Some(_) => {}
                None => std::env::set_var(ENV_FOLLOW, format!("0:{me}")),
            }
        }
    }
    READY.store(true, Ordering::Release);
    if SHUT.load(Ordering::Acquire) || live_count() == 0 {
        return;
    }
    if arm_current() == 0 {
        turn_on();
        sync_sites();
    } else {
        crate::session::output::diag(
            b"ptap: syscall probes: Syscall User Dispatch is not available; syscall probes are inactive\n",
        );
    }
}

/// Hook (fork child, after the runtime's locks are usable again): a child
/// that is never armed (PTAP_SYSCALL_FOLLOW=0) puts libc's sites back.
pub fn after_fork_child() {
    if SHUT.load(Ordering::Acquire) {
        crate::syscall::sites::sync(false);
    }
}

/// Hook: the runtime shuts down (detach or exit). No handler runs any more
/// (registered probes stay registered, their owners unregister them), and
/// each armed thread turns the dispatch off at its next system call: one
/// last trap, then none (a thread merely left at ALLOW would still pay
/// about 50 ns per call on the kernel's slow syscall path).
pub fn shutdown() {
    SHUT.store(true, Ordering::Release);
    ON.store(false, Ordering::Release);
    table::set_all_selectors(table::BLOCK);
    // libc's bytes are put back.
    crate::syscall::sites::sync(false);
    if crate::syscall::sites::exempt().is_some() {
        disarm_all_threads();
    }
}

/// After shutdown, with libc as the exempt range, a thread that only calls
/// libc would never take the last trap that turns its dispatch off (and
/// would pay the kernel's slow syscall path, ~30-50 ns per call, for ever):
/// each armed thread is asked, by the SIGSYS arming request (which now
/// disarms), unless it is blocked in a call a handler would end with EINTR
/// (see [`eintr_visible`]): that one turns it off at its next call from
/// outside libc, as before. The calling thread turns its own off. No wait.
fn disarm_all_threads() {
    let me = sys::gettid();
    let pid = sys::getpid();
    let mut tids = [0i32; 256];
    let n = table::armed_tids(&mut tids);
    for &t in &tids[..n] {
        if t == me {
            disarm_self(table::find(me));
        } else if sys::thread_alive(t) && !blocked_in_eintr_call(t) {
            ask_to_arm(pid, t);
        }
    }
}

#[cfg(test)]
mod tests;
