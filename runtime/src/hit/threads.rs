//! Per-thread runtime state, in a fixed table preallocated at init.
//!
//! Not `thread_local!`: dynamic TLS in a dlopen'ed or preloaded library can
//! call malloc on first touch, and malloc may be the probed function. The
//! table is keyed by the kernel thread id (raw `gettid`), claimed with a
//! CAS, and slots of dead threads are reclaimed when the table fills up.
//!
//! # Who may touch a slot
//!
//! A slot belongs to the thread whose tid is in it. Only that thread
//! writes its fields, except:
//! - `tid`, claimed and released with CAS by whoever takes a slot over;
//! - a slot whose thread is dead, taken over by CAS (`current` when the
//!   table is full, `sweep_dead`) and then reset by the new holder;
//! - the forking thread's slot in the child after fork (single-threaded).
//!
//! Other threads only read `tid`, `active`, `gen` (atomics: `synchronize`,
//! `current_is_active`) and `kret_head` (volatile, acted on only after a
//! takeover). No `&`/`&mut` reference to a slot or a field is ever made
//! outside `tid`/`active`/`gen`: every access is a raw place
//! (`(*ts).field`), so that a signal handler that interrupts its own
//! thread on the hit path (a nested hit, the fault handler) and touches the
//! same slot never invalidates a live reference of the interrupted code.
//! A nested handler always finishes before the code it interrupted
//! resumes, so the owning thread's accesses nest (last in, first out).

use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

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
    /// Top of this slot's handler stack ([`HANDLER_STACK`] bytes; 0: none,
    /// handlers then run on the thread's own stack). Mapped when the slot is
    /// first claimed and kept when the slot changes hands.
    pub hstack: u64,
    /// This thread's signal alternate stack as last seen, [lo, hi) (0, 0:
    /// none): a guarded call made on it stays on it ([`on_altstack`]).
    pub alt_lo: u64,
    pub alt_hi: u64,
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
    /// The private kretprobe instance this thread holds (0: none; see
    /// `crate::hit::site::RetRec::take`). Only this thread touches it while it
    /// lives; whoever takes the slot over gives it back.
    pub kret_private: usize,
    /// The pt_regs of the probed context while a handler runs (dump_stack).
    pub cur_regs: usize,
    /// Depth of jump-path hits in progress: a target signal handler must
    /// not run meanwhile (see `crate::hit::wrap::wrapper`).
    pub defer: u32,
    /// Signals that arrived during a jump-path hit, re-queued and blocked
    /// until it ends (bit `sig - 1`).
    pub deferred: u64,
    /// Depth of the runtime's own work on this thread ([`OwnWork`]).
    pub own_work: u32,
}

/// Bytes of the stack each thread's handlers run on (`crate::hit::asm::guarded`
/// switches to it): a handler's string temporaries and its ProbeCtx take
/// kilobytes, which a thread with little stack left (a coroutine, a small
/// thread stack) does not have. Reserved, not committed: a thread whose
/// handlers use 8 KiB of it costs 8 KiB. A guard page lies below it.
pub const HANDLER_STACK: usize = 256 << 10;

/// The guard page below a handler stack.
const PAGE: usize = 4096;

/// The handler stack's first frame starts this far below its page-aligned
/// end: with frames at the same offsets within a page as the target's
/// stack, loads from one and stores to the other falsely alias (4K
/// aliasing); measured: a script kprobe +0.7 ns per hit with the top at a
/// page boundary, +0.4 ns with it here. A multiple of 64 (alignment).
const HANDLER_STACK_SKEW: usize = 0x3c0;

/// Is the caller running on this thread's signal alternate stack (as last
/// seen: [`note_altstack`])? Then a guarded call must not leave it for the
/// handler stack: a fault there would make the kernel deliver the runtime's
/// SA_ONSTACK fault handler at the top of the alternate stack, over the
/// live frames of the signal handler that is running on it.
///
/// # Safety
/// `ts` is this thread's slot.
#[inline(always)]
pub unsafe fn on_altstack(ts: *mut ThreadState) -> bool {
    // SAFETY: contract.
    let (lo, hi) = unsafe { ((*ts).alt_lo, (*ts).alt_hi) };
    if hi == 0 {
        return false;
    }
    let sp: u64;
    // SAFETY: reads rsp.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp >= lo && sp < hi
}

/// Record the alternate stack the kernel reported in the ucontext `uc` of
/// a signal this thread is handling (`uc_stack`: its settings at delivery),
/// so that [`on_altstack`] knows it without a system call. Called by every
/// signal handler of the runtime that may run handlers or target code.
///
/// # Safety
/// `ts` is this thread's slot; `uc` a kernel ucontext of this thread.
pub unsafe fn note_altstack(ts: *mut ThreadState, uc: *mut core::ffi::c_void) {
    // SAFETY: contract.
    unsafe {
        let st = &(*(uc as *const libc::ucontext_t)).uc_stack;
        let (lo, size) = (st.ss_sp as u64, st.ss_size as u64);
        let off = st.ss_flags & 2 != 0 || size == 0; // SS_DISABLE
        (*ts).alt_lo = if off { 0 } else { lo };
        (*ts).alt_hi = if off { 0 } else { lo + size };
    }
}

/// Is `sp` on the handler stack of slot `ts` (its guard page included: a
/// handler that overflowed faults there)?
///
/// # Safety
/// `ts` is a slot of the table.
pub unsafe fn on_handler_stack(ts: *mut ThreadState, sp: u64) -> bool {
    // SAFETY: contract; `hstack` is written once, by the slot's thread.
    let top = unsafe { (*ts).hstack };
    if top == 0 {
        return false;
    }
    let end = top + HANDLER_STACK_SKEW as u64;
    sp < end && sp >= end - (HANDLER_STACK + PAGE) as u64
}

/// Map a handler stack for the slot `ts` if it has none. A raw mmap (the
/// slot is claimed on a thread's first hit, maybe inside malloc). On
/// failure the slot keeps none and handlers use the thread's stack.
fn ensure_handler_stack(ts: *mut ThreadState) {
    // SAFETY: this thread just claimed the slot; only it writes `hstack`.
    if unsafe { (*ts).hstack } != 0 {
        return;
    }
    // PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE.
    // SAFETY: a fresh anonymous mapping; nothing else is touched.
    let p = unsafe { sys::mmap(0, HANDLER_STACK + PAGE, 3, 0x4022, -1, 0) };
    if p < 0 {
        return;
    }
    // The lowest page is the guard: an overflow faults instead of writing
    // into whatever lies below.
    // SAFETY: the first page of the mapping just made.
    unsafe { sys::mprotect(p as usize, PAGE, 0) };
    // SAFETY: as above.
    unsafe { (*ts).hstack = (p as usize + PAGE + HANDLER_STACK - HANDLER_STACK_SKEW) as u64 };
}

/// A slot is claimed: learn its thread's alternate stack (one system call
/// per thread; signals the runtime handles keep it current).
fn learn_altstack(ts: *mut ThreadState) {
    let (lo, hi) = sys::altstack().unwrap_or((0, 0));
    // SAFETY: this thread just claimed the slot.
    unsafe {
        (*ts).alt_lo = lo;
        (*ts).alt_hi = hi;
    }
}

/// Hits that ran no handler because their thread was doing the runtime's
/// own work (all threads; `ptap -v` reports them).
pub static OWN_WORK_HITS: AtomicU64 = AtomicU64::new(0);

/// The runtime's own work on this thread (registering and unregistering
/// probes): while it lasts, probes this thread hits (a probe on `malloc`
/// when the registry allocates) run no handler, as Linux's kprobes skip
/// probes hit by the kprobes core. They are not the target's misses either:
/// they are counted in [`OWN_WORK_HITS`], not in the probes' `nmissed`.
pub struct OwnWork(Option<*mut ThreadState>);

impl OwnWork {
    pub fn start() -> OwnWork {
        let ts = current();
        if let Some(ts) = ts {
            // SAFETY: this thread's slot; only this thread writes these.
            unsafe {
                (*ts).own_work += 1;
                (*ts).in_handler += 1;
            }
        }
        OwnWork(ts)
    }
}

impl Drop for OwnWork {
    fn drop(&mut self) {
        if let Some(ts) = self.0 {
            // SAFETY: as in start; the slot stays ours while the thread lives.
            unsafe {
                (*ts).own_work = (*ts).own_work.saturating_sub(1);
                (*ts).in_handler = (*ts).in_handler.saturating_sub(1);
            }
        }
    }
}

/// Is this thread running a probe handler (not only the runtime's own
/// work)? Registration is refused there: it allocates through libc, which
/// the lighter vector saves of known handlers do not allow for (see
/// `crate::kprobes::known`), and Linux's kprobes do not allow it either.
pub fn in_probe_handler() -> bool {
    let Some(ts) = current() else { return false };
    // SAFETY: this thread's slot.
    unsafe { (*ts).in_handler > (*ts).own_work }
}

/// A hit on `ts` that runs no handler (reentrancy): count it against its
/// probes, or as the runtime's own when it happened during [`OwnWork`].
///
/// # Safety
/// `ts` is this thread's slot; the probes of `site` are live.
#[cold]
pub(crate) unsafe fn count_misses(ts: *mut ThreadState, site: &crate::hit::site::Site) {
    use crate::abi::{kprobe_missed, kretprobe_missed};
    use crate::hit::site::EntryKind;
    // SAFETY: contract.
    unsafe {
        if (*ts).own_work != 0 {
            OWN_WORK_HITS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for e in &site.probes {
            if e.is_dead() {
                continue;
            }
            match e.kind {
                EntryKind::R(rec) => kretprobe_missed((*rec).rp),
                _ => kprobe_missed(e.kp),
            }
        }
    }
}

/// The table, mapped once by [`init`]; null before.
static TABLE: AtomicPtr<ThreadState> = AtomicPtr::new(core::ptr::null_mut());

/// Map the table (once, at init). Zero pages are materialised on first touch.
/// Any thread may call it, any number of times, concurrently: one mapping
/// is published, the others are unmapped.
pub fn init() -> bool {
    init_in(&TABLE, map_table).is_some()
}

const TABLE_LEN: usize = MAX_THREADS * core::mem::size_of::<ThreadState>();

/// A fresh, zeroed table; None if it cannot be mapped.
fn map_table() -> Option<*mut ThreadState> {
    // SAFETY: a fresh anonymous mapping (RW, MAP_PRIVATE|MAP_ANONYMOUS).
    let p = unsafe { sys::mmap(0, TABLE_LEN, 3, 0x22, -1, 0) };
    (p >= 0).then_some(p as *mut ThreadState)
}

/// Publish a table in `table` unless one is there: Some(true) when this
/// call published the one mapped by `map`, Some(false) when another
/// table was there (or won the race; the one mapped here is unmapped),
/// None when `map` failed.
fn init_in(
    table: &AtomicPtr<ThreadState>,
    map: impl FnOnce() -> Option<*mut ThreadState>,
) -> Option<bool> {
    if !table.load(Ordering::Acquire).is_null() {
        return Some(false);
    }
    let p = map()?;
    let won = table
        .compare_exchange(
            core::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok();
    if !won {
        // Another thread published its table first; no one saw ours.
        // SAFETY: munmap of our own fresh mapping, never published (a raw
        // system call, as everything else at start-up).
        unsafe { sys::syscall3(11, p as usize, TABLE_LEN, 0) };
    }
    Some(won)
}

fn table() -> *mut ThreadState {
    TABLE.load(Ordering::Acquire)
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
///
/// # Safety
/// `ts` is a slot of the table that the caller holds (taken over by CAS
/// from a dead thread, or the single-threaded child after fork).
unsafe fn release_instances(ts: *mut ThreadState) {
    // SAFETY: caller contract; instances are never freed.
    unsafe {
        let mut cur = (*ts).kret_head;
        (*ts).kret_head = 0;
        while cur != 0 {
            let h = cur as *mut crate::hit::site::InstHdr;
            cur = (*h).next;
            crate::hit::site::release(h);
        }
        let p = (*ts).kret_private;
        (*ts).kret_private = 0;
        crate::hit::site::give_back_private(p);
    }
}

/// # Safety
/// `ts` is a slot of the table that the caller has just claimed by CAS.
unsafe fn reset(ts: *mut ThreadState) {
    // SAFETY: caller contract: no other thread writes the slot.
    unsafe {
        (*ts).active.store(0, Ordering::Relaxed);
        (*ts).in_handler = 0;
        (*ts).guard.active = 0;
        (*ts).guard.faulted = 0;
        (*ts).ss_site = 0;
        (*ts).jp_site = 0;
        (*ts).kret_head = 0;
        (*ts).kret_private = 0;
        (*ts).cur_regs = 0;
        (*ts).defer = 0;
        (*ts).deferred = 0;
        (*ts).own_work = 0;
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
            // SAFETY: just claimed by CAS.
            unsafe { reset(s) };
            ensure_handler_stack(s);
            learn_altstack(s);
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
        if cur > 0 && !sys::runs_in_our_memory(cur) {
            // SAFETY: as above.
            if unsafe {
                (*s).tid
                    .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Acquire)
            }
            .is_ok()
            {
                // SAFETY: taken over by CAS from a dead thread.
                unsafe {
                    release_instances(s);
                    reset(s);
                }
                ensure_handler_stack(s);
                learn_altstack(s);
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
                core::ptr::read_volatile(core::ptr::addr_of!((*s).kret_head))
                    | core::ptr::read_volatile(core::ptr::addr_of!((*s).kret_private)),
            )
        };
        if tid <= 0 || kret == 0 || sys::runs_in_our_memory(tid) {
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
        // SAFETY: taken over by CAS from a dead thread; then published as
        // free (TOMB) once reset.
        unsafe {
            release_instances(s);
            reset(s);
            (*s).tid.store(TOMB, Ordering::Release);
        }
        n += 1;
    }
    n
}

/// Enter runtime activity (hit path). Pairs with [`leave`].
///
/// `active` is written by its own thread only (see the module's notes), so
/// a plain load and store suffice (no locked instruction on the hit path):
/// a nested hit in a signal handler on this thread runs its whole
/// enter..leave between two of the interrupted code's instructions and
/// leaves `active` as it found it.
///
/// # Safety
/// `ts` is the calling thread's own slot (from [`current`] on this thread).
#[inline]
pub unsafe fn enter(ts: *mut ThreadState) {
    // SAFETY: caller contract: this thread's slot, whose `active` only this
    // thread writes.
    unsafe {
        let a = (*ts).active.load(Ordering::Relaxed);
        (*ts).active.store(a + 1, Ordering::Relaxed);
    }
    // Pairs with the fence in `synchronize`: either the unregistering thread
    // sees us active, or we see its table update.
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Leave runtime activity; the outermost leave starts a new generation
/// (what `synchronize` waits for).
///
/// # Safety
/// As [`enter`], and paired with an earlier `enter` of this thread.
#[inline]
pub unsafe fn leave(ts: *mut ThreadState) {
    // SAFETY: caller contract, as in `enter`.
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
            if spins.is_multiple_of(1024) && !sys::runs_in_our_memory(tid) {
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

/// Is the calling task a thread of this process, not a child made by
/// `clone(CLONE_VM)` without `CLONE_THREAD` (posix_spawn's kind), which
/// shares the memory and the TLS block of the thread that made it? Such a
/// child must not write its slot into that TLS cache (`hit::jump::thread`):
/// its parent would then use the child's slot, which the sweep takes back
/// once the child is gone. One getpid; when it differs from the pid last
/// learnt, kcmp tells a child sharing our memory from a process forked
/// without the fork hooks (a raw fork), which learns its own pid then.
/// True before start-up, and where kcmp is unavailable (as before).
pub fn in_own_process() -> bool {
    let p = OWN_PID.load(Ordering::Acquire);
    let me = sys::getpid();
    if p == 0 || me == p {
        return true;
    }
    if sys::same_memory(p) == Some(true) {
        return false;
    }
    OWN_PID.store(me, Ordering::Release);
    true
}

/// The pid of the process this runtime runs in, as it last learnt it (at
/// start-up, in a forked child, or by [`in_own_process`]; 0: not yet).
static OWN_PID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// Learn this process's pid (start-up; [`after_fork`] does it for a child).
pub fn note_own_process() {
    OWN_PID.store(sys::getpid(), Ordering::Release);
    // Asked again in a forked child (a sandbox may refuse it there).
    sys::kcmp_answers();
}

/// kcmp answered here: a slot is taken from its thread (the sweep, a full
/// table) only once the thread is gone, never from a live `clone(CLONE_VM)`
/// child that looks dead without it (see `sys::runs_in_our_memory`). Then
/// only a thread itself releases the kretprobe instances on its list, and
/// it needs no atomic exchange to do so (`crate::hit::site::release_own`).
#[inline(always)]
pub fn only_owners_release() -> bool {
    sys::kcmp_answered()
}

/// After fork: only the forking thread exists in the child. Move its state
/// (kretprobe instances on its copied stack) to the child's tid and free the rest.
pub fn after_fork(parent_tid: i32) {
    note_own_process();
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
            let (kret, private) = ((*src).kret_head, (*src).kret_private);
            (*src).tid.store(0, Ordering::Relaxed);
            if let Some(dst) = current() {
                (*dst).kret_head = kret;
                (*dst).kret_private = private;
            } else {
                crate::hit::site::give_back_private(private);
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};

    /// Threads that all find no table and map one at the same moment:
    /// exactly one mapping is published, and every thread ends up with it.
    #[test]
    fn concurrent_inits_publish_one_table() {
        static T: AtomicPtr<ThreadState> = AtomicPtr::new(core::ptr::null_mut());
        let n = 8;
        let go = Arc::new(Barrier::new(n));
        let runs: Vec<(Option<bool>, usize)> = (0..n)
            .map(|_| {
                let go = go.clone();
                std::thread::spawn(move || {
                    // Every thread is past the "no table yet" check before
                    // any of them publishes.
                    let won = init_in(&T, || {
                        go.wait();
                        map_table()
                    });
                    (won, T.load(Ordering::Acquire) as usize)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let t = T.load(Ordering::Acquire) as usize;
        assert_ne!(t, 0);
        assert_eq!(
            runs.iter().filter(|r| r.0 == Some(true)).count(),
            1,
            "{runs:x?}"
        );
        assert!(
            runs.iter().all(|r| r.0.is_some() && r.1 == t),
            "{runs:x?} vs {t:x}"
        );
        assert_eq!(init_in(&T, || panic!("no second mapping")), Some(false));
    }

    /// Inside the handler: `active` as the nested hit saw it.
    static NESTED_ACTIVE: AtomicU32 = AtomicU32::new(0);

    extern "C" fn nested_hit(_sig: i32) {
        let ts = current().expect("a slot");
        // SAFETY: this thread's slot.
        unsafe {
            enter(ts);
            NESTED_ACTIVE.store((*ts).active.load(Ordering::Relaxed), Ordering::Relaxed);
            leave(ts);
        }
    }

    /// A hit in a signal handler that interrupts this thread inside the hit
    /// path nests: `active` goes back to what it was, and only the
    /// outermost leave starts a new generation.
    #[test]
    fn a_nested_hit_in_a_signal_handler_leaves_the_slot_as_it_found_it() {
        assert!(init());
        let ts = current().expect("a slot");
        let read = || {
            // SAFETY: this thread's slot; `active` and `gen` are atomics.
            unsafe {
                (
                    (*ts).active.load(Ordering::Acquire),
                    (*ts).gen.load(Ordering::Acquire),
                )
            }
        };
        let (a0, g0) = read();
        assert_eq!(a0, 0);
        // SAFETY: this thread's slot; a handler of our own for SIGUSR2,
        // delivered to this thread before raise() returns.
        unsafe {
            enter(ts);
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = nested_hit as *const () as usize;
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &sa, core::ptr::null_mut()),
                0
            );
            assert_eq!(libc::raise(libc::SIGUSR2), 0);
        }
        assert_eq!(NESTED_ACTIVE.load(Ordering::Relaxed), 2);
        assert_eq!(read(), (1, g0));
        // SAFETY: this thread's slot, paired with the enter above.
        unsafe { leave(ts) };
        assert_eq!(read(), (0, g0 + 1));
    }

    /// `synchronize` on another thread returns only once this thread has
    /// left the hit path.
    #[test]
    fn synchronize_waits_for_a_thread_inside() {
        static LEFT: AtomicBool = AtomicBool::new(false);
        assert!(init());
        let ts = current().expect("a slot");
        // SAFETY: this thread's slot.
        unsafe { enter(ts) };
        let waiter = std::thread::spawn(|| (synchronize(), LEFT.load(Ordering::Acquire)));
        // Time for the waiter to start waiting (a late start passes
        // trivially; nothing here depends on how long this lasts).
        std::thread::sleep(std::time::Duration::from_millis(50));
        LEFT.store(true, Ordering::Release);
        // SAFETY: this thread's slot, paired with the enter above.
        unsafe { leave(ts) };
        assert_eq!(waiter.join().unwrap(), (true, true));
    }
}
