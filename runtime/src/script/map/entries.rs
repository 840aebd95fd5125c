//! The operations on an array's entries, lock-free except for inserting a
//! new key (the states, the probe sequence and the insert lock are
//! described in `map.rs`): FNV-1a hashing of the keys, lookup along the
//! probe sequence, insert under the insert lock (reusing DEAD entries),
//! delete, clear, and the live entries in slot order. Hit-path safe: no
//! allocation, raw system calls only (the lock's tid, clock and yield).

use core::sync::atomic::Ordering;

use super::{Keys, Kind, Map, MapError, BUSY, DEAD, EMPTY, LIVE, LOCK_WAIT_NS, SPIN_LIMIT};
use crate::base::sys;
use crate::script::globals::{c_len, copy_str};

impl Map {
    /// FNV-1a over the key bytes.
    ///
    /// # Safety
    /// `keys` holds `nkeys` values; string keys are NUL-terminated.
    unsafe fn hash(&self, keys: Keys) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        for k in 0..self.nkeys() {
            // SAFETY: caller contract.
            let v = unsafe { *keys.add(k) };
            if self.key_is_str(k) {
                let p = v as *const u8;
                // SAFETY: NUL-terminated.
                let n = unsafe { c_len(p, self.cap()) };
                for j in 0..n {
                    // SAFETY: j < n.
                    eat(unsafe { *p.add(j) });
                }
                eat(0);
            } else {
                v.to_le_bytes().into_iter().for_each(&mut eat);
            }
        }
        h | 1 // never 0, so a hash word of 0 means "not written yet"
    }

    /// Does entry `i` hold `keys`?
    ///
    /// # Safety
    /// As [`Map::hash`].
    unsafe fn matches(&self, i: usize, h: u64, keys: Keys) -> bool {
        // SAFETY: the hash word follows the state word.
        let eh = unsafe { (self.entry(i).add(8) as *const u64).read() };
        if eh != h {
            return false;
        }
        for k in 0..self.nkeys() {
            // SAFETY: caller contract.
            let v = unsafe { *keys.add(k) };
            if self.key_is_str(k) {
                let (a, b) = (self.key_str(i, k), v as *const u8);
                let cap = self.cap();
                // SAFETY: both NUL-terminated within cap.
                unsafe {
                    let (na, nb) = (c_len(a, cap), c_len(b, cap));
                    if na != nb
                        || core::slice::from_raw_parts(a, na) != core::slice::from_raw_parts(b, nb)
                    {
                        return false;
                    }
                }
            } else if self.key_long(i, k) != v {
                return false;
            }
        }
        true
    }

    /// Wait (bounded) while entry `i` is being inserted; its state after.
    fn settled(&self, i: usize) -> u64 {
        let mut n = 0;
        loop {
            let s = self.state(i).load(Ordering::Acquire);
            if s != BUSY || n > SPIN_LIMIT {
                return s;
            }
            n += 1;
            core::hint::spin_loop();
        }
    }

    /// The entry holding `keys`, if any.
    ///
    /// # Safety
    /// `keys` holds one value per key; string keys NUL-terminated.
    pub unsafe fn find(&self, keys: Keys) -> Option<usize> {
        let n = self.nslots();
        if n == 0 {
            return None;
        }
        // SAFETY: caller contract.
        let h = unsafe { self.hash(keys) };
        let mut i = h as usize & (n - 1);
        for _ in 0..n {
            match self.settled(i) {
                EMPTY => return None,
                // SAFETY: caller contract.
                LIVE if unsafe { self.matches(i, h, keys) } => return Some(i),
                _ => {}
            }
            i = (i + 1) & (n - 1);
        }
        None
    }

    /// The entry holding `keys`, inserted (value zero) if absent.
    ///
    /// # Safety
    /// As [`Map::find`].
    pub unsafe fn find_or_insert(&self, keys: Keys) -> Result<usize, MapError> {
        // SAFETY: caller contract.
        if let Some(i) = unsafe { self.find(keys) } {
            return Ok(i);
        }
        if !self.valid() {
            return Err(MapError::Full(0));
        }
        if !self.lock() {
            return Err(MapError::Busy);
        }
        // SAFETY: caller contract.
        let r = unsafe { self.insert_locked(keys) };
        self.unlock();
        r
    }

    /// Take the insert lock: the word holds the owner's tid (0 = free).
    /// A holder that has died (a killed process) is taken over; a live one
    /// is waited for (spinning, then yielding) for at most
    /// [`LOCK_WAIT_NS`], after which false is returned and the insert
    /// fails rather than corrupting the holder's insert.
    fn lock(&self) -> bool {
        let l = &self.header().lock;
        let me = sys::gettid() as u32 as u64;
        let mut n = 0u32;
        let mut since = 0u64;
        loop {
            let cur = l.load(Ordering::Relaxed);
            if cur == 0 {
                if l.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            n = n.saturating_add(1);
            if n < SPIN_LIMIT {
                core::hint::spin_loop();
                continue;
            }
            // A holder with our own tid is a dead thread whose tid was reused.
            if (cur == me || sys::task_dead(cur as u32 as i32))
                && l.compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
            let now = sys::monotonic_ns();
            if since == 0 {
                since = now;
            } else if now.saturating_sub(since) > LOCK_WAIT_NS {
                return false;
            }
            sys::sched_yield();
        }
    }

    fn unlock(&self) {
        self.header().lock.store(0, Ordering::Release);
    }

    /// With the insert lock held: find `keys`, or put them in the first
    /// DEAD entry of their probe sequence, or the EMPTY one ending it.
    ///
    /// # Safety
    /// As [`Map::find`]; the insert lock is held.
    unsafe fn insert_locked(&self, keys: Keys) -> Result<usize, MapError> {
        let n = self.nslots();
        // SAFETY: caller contract.
        let h = unsafe { self.hash(keys) };
        let mut i = h as usize & (n - 1);
        let mut reuse = None;
        for _ in 0..n {
            match self.settled(i) {
                EMPTY => break,
                DEAD if reuse.is_none() => reuse = Some(i),
                // SAFETY: caller contract.
                LIVE if unsafe { self.matches(i, h, keys) } => return Ok(i),
                _ => {}
            }
            i = (i + 1) & (n - 1);
        }
        let used = &self.header().used;
        if used.load(Ordering::Acquire) >= self.capacity() {
            return Err(MapError::Full(self.capacity()));
        }
        let slot = match (reuse, self.state(i).load(Ordering::Acquire)) {
            (Some(d), _) => d,
            (None, EMPTY) => i,
            _ => return Err(MapError::Full(self.capacity())),
        };
        let from = self.state(slot).load(Ordering::Acquire);
        if self
            .state(slot)
            .compare_exchange(from, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(MapError::Full(self.capacity()));
        }
        used.fetch_add(1, Ordering::AcqRel);
        // SAFETY: we own the entry (BUSY); keys per contract.
        unsafe { self.write_key(slot, h, keys) };
        self.state(slot).store(LIVE, Ordering::Release);
        Ok(slot)
    }

    /// # Safety
    /// Entry `i` is BUSY and owned by the caller.
    unsafe fn write_key(&self, i: usize, h: u64, keys: Keys) {
        let cap = self.cap();
        // SAFETY: caller contract; the entry's bytes are ours while BUSY.
        unsafe {
            for k in 0..self.nkeys() {
                let v = *keys.add(k);
                if self.key_is_str(k) {
                    copy_str(self.key_ptr(i, k), v as *const u8, cap);
                } else {
                    (self.key_ptr(i, k) as *mut i64).write(v);
                }
            }
            let vp = self.value_ptr(i);
            match self.value_kind() {
                Kind::Long => (vp as *mut i64).write(0),
                Kind::Str => {
                    (vp as *mut u64).write(0);
                    *vp.add(8) = 0;
                }
                Kind::Stats => {
                    let w = vp as *mut i64;
                    w.write(0);
                    w.add(1).write(0);
                    w.add(2).write(i64::MAX);
                    w.add(3).write(i64::MIN);
                    core::ptr::write_bytes(vp.add(32), 0, self.hist_bytes);
                }
            }
            (self.entry(i).add(8) as *mut u64).write(h);
        }
    }

    /// `delete a[k]`.
    ///
    /// # Safety
    /// As [`Map::find`].
    pub unsafe fn delete(&self, keys: Keys) {
        // SAFETY: caller contract.
        if let Some(i) = unsafe { self.find(keys) } {
            if self
                .state(i)
                .compare_exchange(LIVE, DEAD, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.header().used.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// `delete a`: every entry back to EMPTY (not atomic with concurrent inserts).
    pub fn clear(&self) {
        if !self.valid() {
            return;
        }
        for i in 0..self.nslots() {
            self.state(i).store(EMPTY, Ordering::Release);
        }
        self.header().used.store(0, Ordering::Release);
    }

    /// Indices of the live entries, in slot order, into `out`; returns how many.
    pub fn live(&self, out: &mut [u32]) -> usize {
        let mut n = 0;
        for i in 0..self.nslots() {
            if n == out.len() {
                break;
            }
            if self.state(i).load(Ordering::Acquire) == LIVE {
                out[n] = i as u32;
                n += 1;
            }
        }
        n
    }
}
