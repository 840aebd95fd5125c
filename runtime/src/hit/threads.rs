//! Per-thread runtime state, in a fixed table preallocated at init.
//!
//! Not `thread_local!`: dynamic TLS in a dlopen'ed or preloaded library can
//! call malloc on first touch, and malloc may be the probed function. The
//! table is keyed by the kernel thread id (raw `gettid`), claimed with a
//! CAS, and slots of dead threads are reclaimed when the table fills up.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use ptap_arch::regs::PtRegs;

use crate::base::sys;

pub const MAX_THREADS: usize = 4096;
/// Bytes of stack saved above sp for a jprobe (MAX_STACK_SIZE of the 2005 Kprobes document).
pub const JPROBE_STACK: usize = 192;

/// Fault-recovery context used by `ptap_rt_guarded_call` (layout used by asm).
#[repr(C)]
pub struct Guard {
    /// rsp inside `ptap_rt_guarded_call` after it saved the callee-saved registers.
    pub saved_rsp: u64, // offset 0
    /// Non-zero while a handler runs under the guard.
    pub active: u32, // offset 8
    /// Set by the fault handler when it aborted the guarded call.
    pub faulted: u32, // offset 12
    pub fault_trapno: u64,
    pub fault_addr: u64,
    pub fault_ip: u64,
}

/// One thread's slot. Cache-line aligned: a slot's last fields (`defer`,
/// written on every jump-path hit) must not share a line with the next
/// slot's `active` (written by another thread on its hits).
#[repr(C, align(64))]
pub struct ThreadState {
    pub tid: AtomicI32,
    /// Depth of runtime activity on this thread (hit in progress, single-step
    /// pending, jprobe entry running). Unregister waits for it.
    pub active: AtomicU32,
    /// Incremented each time `active` drops back to 0.
    pub gen: AtomicU64,
    /// The Kprobes reentrancy rule: a probe hit while this is set runs no handler.
    pub in_handler: u32,
    pub guard: Guard,
    /// Single-step pending: the site whose slot is being stepped.
    pub ss_site: usize,
    pub ss_tf_was_set: bool,
    /// Stack pointer of the context whose displaced instruction is pending.
    pub ss_sp: u64,
    /// jprobe entry running.
    pub jp_site: usize,
    pub jp_regs: PtRegs,
    pub jp_stack: [u8; JPROBE_STACK],
    /// Head of this thread's kretprobe instance stack (LIFO).
    pub kret_head: usize,
    /// The pt_regs of the probed context while a handler runs (dump_stack).
    pub cur_regs: usize,
    /// Depth of jump-path hits in progress: a target signal handler must
    /// not run meanwhile (see `crate::hit::wrap::wrapper`).
    pub defer: u32,
    /// Signals that arrived during a jump-path hit, re-queued and blocked
    /// until it ends (bit `sig - 1`).
    pub deferred: u64,
}

static mut TABLE: *mut ThreadState = core::ptr::null_mut();

/// Map the table (once, at init). Zero pages are materialised on first touch.
pub fn init() -> bool {
    // SAFETY: single-threaded init (constructor), plain anonymous mapping.
    unsafe {
        if !TABLE.is_null() {
            return true;
        }
        let len = MAX_THREADS * core::mem::size_of::<ThreadState>();
        let p = sys::mmap(0, len, 3, 0x22, -1, 0); // RW, MAP_PRIVATE|MAP_ANONYMOUS
        if p < 0 {
            return false;
        }
        TABLE = p as *mut ThreadState;
    }
    true
}

fn table() -> *mut ThreadState {
    // SAFETY: TABLE is written once at init before any reader exists.
    unsafe { TABLE }
}

fn slot(i: usize) -> *mut ThreadState {
    // SAFETY: i < MAX_THREADS and the table is mapped (checked by callers).
    unsafe { table().add(i) }
}

/// Slots ever claimed (bit `i % 64` of word `i / 64` for slot `i`), so that
/// scans visit only those: a process has a few threads and the table 4,096
/// slots, and unregistering 10,000 probes used to scan the whole table for
/// each. A bit is set when its slot is first claimed and stays set.
static USED: [AtomicU64; MAX_THREADS / 64] = [const { AtomicU64::new(0) }; MAX_THREADS / 64];

fn mark_used(s: *mut ThreadState) {
    let i = (s as usize - table() as usize) / core::mem::size_of::<ThreadState>();
    // SeqCst: ordered before this thread's `enter` fence, so a `synchronize`
    // that misses the bit is ordered before that hit (see `enter`).
    USED[i / 64].fetch_or(1 << (i % 64), Ordering::SeqCst);
}

/// Every slot ever claimed, in table order.
fn used_slots() -> impl Iterator<Item = *mut ThreadState> {
    USED.iter().enumerate().flat_map(|(w, word)| {
        let mut bits = word.load(Ordering::SeqCst);
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(slot(w * 64 + b))
        })
    })
}

fn hash(tid: i32) -> usize {
    (tid as u32).wrapping_mul(2_654_435_761) as usize % MAX_THREADS
}

/// Give back the kretprobe instances of a thread that is gone.
fn release_instances(ts: *mut ThreadState) {
    // SAFETY: the slot belongs to a dead thread (or the single-threaded
    // child after fork); instances are never freed.
    unsafe {
        let mut cur = (*ts).kret_head;
        (*ts).kret_head = 0;
        while cur != 0 {
            let h = cur as *mut crate::hit::site::InstHdr;
            cur = (*h).next;
            crate::hit::site::release(h);
        }
    }
}

fn reset(ts: *mut ThreadState) {
    // SAFETY: the slot was just claimed by this thread.
    unsafe {
        (*ts).active.store(0, Ordering::Relaxed);
        (*ts).in_handler = 0;
        (*ts).guard.active = 0;
        (*ts).guard.faulted = 0;
        (*ts).ss_site = 0;
        (*ts).jp_site = 0;
        (*ts).kret_head = 0;
        (*ts).cur_regs = 0;
        (*ts).defer = 0;
        (*ts).deferred = 0;
    }
}

/// This thread's state, claiming a slot on first use. None if the table is
/// full of live threads (the caller then counts a miss).
pub fn current() -> Option<*mut ThreadState> {
    if table().is_null() {
        return None;
    }
    let tid = sys::gettid();
    let h = hash(tid);
    'again: for _ in 0..8 {
        // Our own slot anywhere along the chain (up to its first never-used
        // slot) wins over a swept one (TOMB) met before it.
        let mut free: Option<(*mut ThreadState, i32)> = None;
        for k in 0..MAX_THREADS {
            let s = slot((h + k) % MAX_THREADS);
            // SAFETY: s is inside the table.
            let cur = unsafe { (*s).tid.load(Ordering::Acquire) };
            if cur == tid {
                return Some(s);
            }
            if cur == TOMB && free.is_none() {
                free = Some((s, TOMB));
            }
            if cur == 0 {
                if free.is_none() {
                    free = Some((s, 0));
                }
                break;
            }
        }
        let Some((s, cur)) = free else { break };
        // SAFETY: as above.
        if unsafe {
            (*s).tid
                .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Acquire)
        }
        .is_ok()
        {
            reset(s);
            mark_used(s);
            return Some(s);
        }
        continue 'again;
    }
    // Full: reclaim a slot whose thread is gone.
    for k in 0..MAX_THREADS {
        let s = slot((h + k) % MAX_THREADS);
        // SAFETY: as above.
        let cur = unsafe { (*s).tid.load(Ordering::Acquire) };
        if cur > 0 && !sys::thread_alive(cur) {
            // SAFETY: as above.
            if unsafe {
                (*s).tid
                    .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Acquire)
            }
            .is_ok()
            {
                release_instances(s);
                reset(s);
                return Some(s);
            }
        }
    }
    None
}

/// A slot whose dead thread was swept ([`sweep_dead`]): free for reuse,
/// but not the end of a probe chain.
const TOMB: i32 = -1;
/// A slot being swept.
const SWEEPING: i32 = -2;

/// Give back the kretprobe instances of threads that exited while inside
/// kretprobed functions (raw `SYS_exit`, a cancellation, a thread killed
/// inside one): their slots become reusable. Called periodically by the
/// runtime's control thread (not the hit path). Returns the number of
/// threads swept.
pub fn sweep_dead() -> usize {
    if table().is_null() {
        return 0;
    }
    let mut n = 0;
    for s in used_slots() {
        // SAFETY: inside the table; kret_head is read racily (volatile) and
        // acted upon only after the slot was taken over by CAS.
        let (tid, kret) = unsafe {
            (
                (*s).tid.load(Ordering::Acquire),
                core::ptr::read_volatile(core::ptr::addr_of!((*s).kret_head)),
            )
        };
        if tid <= 0 || kret == 0 || sys::thread_alive(tid) {
            continue;
        }
        // SAFETY: as above.
        if unsafe {
            (*s).tid
                .compare_exchange(tid, SWEEPING, Ordering::AcqRel, Ordering::Acquire)
        }
        .is_err()
        {
            continue;
        }
        release_instances(s);
        reset(s);
        // SAFETY: as above.
        unsafe { (*s).tid.store(TOMB, Ordering::Release) };
        n += 1;
    }
    n
}

/// Enter runtime activity (hit path). Pairs with [`leave`].
#[inline]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // ts always comes from `current()`
pub fn enter(ts: *mut ThreadState) {
    // SAFETY: ts is this thread's slot.
    unsafe {
        let a = (*ts).active.load(Ordering::Relaxed);
        (*ts).active.store(a + 1, Ordering::Relaxed);
    }
    // Pairs with the fence in `synchronize`: either the unregistering thread
    // sees us active, or we see its table update.
    core::sync::atomic::fence(Ordering::SeqCst);
}

#[inline]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // ts always comes from `current()`
pub fn leave(ts: *mut ThreadState) {
    // SAFETY: ts is this thread's slot.
    unsafe {
        let a = (*ts).active.load(Ordering::Relaxed);
        if a == 1 {
            (*ts).gen.fetch_add(1, Ordering::Release);
        }
        (*ts).active.store(a.saturating_sub(1), Ordering::Release);
    }
}

/// Is the calling thread inside the runtime's hit path (e.g. a handler
/// calling unregister)? Does not claim a slot.
pub fn current_is_active() -> bool {
    if table().is_null() {
        return false;
    }
    let tid = sys::gettid();
    let h = hash(tid);
    for k in 0..MAX_THREADS {
        let s = slot((h + k) % MAX_THREADS);
        // SAFETY: inside the table.
        let cur = unsafe { (*s).tid.load(Ordering::Acquire) };
        if cur == tid {
            // SAFETY: as above.
            return unsafe { (*s).active.load(Ordering::Acquire) } > 0;
        }
        if cur == 0 {
            return false;
        }
    }
    false
}

/// Wait until every other thread that was inside the runtime's hit path
/// when this was called has left it (a grace period). Threads that died are
/// skipped. The calling thread is skipped (unregister from a handler).
///
/// Bounded: a thread that stays inside for more than [`GRACE_LIMIT_US`]
/// (a jprobe entry that blocks, a target signal handler that longjmp'ed out
/// of a single-step window) is given up on, and false is returned: the
/// caller must then leak, not free, what it unpublished.
pub fn synchronize() -> bool {
    if table().is_null() {
        return true;
    }
    let mut complete = true;
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = sys::gettid();
    for s in used_slots() {
        // SAFETY: inside the table.
        let (tid, active, gen) = unsafe {
            (
                (*s).tid.load(Ordering::Acquire),
                (*s).active.load(Ordering::Acquire),
                (*s).gen.load(Ordering::Acquire),
            )
        };
        if tid <= 0 || tid == me || active == 0 {
            continue;
        }
        let mut spins = 0u64;
        // Wall time: on a loaded machine a 50 us sleep lasts much longer.
        let t0 = sys::monotonic_ns();
        loop {
            // SAFETY: inside the table.
            let (t2, a2, g2) = unsafe {
                (
                    (*s).tid.load(Ordering::Acquire),
                    (*s).active.load(Ordering::Acquire),
                    (*s).gen.load(Ordering::Acquire),
                )
            };
            if t2 != tid || a2 == 0 || g2 != gen {
                break;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && !sys::thread_alive(tid) {
                break;
            }
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                sys::sleep_us(50);
                if sys::monotonic_ns().saturating_sub(t0) > GRACE_LIMIT_US * 1000 {
                    complete = false;
                    break;
                }
            }
        }
    }
    complete
}

/// How long unregistration waits for one thread to leave a handler.
pub const GRACE_LIMIT_US: u64 = 3_000_000;

/// After fork: only the forking thread exists in the child. Move its state
/// (kretprobe instances on its copied stack) to the child's tid and free the rest.
pub fn after_fork(parent_tid: i32) {
    if table().is_null() {
        return;
    }
    let mut moved: Option<*mut ThreadState> = None;
    for s in used_slots() {
        // SAFETY: inside the table; the child is single-threaded here.
        unsafe {
            let t = (*s).tid.load(Ordering::Relaxed);
            if t == parent_tid && t != 0 {
                moved = Some(s);
            } else if t != 0 {
                // That thread does not exist in the child: free its instances.
                release_instances(s);
                (*s).tid.store(0, Ordering::Relaxed);
            }
        }
    }
    if let Some(src) = moved {
        // Re-key: the slot keeps its contents; it must move to the new tid's
        // probe chain, so copy it into a freshly claimed slot.
        // SAFETY: single-threaded child.
        unsafe {
            let kret = (*src).kret_head;
            (*src).tid.store(0, Ordering::Relaxed);
            if let Some(dst) = current() {
                (*dst).kret_head = kret;
            }
        }
    }
}

/// Visit every claimed slot (registration-time use).
pub fn for_each(mut f: impl FnMut(*mut ThreadState)) {
    if table().is_null() {
        return;
    }
    for s in used_slots() {
        // SAFETY: inside the table.
        if unsafe { (*s).tid.load(Ordering::Acquire) } > 0 {
            f(s);
        }
    }
}
