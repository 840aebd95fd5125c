//! What the SIGSYS handler reads of the syscall probes: the registered
//! probes and the numbers they watch (written by `crate::syscall`), and
//! arming a thread for Syscall User Dispatch (also done by the handler, for
//! a new child).

use core::ffi::{c_int, c_uint, c_ulong, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

pub use ptap_arch::regs::PtRegs;

use crate::base::sys;
use crate::hit::sigsys::table;

const ENOSPC: i32 = 28;
const ENOSYS: i32 = 38;

/// `int (*)(struct syscall_probe *, struct pt_regs *)`.
pub type Handler = unsafe extern "C" fn(*mut SyscallProbe, *mut PtRegs) -> c_int;

/// `struct syscall_probe` of `ptap/syscalls.h`, field for field.
#[repr(C)]
pub struct SyscallProbe {
    /// The system call numbers (x86-64) this probe watches.
    pub nrs: *const c_int,
    pub n: c_int,
    pub entry: Option<Handler>,
    pub ret: Option<Handler>,
    /// Hits that ran no handler (reentrancy, thread table full).
    pub nmissed: c_ulong,
    /// SYSCALL_PROBE_DISABLED: registered but its handlers do not run.
    pub flags: c_uint,
    /// For the probe's owner.
    pub data: *mut c_void,
    pub private: [*mut c_void; 2],
}

pub const SYSCALL_PROBE_DISABLED: c_uint = 1;

// The C layout of ptap/syscalls.h (x86-64).
const _: () = assert!(core::mem::size_of::<SyscallProbe>() == 72);

const _: () = assert!(core::mem::offset_of!(SyscallProbe, nmissed) == 32);

const _: () = assert!(core::mem::offset_of!(SyscallProbe, data) == 48);

/// Highest system call number + 1 that can be probed.
pub const MAX_NR: usize = 512;

pub(crate) const WORDS: usize = MAX_NR / 64;

/// Probes registered at once.
pub const MAX_PROBES: usize = 64;

pub(crate) struct Reg {
    pub(crate) probe: AtomicPtr<SyscallProbe>,
    pub(crate) entry: [AtomicU64; WORDS],
    pub(crate) ret: [AtomicU64; WORDS],
}

pub(crate) static REGS: [Reg; MAX_PROBES] = [const {
    Reg {
        probe: AtomicPtr::new(core::ptr::null_mut()),
        entry: [const { AtomicU64::new(0) }; WORDS],
        ret: [const { AtomicU64::new(0) }; WORDS],
    }
}; MAX_PROBES];

/// Union of every registered probe's numbers (the hit path's first test).
pub(crate) static ENTRY_ANY: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

pub(crate) static RET_ANY: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Probes exist and the runtime has not shut down: armed threads trap.
pub(crate) static ON: AtomicBool = AtomicBool::new(false);

/// The runtime shut down (detach or exit): never arm again; each armed
/// thread disarms itself at its next (last) trap.
pub(crate) static SHUT: AtomicBool = AtomicBool::new(false);

/// Follow children (the default). `PTAP_SYSCALL_FOLLOW=0` limits syscall
/// probes to the first process: its forked children are not armed, and
/// processes it execs (which inherit `PTAP_SYSCALL_FOLLOW=0:<first pid>`)
/// never arm.
pub(crate) static FOLLOW: AtomicBool = AtomicBool::new(true);

/// SIGSYS traps taken (every system call of an armed thread).
pub static TRAPS: AtomicU64 = AtomicU64::new(0);

/// Handler invocations (entry + ret).
pub static HITS: AtomicU64 = AtomicU64::new(0);

/// The runtime's executable segment: the dispatch's exempt range.
pub(crate) static EXEMPT_START: AtomicU64 = AtomicU64::new(0);

pub(crate) static EXEMPT_LEN: AtomicU64 = AtomicU64::new(0);

#[inline]
fn bit(words: &[AtomicU64; WORDS], nr: usize) -> bool {
    nr < MAX_NR && words[nr / 64].load(Ordering::Acquire) & (1u64 << (nr % 64)) != 0
}

/// Is `nr` watched at entry / at return by any probe?
#[inline]
pub fn watched(nr: usize) -> (bool, bool) {
    (bit(&ENTRY_ANY, nr), bit(&RET_ANY, nr))
}

/// Visit the live probes watching `nr` (entry or ret), in slot order.
/// Hit path: atomics only.
#[inline]
pub(crate) fn for_each_probe(nr: usize, at_ret: bool, mut f: impl FnMut(usize, *mut SyscallProbe)) {
    for (i, r) in REGS.iter().enumerate() {
        let p = r.probe.load(Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        let m = if at_ret { &r.ret } else { &r.entry };
        if bit(m, nr) {
            f(i, p);
        }
    }
}

/// Bytes of per-call scratch a handler gets from [`call_data`].
pub const CALL_DATA_SIZE: usize = 64;

/// Probes of one call that can have scratch (more get NULL).
pub const CALL_DATA_PROBES: usize = 8;

/// si_value of the SIGSYS that asks a thread to arm itself.
pub(crate) const ARM_MAGIC: u64 = 0x7074_6170_5f61_726d; // "ptap_arm"

/// Arm the calling thread (prctl) with its own selector (the exempt range
/// and the SIGSYS handler are in place: see [`arm_slot`]). 0 or -errno.
pub(crate) fn arm_current() -> i32 {
    let Some(s) = table::current() else {
        return -ENOSPC;
    };
    arm_slot(s)
}

pub(crate) fn arm_slot(s: &table::Slot) -> i32 {
    if s.armed.load(Ordering::Acquire) != 0 || SHUT.load(Ordering::Acquire) {
        return 0;
    }
    // The exempt range is found and the SIGSYS handler installed by
    // `crate::syscall::arm_current` before any thread is armed; here (an
    // arming request, a new child of an armed thread) they always are.
    if EXEMPT_LEN.load(Ordering::Acquire) == 0 {
        return -ENOSYS;
    }
    // SIGSYS must never be blocked on an armed thread.
    let unblock = sys::sigbit(crate::base::signo::SIGSYS);
    // SAFETY: unblocking one signal in this thread.
    unsafe { sys::rt_sigprocmask(1, Some(&unblock), None) };
    s.selector.store(
        if ON.load(Ordering::Acquire) {
            table::BLOCK
        } else {
            table::ALLOW
        },
        Ordering::Release,
    );
    // SAFETY: prctl(PR_SET_SYSCALL_USER_DISPATCH, ON, start, len, &selector):
    // the selector lives in the never-freed table.
    let r = unsafe {
        sys::syscall6(
            157,
            59,
            1,
            EXEMPT_START.load(Ordering::Acquire) as usize,
            EXEMPT_LEN.load(Ordering::Acquire) as usize,
            s.selector.as_ptr() as usize,
            0,
        )
    };
    if r != 0 {
        return -ENOSYS;
    }
    s.armed.store(1, Ordering::Release);
    0
}

/// What an armed thread's selector holds outside handlers: BLOCK while
/// probes are on, and after shutdown (so the thread's next call is its last
/// trap, where it turns the dispatch off); ALLOW otherwise.
pub(crate) fn resting_selector() -> u8 {
    if ON.load(Ordering::Acquire) || SHUT.load(Ordering::Acquire) {
        table::BLOCK
    } else {
        table::ALLOW
    }
}

/// The calling thread turns its dispatch off (after shutdown). Hit path.
pub(crate) fn disarm_self(slot: Option<&'static table::Slot>) {
    // SAFETY: prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF) for
    // the calling thread only.
    unsafe { sys::syscall6(157, 59, 0, 0, 0, 0, 0) };
    if let Some(s) = slot {
        s.armed.store(0, Ordering::Release);
        s.selector.store(table::ALLOW, Ordering::Release);
    }
}

/// While alive, the calling thread's system calls are not trapped (runtime
/// work on a target thread, e.g. starting the runtime's own threads, which
/// then are not armed either).
pub struct Untraced {
    slot: Option<&'static table::Slot>,
}

impl Untraced {
    pub fn new() -> Untraced {
        let slot = table::find(sys::gettid()).filter(|s| s.armed.load(Ordering::Acquire) != 0);
        if let Some(s) = slot {
            s.selector.store(table::ALLOW, Ordering::Release);
        }
        Untraced { slot }
    }
}

impl Default for Untraced {
    fn default() -> Self {
        Untraced::new()
    }
}

impl Drop for Untraced {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            s.selector.store(resting_selector(), Ordering::Release);
        }
    }
}
