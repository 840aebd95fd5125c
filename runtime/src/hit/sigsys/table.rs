//! Per-thread state of syscall probes: the Syscall User Dispatch selector
//! byte of each armed thread, its reentrancy flag and its grace-period
//! counters.
//!
//! Kept apart from `crate::hit::threads` on purpose: the selector byte is
//! registered with the kernel (`prctl(PR_SET_SYSCALL_USER_DISPATCH)`) and
//! must stay at a fixed address for the thread's whole life, and detach must
//! be able to flip every thread's selector from any thread. The table is one
//! anonymous mapping made once (never freed), keyed by the kernel thread id
//! (raw `gettid`), claimed with a CAS; slots of threads that exit through
//! `exit(2)` are released by the SIGSYS handler, others are reclaimed when
//! the table fills up.

use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::base::sys;

pub const MAX_THREADS: usize = 4096;

/// Selector values (linux/prctl.h).
pub const ALLOW: u8 = 0;
pub const BLOCK: u8 = 1;

#[repr(C)]
pub struct Slot {
    pub tid: AtomicI32,
    /// The byte the kernel reads at every system call of this thread once
    /// it is armed: BLOCK = trap (SIGSYS), ALLOW = run natively.
    pub selector: AtomicU8,
    /// prctl(PR_SET_SYSCALL_USER_DISPATCH) done for this thread.
    pub armed: AtomicU8,
    /// Syscall probe handlers are running on this thread.
    pub in_handler: AtomicU8,
    /// A process made by clone(CLONE_VM) without CLONE_THREAD (posix_spawn's
    /// child): it shares the runtime's memory with its parent until exec.
    pub vm_child: AtomicU8,
    /// Depth of hit-path activity (handlers may be running); unregister waits.
    pub active: AtomicU32,
    /// Incremented each time `active` drops back to 0.
    pub gen: AtomicU64,
    /// The running handler's per-call scratch (see `super::call_data`).
    pub call_data: AtomicU64,
}

static TABLE: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());

/// Map the table (once). Not on the hit path.
pub fn init() -> bool {
    if !TABLE.load(Ordering::Acquire).is_null() {
        return true;
    }
    let len = MAX_THREADS * core::mem::size_of::<Slot>();
    // SAFETY: plain anonymous private mapping (RW).
    let p = unsafe { sys::mmap(0, len, 3, 0x22, -1, 0) };
    if p < 0 {
        return false;
    }
    if TABLE
        .compare_exchange(
            core::ptr::null_mut(),
            p as *mut Slot,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Lost a race with another initialiser: drop ours.
        // SAFETY: our own fresh mapping, never published.
        unsafe { sys::syscall3(sys::SYS_MUNMAP, p as usize, len, 0) };
    }
    true
}

fn slot(i: usize) -> Option<&'static Slot> {
    let t = TABLE.load(Ordering::Acquire);
    if t.is_null() || i >= MAX_THREADS {
        return None;
    }
    // SAFETY: i < MAX_THREADS, the table is mapped for the process's life and
    // Slot is made of atomics (valid for any bit pattern, zero included).
    Some(unsafe { &*t.add(i) })
}

fn hash(tid: i32) -> usize {
    (tid as u32).wrapping_mul(2_654_435_761) as usize % MAX_THREADS
}

fn reset(s: &Slot) {
    s.selector.store(ALLOW, Ordering::Relaxed);
    s.armed.store(0, Ordering::Relaxed);
    s.in_handler.store(0, Ordering::Relaxed);
    s.vm_child.store(0, Ordering::Relaxed);
    s.active.store(0, Ordering::Relaxed);
    s.call_data.store(0, Ordering::Relaxed);
}

/// The calling thread's slot, if it has one (no claim).
pub fn find(tid: i32) -> Option<&'static Slot> {
    let h = hash(tid);
    for k in 0..MAX_THREADS {
        let s = slot((h + k) % MAX_THREADS)?;
        let cur = s.tid.load(Ordering::Acquire);
        if cur == tid {
            return Some(s);
        }
        if cur == 0 {
            return None;
        }
    }
    None
}

/// The calling thread's slot, claiming one on first use. None when the
/// table is full of live threads.
pub fn current() -> Option<&'static Slot> {
    let tid = sys::gettid();
    claim(tid)
}

pub fn claim(tid: i32) -> Option<&'static Slot> {
    let h = hash(tid);
    loop {
        // First look for our own slot along the whole chain (up to the first
        // never-used slot), remembering the first released one: taking a
        // released slot before reaching our own further down would give
        // this thread two slots.
        let mut free: Option<(&'static Slot, i32)> = None;
        let mut mine = None;
        for k in 0..MAX_THREADS {
            let s = slot((h + k) % MAX_THREADS)?;
            let cur = s.tid.load(Ordering::Acquire);
            if cur == tid {
                mine = Some(s);
                break;
            }
            if cur == -1 && free.is_none() {
                free = Some((s, -1));
            }
            if cur == 0 {
                if free.is_none() {
                    free = Some((s, 0));
                }
                break;
            }
        }
        if mine.is_some() {
            return mine;
        }
        let Some((s, cur)) = free else { break };
        if s.tid
            .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            reset(s);
            return Some(s);
        }
        // Another thread took that slot meanwhile: look again.
    }
    // Full: reclaim the slot of a thread that is gone.
    for k in 0..MAX_THREADS {
        let s = slot((h + k) % MAX_THREADS)?;
        let cur = s.tid.load(Ordering::Acquire);
        if cur > 0
            && !sys::runs_in_our_memory(cur)
            && s.tid
                .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            reset(s);
            return Some(s);
        }
    }
    None
}

/// The thread is about to exit(2): give its slot back. Its selector stays
/// registered with the kernel until the thread is gone, which is immediate.
pub fn release(s: &Slot) {
    s.active.store(0, Ordering::Relaxed);
    s.tid.store(-1, Ordering::Release);
}

/// In a forked child (single thread): forget every other thread and re-key
/// `me` to the child's tid. Returns the child's slot.
pub fn after_fork(me: Option<&'static Slot>) -> Option<&'static Slot> {
    let tid = sys::gettid();
    for i in 0..MAX_THREADS {
        let Some(s) = slot(i) else { break };
        if s.tid.load(Ordering::Relaxed) != 0 {
            s.tid.store(-1, Ordering::Relaxed);
        }
    }
    let sel = me.map_or(ALLOW, |m| m.selector.load(Ordering::Relaxed));
    let s = claim(tid)?;
    s.selector.store(sel, Ordering::Relaxed);
    Some(s)
}

/// Write `v` into the selector of every armed thread (detach, last unregister,
/// first register). Other threads see it at their next system call.
pub fn set_all_selectors(v: u8) {
    for i in 0..MAX_THREADS {
        let Some(s) = slot(i) else { break };
        if s.tid.load(Ordering::Acquire) > 0 && s.armed.load(Ordering::Acquire) != 0 {
            s.selector.store(v, Ordering::Release);
        }
    }
}

/// Thread ids of the slots whose dispatch is on (up to `out.len()`).
pub fn armed_tids(out: &mut [i32]) -> usize {
    let mut n = 0;
    for i in 0..MAX_THREADS {
        let Some(s) = slot(i) else { break };
        let tid = s.tid.load(Ordering::Acquire);
        if n < out.len() && tid > 0 && s.armed.load(Ordering::Acquire) != 0 {
            out[n] = tid;
            n += 1;
        }
    }
    n
}

/// Slots of live threads with the dispatch on.
pub fn armed_count() -> usize {
    let mut n = 0;
    for i in 0..MAX_THREADS {
        let Some(s) = slot(i) else { break };
        let tid = s.tid.load(Ordering::Acquire);
        if tid > 0 && s.armed.load(Ordering::Acquire) != 0 && sys::thread_alive(tid) {
            n += 1;
        }
    }
    n
}

#[inline]
pub fn enter(s: &Slot) {
    let a = s.active.load(Ordering::Relaxed);
    s.active.store(a + 1, Ordering::Relaxed);
    // Pairs with the fence in `synchronize`.
    core::sync::atomic::fence(Ordering::SeqCst);
}

#[inline]
pub fn leave(s: &Slot) {
    let a = s.active.load(Ordering::Relaxed);
    if a == 1 {
        s.gen.fetch_add(1, Ordering::Release);
    }
    s.active.store(a.saturating_sub(1), Ordering::Release);
}

/// How long [`synchronize`] waits for all threads together.
pub const GRACE_LIMIT_US: u64 = 3_000_000;

/// Grace period: wait until every other thread that was running syscall
/// probe handlers when this was called has left them. Bounded by
/// [`GRACE_LIMIT_US`] in total (a handler that blocks forever, or a thread
/// stopped by a debugger, must not hang unregister/detach): returns false
/// when it gave up on some thread (that thread may still be inside a handler).
pub fn synchronize() -> bool {
    synchronize_within(GRACE_LIMIT_US)
}

/// [`synchronize`] with an explicit limit in microseconds.
pub fn synchronize_within(limit_us: u64) -> bool {
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = sys::gettid();
    // Wall time (a 50 us sleep lasts much longer on a loaded machine).
    let t0 = sys::monotonic_ns();
    let mut complete = true;
    for i in 0..MAX_THREADS {
        let Some(s) = slot(i) else { break };
        let tid = s.tid.load(Ordering::Acquire);
        let active = s.active.load(Ordering::Acquire);
        let gen = s.gen.load(Ordering::Acquire);
        if tid <= 0 || tid == me || active == 0 {
            continue;
        }
        let mut spins = 0u64;
        loop {
            if s.tid.load(Ordering::Acquire) != tid
                || s.active.load(Ordering::Acquire) == 0
                || s.gen.load(Ordering::Acquire) != gen
            {
                break;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && !sys::runs_in_our_memory(tid) {
                break;
            }
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                if sys::monotonic_ns().saturating_sub(t0) >= limit_us * 1000 {
                    complete = false;
                    break;
                }
                sys::sleep_us(50);
            }
        }
    }
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two fake thread ids (never real: above PID_MAX_LIMIT) with the same hash.
    fn colliding() -> (i32, i32) {
        let a = 0x2000_0000;
        let b = (a + 1..).find(|&b| hash(b) == hash(a)).unwrap();
        (a, b)
    }

    #[test]
    fn claim_finds_its_own_slot_past_a_released_one() {
        assert!(init());
        let (x, t) = colliding();
        let sx = claim(x).unwrap();
        let st = claim(t).unwrap();
        assert!(!core::ptr::eq(sx, st));
        release(sx);
        let again = claim(t).unwrap();
        assert!(
            core::ptr::eq(again, st),
            "the thread keeps its one slot (not the released one before it)"
        );
        assert!(core::ptr::eq(find(t).unwrap(), st));
        release(st);
    }

    #[test]
    fn synchronize_gives_up_after_its_limit() {
        assert!(init());
        // A "thread" stuck in handlers forever: this test process's own
        // main thread id is alive, so use a live tid other than ours.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            let s = current().unwrap();
            enter(s);
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
            leave(s);
            release(s);
        });
        rx.recv().unwrap();
        let t0 = std::time::Instant::now();
        assert!(!synchronize_within(20_000));
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        done_tx.send(()).unwrap();
        h.join().unwrap();
        assert!(synchronize_within(20_000));
    }
}
