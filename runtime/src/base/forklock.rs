//! Runtime mutexes held across `fork()`: the `pthread_atfork` prepare
//! handler ([`prepare`], from `loader`) takes them in a fixed order (the
//! order the runtime nests them), the parent handler gives back the ones
//! its thread took, and the child gives back all of them (only the forking
//! thread exists there, so any holder recorded here is gone or is us).
//! Without this a fork while another thread registers probes leaves the
//! child with a mutex held forever (a deadlock at its exit).
//!
//! Each acquisition is bounded ([`WAIT_NS`]): a fork made by a thread that
//! already holds one of them (or while a registration runs for seconds)
//! proceeds without that lock rather than deadlocking, as before.
//!
//! Not covered here (private to files of another owner): `crate::kprobes::codemem::REG`,
//! `crate::kprobes::optimize::TEMPLATES`, `optprobe`'s init `ONCE`; see runtime/README.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::base::sys;

/// How long the prepare handler waits for each lock.
pub const WAIT_NS: u64 = 2_000_000_000;

/// One std mutex and the guard the forking thread holds.
pub struct MutexSlot<T: 'static> {
    m: &'static Mutex<T>,
    guard: UnsafeCell<Option<MutexGuard<'static, T>>>,
    /// tid of the thread holding `guard` (0 = none).
    owner: AtomicI32,
}

// SAFETY: `guard` is written only by the thread that holds the mutex (in
// `acquire`) and taken back only by that thread (`release`, parent side)
// or by the single thread of a forked child.
unsafe impl<T> Sync for MutexSlot<T> {}

impl<T> MutexSlot<T> {
    pub const fn new(m: &'static Mutex<T>) -> Self {
        MutexSlot {
            m,
            guard: UnsafeCell::new(None),
            owner: AtomicI32::new(0),
        }
    }
}

/// A spin flag used as a lock (the syscall registry's).
pub struct FlagSlot {
    f: &'static AtomicBool,
    owner: AtomicI32,
}

impl FlagSlot {
    pub const fn new(f: &'static AtomicBool) -> Self {
        FlagSlot {
            f,
            owner: AtomicI32::new(0),
        }
    }
}

pub trait ForkLock: Sync {
    /// Take the lock for a fork (bounded wait). True if taken.
    fn acquire(&self, me: i32) -> bool;
    /// Give it back if `me` took it (`me` None: in the child, whoever did).
    fn release(&self, me: Option<i32>);
}

fn wait_for(mut try_take: impl FnMut() -> bool) -> bool {
    let start = sys::monotonic_ns();
    let mut n = 0u32;
    loop {
        if try_take() {
            return true;
        }
        n = n.saturating_add(1);
        if n < 64 {
            core::hint::spin_loop();
            continue;
        }
        if sys::monotonic_ns().saturating_sub(start) > WAIT_NS {
            return false;
        }
        sys::sleep_us(100);
    }
}

impl<T> ForkLock for MutexSlot<T> {
    fn acquire(&self, me: i32) -> bool {
        let m = self.m;
        wait_for(|| {
            let g = match m.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return false,
            };
            // SAFETY: we hold the mutex: nobody else touches the slot.
            unsafe { *self.guard.get() = Some(g) };
            self.owner.store(me, Ordering::Release);
            true
        })
    }

    fn release(&self, me: Option<i32>) {
        let owner = self.owner.load(Ordering::Acquire);
        if owner == 0 || me.is_some_and(|t| t != owner) {
            return;
        }
        self.owner.store(0, Ordering::Release);
        // SAFETY: the slot's guard belongs to the calling thread (parent)
        // or to a thread that does not exist in this child.
        drop(unsafe { (*self.guard.get()).take() });
    }
}

impl ForkLock for FlagSlot {
    fn acquire(&self, me: i32) -> bool {
        let f = self.f;
        let ok = wait_for(|| {
            f.compare_exchange_weak(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if ok {
            self.owner.store(me, Ordering::Release);
        }
        ok
    }

    fn release(&self, me: Option<i32>) {
        let owner = self.owner.load(Ordering::Acquire);
        if owner == 0 || me.is_some_and(|t| t != owner) {
            return;
        }
        self.owner.store(0, Ordering::Release);
        self.f.store(false, Ordering::Release);
    }
}

/// Tid of a thread between `prepare` and `parent`/`child` (0: none).
static FORKING: AtomicI32 = AtomicI32::new(0);

/// Called before taking a runtime lock that a thread may take again and
/// again (registration): while another thread forks, wait (up to
/// [`WAIT_NS`]) so that its prepare handler gets the lock. Without this a
/// thread registering probes in a loop re-took the lock each time the
/// prepare handler's polling let go of it, and a child forked after the
/// 2 s bound inherited it held: a deadlock at the child's exit (seen under
/// a saturated CPU once registration got faster).
pub fn yield_to_fork() {
    let f = FORKING.load(Ordering::Acquire);
    if f == 0 || f == sys::gettid() {
        return;
    }
    let start = sys::monotonic_ns();
    while FORKING.load(Ordering::Acquire) != 0
        && sys::monotonic_ns().saturating_sub(start) < WAIT_NS
    {
        sys::sleep_us(50);
    }
}

/// pthread_atfork prepare: take every lock in `order`.
pub fn prepare(order: &[&dyn ForkLock]) {
    let me = sys::gettid();
    FORKING.store(me, Ordering::Release);
    for l in order {
        l.acquire(me);
    }
}

/// pthread_atfork parent: give back what this thread took.
pub fn parent(order: &[&dyn ForkLock], me: i32) {
    for l in order.iter().rev() {
        l.release(Some(me));
    }
    let _ = FORKING.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
}

/// pthread_atfork child: give back everything recorded.
pub fn child(order: &[&dyn ForkLock]) {
    for l in order.iter().rev() {
        l.release(None);
    }
    FORKING.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    static M: Mutex<u32> = Mutex::new(0);
    static SM: MutexSlot<u32> = MutexSlot::new(&M);
    static F: AtomicBool = AtomicBool::new(false);
    static SF: FlagSlot = FlagSlot::new(&F);

    #[test]
    fn taken_in_prepare_given_back_in_parent_and_child() {
        let order: [&dyn ForkLock; 2] = [&SF, &SM];
        let me = sys::gettid();
        prepare(&order);
        assert!(M.try_lock().is_err());
        assert!(F.load(Ordering::Relaxed));
        // Another thread's parent handler gives back nothing of ours.
        parent(&order, me + 1);
        assert!(M.try_lock().is_err());
        parent(&order, me);
        assert!(M.try_lock().is_ok());
        assert!(!F.load(Ordering::Relaxed));
        prepare(&order);
        child(&order);
        assert!(M.try_lock().is_ok());
        assert!(!F.load(Ordering::Relaxed));
    }
}
