//! Sizes of the shared mappings, kept in this process's own memory.
//!
//! Every process of a session can write the session mapping (control
//! block, ring, globals area). Its sizes must therefore never be read back
//! from it: whoever created or validated a mapping records its size here
//! (keyed by the mapping's address), and every later user looks it up.
//! An address that was never recorded has size 0, which makes the view
//! inert (nothing is read or written). Lookups are a short scan of
//! atomics: hit-path safe (no locks, no allocation).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 64;
/// Arrays (one entry each) of every module of the process.
const ARRAY_SLOTS: usize = 1024;

/// One table of `address -> size` entries, plus a counter per entry.
pub struct Registry<const N: usize = SLOTS> {
    keys: [AtomicUsize; N],
    vals: [AtomicUsize; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> Registry<N> {
    pub const fn new() -> Registry<N> {
        Registry {
            keys: [const { AtomicUsize::new(0) }; N],
            vals: [const { AtomicUsize::new(0) }; N],
            counts: [const { AtomicU64::new(0) }; N],
        }
    }

    fn slot(&self, key: usize) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| k.load(Ordering::Acquire) == key)
    }

    /// Record `key -> val` (replacing an earlier entry of `key`). False when
    /// the table is full (the mapping then stays inert).
    pub fn set(&self, key: usize, val: usize) -> bool {
        if key == 0 {
            return false;
        }
        if let Some(i) = self.slot(key) {
            self.vals[i].store(val, Ordering::Release);
            self.counts[i].store(0, Ordering::Relaxed);
            return true;
        }
        // A free slot's value and counter are 0 ([`Registry::remove`] clears
        // them before it frees the key), so a reader that sees the new key
        // sees 0 or the value. Only the thread that wins the key writes the
        // slot: clearing it before the claim would let a thread that lost
        // the race wipe the winner's value.
        for (i, k) in self.keys.iter().enumerate() {
            if k.load(Ordering::Relaxed) == 0
                && k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                // A `count` that raced with the last `remove` may have
                // left one behind.
                self.counts[i].store(0, Ordering::Relaxed);
                self.vals[i].store(val, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// The size recorded for `key` (0: none).
    pub fn get(&self, key: usize) -> usize {
        match self.slot(key) {
            Some(i) if key != 0 => self.vals[i].load(Ordering::Acquire),
            _ => 0,
        }
    }

    /// Forget `key` (its mapping is going away).
    pub fn remove(&self, key: usize) {
        if let Some(i) = self.slot(key).filter(|_| key != 0) {
            self.vals[i].store(0, Ordering::Release);
            self.counts[i].store(0, Ordering::Relaxed);
            self.keys[i].store(0, Ordering::Release);
        }
    }

    /// Add to `key`'s counter (ignored for an unknown key).
    pub fn count(&self, key: usize, n: u64) {
        if let Some(i) = self.slot(key).filter(|_| key != 0) {
            self.counts[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn counted(&self, key: usize) -> u64 {
        match self.slot(key) {
            Some(i) if key != 0 => self.counts[i].load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

impl<const N: usize> Default for Registry<N> {
    fn default() -> Self {
        Registry::new()
    }
}

/// Session mappings: base -> ring size; counter: malformed ring records.
pub static SESSIONS: Registry = Registry::new();
/// Globals areas: base -> bytes of the area.
pub static GLOBALS: Registry = Registry::new();
/// Arrays: address -> their checked header words (a leaked `[u64; 7]`,
/// see `script::map`).
pub static ARRAYS: Registry<ARRAY_SLOTS> = Registry::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_replace_remove() {
        let r: Registry = Registry::new();
        assert_eq!(r.get(0x1000), 0);
        assert!(r.set(0x1000, 64));
        assert!(r.set(0x2000, 128));
        assert_eq!(r.get(0x1000), 64);
        assert!(r.set(0x1000, 256));
        assert_eq!(r.get(0x1000), 256);
        r.count(0x1000, 3);
        assert_eq!(r.counted(0x1000), 3);
        r.remove(0x1000);
        assert_eq!(r.get(0x1000), 0);
        assert_eq!(r.get(0x2000), 128);
        assert!(!r.set(0, 1));
        for k in 1..SLOTS {
            r.set(0x10000 + k * 8, 1);
        }
        assert!(!r.set(0x999000, 1), "full");
    }

    /// Threads that record, read back and forget their own keys at once
    /// never see another thread's claim of a free slot wipe their value
    /// (a slot's value is only written by the thread that won its key).
    #[test]
    fn concurrent_records_keep_their_values() {
        static R: Registry = Registry::new();
        let threads: Vec<_> = (1..=4usize)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut lost = 0;
                    for i in 0..200_000usize {
                        let key = t << 32 | i << 4;
                        let val = i + 1;
                        assert!(R.set(key, val));
                        if R.get(key) != val {
                            lost += 1;
                        }
                        R.remove(key);
                    }
                    lost
                })
            })
            .collect();
        let lost: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            lost, 0,
            "values lost to a concurrent claim of the same free slot"
        );
    }
}
