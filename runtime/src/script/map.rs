//! Associative arrays in the session's globals area: fixed capacity,
//! open addressing, shared by every process of the session, no locks.
//!
//! Layout of one array (at its global's offset, 8-aligned):
//!
//! | offset | what |
//! |---|---|
//! | 0 | [`Header`] (128 bytes) |
//! | 128 | `nslots` entries of `entry_size` bytes |
//!
//! An entry is `state (u64), hash (u64), keys..., value`. A long key is 8
//! bytes, a string key `round8(cap)` bytes (NUL-terminated); a long value
//! 8 bytes, a string value a sequence word + `round8(cap)` bytes, a
//! statistics value `count, sum, min, max` followed by `hist_bytes` of
//! histogram buckets (zeroed when the entry is inserted).
//!
//! `nslots` is the smallest power of two >= 2 x capacity. States go
//! EMPTY -> BUSY (an inserter owns it and writes the key) -> LIVE, LIVE ->
//! DEAD on delete, and DEAD -> BUSY when an insert reuses it. Lookups and
//! updates of existing keys are lock-free: they skip DEAD entries, wait
//! (bounded) on BUSY ones and stop at EMPTY. Inserting a *new* key takes
//! the array's small insert lock (a word in the array's header holding the
//! owner's tid; held for one probe sequence, never across a call out; taken
//! over only when its holder has died (/proc/TID gone or a zombie); a live
//! holder is waited for at most `LOCK_WAIT_NS`, then the insert fails with
//! an error instead), so one key never gets two entries and deleted
//! entries are reused: `delete start[tid()]` loops run forever in a
//! fixed-size array. `used` counts live entries; an insert beyond the
//! capacity is an error ("Array overflow"), never a silent drop. Values
//! are updated in place with atomics (longs, statistics) or a sequence lock
//! (strings).
//!
//! This file: the layout, the checked view ([`Map`]) and where an entry's
//! keys and value are; `map/entries.rs`: finding, inserting and deleting
//! entries.

use core::sync::atomic::{AtomicU64, Ordering};

use super::globals::Globals;

mod entries;

pub const EMPTY: u64 = 0;
pub const BUSY: u64 = 1;
pub const LIVE: u64 = 2;
pub const DEAD: u64 = 3;

pub const HEADER_SIZE: u64 = 128;
/// Spins on a BUSY entry before a lookup moves on, and on a held insert
/// lock before the waiter checks the holder and starts yielding.
const SPIN_LIMIT: u32 = 1 << 20;
/// How long an insert waits for a live holder of the insert lock.
pub const LOCK_WAIT_NS: u64 = 200_000_000;
/// Most keys in one array.
pub const MAX_KEYS: usize = 8;

/// Kinds of keys and values (metadata order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Kind {
    Long = 0,
    Str = 1,
    Stats = 2,
}

/// What describes an array, kept in its header so helpers need only its offset.
#[repr(C)]
pub struct Header {
    pub capacity: AtomicU64,
    pub nslots: AtomicU64,
    /// Live entries.
    pub used: AtomicU64,
    pub entry_size: AtomicU64,
    /// Key kinds, 1 bit each (1 = string), and the key count in bits 56..63.
    pub keys: AtomicU64,
    pub value: AtomicU64,
    /// String capacity (MAXSTRINGLEN + 1).
    pub cap: AtomicU64,
    /// Insert lock: 0 free, else the holder's tid.
    pub lock: AtomicU64,
    /// Histogram bytes after a statistics value.
    pub hist_bytes: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Header>() as u64 <= HEADER_SIZE);

/// The static shape of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub keys: Vec<Kind>,
    pub value: Kind,
    pub capacity: u64,
    /// MAXSTRINGLEN + 1.
    pub cap: u64,
    /// Histogram buckets after a statistics value (bytes, multiple of 8).
    pub hist_bytes: u64,
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

impl Shape {
    fn key_size(&self, k: Kind) -> u64 {
        if k == Kind::Str {
            round8(self.cap)
        } else {
            8
        }
    }

    pub fn nslots(&self) -> u64 {
        (2 * self.capacity.max(1)).next_power_of_two()
    }

    pub fn entry_size(&self) -> u64 {
        let keys: u64 = self.keys.iter().map(|&k| self.key_size(k)).sum();
        let value = match self.value {
            Kind::Long => 8,
            Kind::Str => 8 + round8(self.cap),
            Kind::Stats => 32 + round8(self.hist_bytes),
        };
        16 + keys + value
    }

    /// Bytes of the whole array in the globals area.
    pub fn size(&self) -> u64 {
        HEADER_SIZE + self.nslots() * self.entry_size()
    }
}

/// A view of one array.
///
/// The array's header lives in shared memory that every process of the
/// session can write: [`Map::at`] reads it once, checks it (a shape the
/// compiler could have made, lying inside the globals area as recorded in
/// this process) and keeps the checked copy here. Entry addresses are
/// computed from that copy only, so no header content can send a read or
/// write outside the array. An array whose header fails the check has no
/// slots: lookups find nothing and inserts fail as full.
#[derive(Clone, Copy)]
pub struct Map {
    base: *mut u8,
    /// 0: the header was not valid (nothing is read or written).
    nslots: usize,
    entry_size: usize,
    /// Key kinds, 1 bit each (1 = string).
    strkeys: u64,
    nkeys: usize,
    value: Kind,
    cap: usize,
    hist_bytes: usize,
    capacity: u64,
}

/// Longest string capacity an array may have (MAXSTRINGLEN + 1).
const MAX_CAP: u64 = 1 << 20;
/// Most entries an array may have.
const MAX_CAPACITY: u64 = 1 << 32;

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The array holds `capacity` entries already.
    Full(u64),
    /// The insert lock stayed held by a live thread for [`LOCK_WAIT_NS`].
    Busy,
}

/// A key as helpers receive it: one i64 per key (a long, or a string pointer).
pub type Keys = *const i64;

impl Map {
    /// The array at `off` of `g`, its header checked against the area's
    /// size recorded in this process ([`Globals::size`]).
    ///
    /// # Safety
    /// `off` must be 8-aligned and inside `g`'s mapping (the compiler's
    /// layout); the area must be mapped as long as the view is used.
    pub unsafe fn at(g: &Globals, off: u64) -> Map {
        // SAFETY: caller contract.
        let base = unsafe { g.base().add(off as usize) };
        let mut m = Map {
            base,
            nslots: 0,
            entry_size: 0,
            strkeys: 0,
            nkeys: 0,
            value: Kind::Long,
            cap: 1,
            hist_bytes: 0,
            capacity: 0,
        };
        let avail = (g.size() as u64).saturating_sub(off);
        if avail < HEADER_SIZE || !off.is_multiple_of(8) {
            return m;
        }
        let h = m.header();
        let ld = |a: &AtomicU64| a.load(Ordering::Acquire);
        let (capacity, nslots, entry_size) = (ld(&h.capacity), ld(&h.nslots), ld(&h.entry_size));
        let (keys, value, cap, hist) = (ld(&h.keys), ld(&h.value), ld(&h.cap), ld(&h.hist_bytes));
        let words = [capacity, nslots, entry_size, keys, value, cap, hist];
        let want = crate::base::trusted::ARRAYS.get(base as usize);
        // SAFETY: a non-zero entry is a leaked [u64; 7] (record_shape), never freed.
        if want != 0 && unsafe { *(want as *const [u64; 7]) } != words {
            return m;
        }
        let nkeys = (keys >> 56) as usize;
        let value = match value {
            0 => Kind::Long,
            1 => Kind::Str,
            2 => Kind::Stats,
            _ => return m,
        };
        if nkeys > MAX_KEYS
            || (keys & ((1 << 56) - 1)) >> nkeys != 0
            || !(1..=MAX_CAP).contains(&cap)
            || !hist.is_multiple_of(8)
            || hist > MAX_CAP * 8
            || capacity > MAX_CAPACITY
        {
            return m;
        }
        let shape = Shape {
            keys: Vec::new(),
            value,
            capacity,
            cap,
            hist_bytes: hist,
        };
        let strsz = round8(cap);
        let key_bytes: u64 = (0..nkeys)
            .map(|i| if keys & (1 << i) != 0 { strsz } else { 8 })
            .sum();
        // Shape::entry_size with these keys (the Vec-free form).
        let want_entry = shape.entry_size() + key_bytes;
        let fits = nslots
            .checked_mul(entry_size)
            .and_then(|b| b.checked_add(HEADER_SIZE))
            .is_some_and(|b| b <= avail);
        if nslots != shape.nslots() || entry_size != want_entry || !fits {
            return m;
        }
        m.nslots = nslots as usize;
        m.entry_size = entry_size as usize;
        m.strkeys = keys & ((1 << MAX_KEYS) - 1);
        m.nkeys = nkeys;
        m.value = value;
        m.cap = cap as usize;
        m.hist_bytes = hist as usize;
        m.capacity = capacity;
        m
    }

    /// Record in this process the header the array at `off` of `g` must
    /// have (its module's shape): [`Map::at`] then accepts only that
    /// header, so no other process of the session can change the layout
    /// that compiled code and helpers assume. Not for the hit path
    /// (allocates).
    pub fn record_shape(g: &Globals, off: u64, shape: &Shape) {
        Map::record_shape_at(g.base() as usize + off as usize, shape);
    }

    /// [`Map::record_shape`] by the array's address.
    pub fn record_shape_at(key: usize, shape: &Shape) {
        let mut keys = (shape.keys.len() as u64) << 56;
        for (i, k) in shape.keys.iter().enumerate() {
            if *k == Kind::Str {
                keys |= 1 << i;
            }
        }
        let words: [u64; 7] = [
            shape.capacity,
            shape.nslots(),
            shape.entry_size(),
            keys,
            shape.value as u64,
            shape.cap,
            round8(shape.hist_bytes),
        ];
        let cur = crate::base::trusted::ARRAYS.get(key);
        // SAFETY: as in `at`.
        if cur != 0 && unsafe { *(cur as *const [u64; 7]) } == words {
            return;
        }
        // Leaked: a reader may still hold the old pointer (a few words per array).
        let p = Box::leak(Box::new(words)) as *const [u64; 7] as usize;
        crate::base::trusted::ARRAYS.set(key, p);
    }

    /// Forget the recorded header of the array at `off` of `g`.
    pub fn forget_shape(g: &Globals, off: u64) {
        crate::base::trusted::ARRAYS.remove(g.base() as usize + off as usize);
    }

    /// Did the header pass the checks of [`Map::at`]?
    pub fn valid(&self) -> bool {
        self.nslots != 0
    }

    fn header(&self) -> &Header {
        // SAFETY: `at` contract (checked: HEADER_SIZE bytes at base, or
        // `init` by the array's creator); Header is atomics only.
        unsafe { &*(self.base as *const Header) }
    }

    /// Write the header of a zeroed array (its creator, with the compiler's
    /// shape), and record it ([`Map::record_shape`]). Views made before
    /// this see no array: make a new one.
    pub fn init(&self, shape: &Shape) {
        Map::record_shape_at(self.base as usize, shape);
        let h = self.header();
        let mut bits = (shape.keys.len() as u64) << 56;
        for (i, k) in shape.keys.iter().enumerate() {
            if *k == Kind::Str {
                bits |= 1 << i;
            }
        }
        h.capacity.store(shape.capacity, Ordering::Relaxed);
        h.nslots.store(shape.nslots(), Ordering::Relaxed);
        h.entry_size.store(shape.entry_size(), Ordering::Relaxed);
        h.keys.store(bits, Ordering::Relaxed);
        h.value.store(shape.value as u64, Ordering::Relaxed);
        h.hist_bytes
            .store(round8(shape.hist_bytes), Ordering::Relaxed);
        h.cap.store(shape.cap, Ordering::Release);
    }

    fn nkeys(&self) -> usize {
        self.nkeys
    }

    fn key_is_str(&self, i: usize) -> bool {
        i < MAX_KEYS && self.strkeys & (1 << i) != 0
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn value_kind(&self) -> Kind {
        self.value
    }

    pub fn nslots(&self) -> usize {
        self.nslots
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn entry(&self, i: usize) -> *mut u8 {
        // Callers mask i with nslots - 1; the clamp keeps any other index
        // inside the array too.
        let i = i & self.nslots.wrapping_sub(1);
        // SAFETY: i < nslots; the array's nslots * entry_size bytes lie in
        // the globals area (checked by `at`).
        unsafe { self.base.add(HEADER_SIZE as usize + i * self.entry_size) }
    }

    pub fn state(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the state word starts the entry (8-aligned).
        unsafe { &*(self.entry(i) as *const AtomicU64) }
    }

    fn key_ptr(&self, i: usize, k: usize) -> *mut u8 {
        let strsz = round8(self.cap as u64) as usize;
        let mut off = 16;
        for j in 0..k.min(self.nkeys) {
            off += if self.key_is_str(j) { strsz } else { 8 };
        }
        // SAFETY: inside entry i (its size was checked against the keys).
        unsafe { self.entry(i).add(off) }
    }

    /// Address of entry `i`'s value.
    pub fn value_ptr(&self, i: usize) -> *mut u8 {
        self.key_ptr(i, self.nkeys())
    }

    /// Key `k` of entry `i` as a long (strings: 0).
    pub fn key_long(&self, i: usize, k: usize) -> i64 {
        if self.key_is_str(k) || k >= self.nkeys {
            return 0;
        }
        // SAFETY: an 8-byte key slot.
        unsafe { (self.key_ptr(i, k) as *const i64).read() }
    }

    /// Key `k` of entry `i` as a NUL-terminated string pointer (its slot
    /// holds `cap()` bytes; read it with a bound, it is shared memory).
    pub fn key_str(&self, i: usize, k: usize) -> *const u8 {
        self.key_ptr(i, k)
    }

    pub fn is_str_key(&self, k: usize) -> bool {
        self.key_is_str(k)
    }

    pub fn key_count(&self) -> usize {
        self.nkeys()
    }

    /// The long value of entry `i`.
    pub fn long(&self, i: usize) -> &AtomicU64 {
        // SAFETY: an 8-aligned long value slot.
        unsafe { &*(self.value_ptr(i) as *const AtomicU64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(shape: &Shape) -> (Vec<u64>, Globals, Map) {
        let size = 64 + shape.size();
        let mut mem = vec![0u64; size as usize / 8];
        // SAFETY: mem outlives the views in each test.
        let g = unsafe { Globals::from_raw(mem.as_mut_ptr() as *mut u8) };
        g.init(size, 0);
        // SAFETY: the array lives at 64.
        unsafe { Map::at(&g, 64) }.init(shape);
        // SAFETY: as above, now initialised.
        let m = unsafe { Map::at(&g, 64) };
        assert!(m.valid());
        (mem, g, m)
    }

    #[test]
    fn the_insert_lock_is_never_stolen_from_a_live_holder() {
        let shape = Shape {
            keys: vec![Kind::Long],
            value: Kind::Long,
            capacity: 4,
            cap: 16,
            hist_bytes: 0,
        };
        let (_mem, _g, m) = mk(&shape);
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(crate::base::sys::gettid()).unwrap();
            let _ = go_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // A live thread holds the insert lock (preempted mid-insert).
        m.header().lock.store(tid as u64, Ordering::Relaxed);
        let k = [7i64];
        // SAFETY: one long key.
        unsafe {
            assert_eq!(m.find_or_insert(k.as_ptr()), Err(MapError::Busy));
            assert_eq!(m.find(k.as_ptr()), None);
        }
        assert_eq!(m.header().lock.load(Ordering::Relaxed), tid as u64);
        // The holder dies: the lock is taken over.
        go_tx.send(()).unwrap();
        h.join().unwrap();
        // SAFETY: as above.
        unsafe {
            let i = m.find_or_insert(k.as_ptr()).unwrap();
            assert_eq!(m.find(k.as_ptr()), Some(i));
        }
        assert_eq!(m.header().lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn insert_find_delete_and_overflow() {
        let shape = Shape {
            keys: vec![Kind::Long, Kind::Str],
            value: Kind::Long,
            capacity: 3,
            cap: 16,
            hist_bytes: 0,
        };
        let (_mem, _g, m) = mk(&shape);
        let k = |n: i64, s: &core::ffi::CStr| [n, s.as_ptr() as i64];
        // SAFETY: keys arrays of two values with NUL-terminated strings.
        unsafe {
            let a = m.find_or_insert(k(1, c"x").as_ptr()).unwrap();
            m.long(a).fetch_add(5, Ordering::Relaxed);
            assert_eq!(m.find_or_insert(k(1, c"x").as_ptr()), Ok(a));
            assert_eq!(m.find(k(1, c"y").as_ptr()), None);
            let b = m.find_or_insert(k(1, c"y").as_ptr()).unwrap();
            assert_ne!(a, b);
            assert_eq!(m.long(a).load(Ordering::Relaxed), 5);
            m.delete(k(1, c"x").as_ptr());
            assert_eq!(m.find(k(1, c"x").as_ptr()), None);
            assert!(m.find_or_insert(k(2, c"z").as_ptr()).is_ok());
            assert!(m.find_or_insert(k(3, c"w").as_ptr()).is_ok());
            assert_eq!(
                m.find_or_insert(k(4, c"v").as_ptr()),
                Err(MapError::Full(3))
            );
            let mut live = [0u32; 8];
            assert_eq!(m.live(&mut live), 3);
            m.clear();
            assert_eq!(m.live(&mut live), 0);
            assert!(m.find_or_insert(k(3, c"w").as_ptr()).is_ok());
        }
    }

    #[test]
    fn deleted_entries_are_reused_forever() {
        let shape = Shape {
            keys: vec![Kind::Long],
            value: Kind::Long,
            capacity: 4,
            cap: 16,
            hist_bytes: 0,
        };
        let (_mem, _g, m) = mk(&shape);
        for n in 0..10_000i64 {
            let key = [n];
            // SAFETY: one long key.
            unsafe {
                let i = m.find_or_insert(key.as_ptr()).unwrap();
                m.long(i).store(n as u64, Ordering::Relaxed);
                m.delete(key.as_ptr());
            }
        }
        let mut live = [0u32; 8];
        assert_eq!(m.live(&mut live), 0);
    }

    #[test]
    fn concurrent_inserts_make_one_entry_per_key() {
        let shape = Shape {
            keys: vec![Kind::Long],
            value: Kind::Long,
            capacity: 64,
            cap: 16,
            hist_bytes: 0,
        };
        let (mut mem, _g, _m) = mk(&shape);
        let base = mem.as_mut_ptr() as usize;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(move || {
                    // SAFETY: mem outlives the scope.
                    let g = unsafe { Globals::from_raw(base as *mut u8) };
                    // SAFETY: as in mk.
                    let m = unsafe { Map::at(&g, 64) };
                    for n in 0..10_000i64 {
                        let key = [n % 50];
                        // SAFETY: one long key.
                        let i = unsafe { m.find_or_insert(key.as_ptr()) }.unwrap();
                        m.long(i).fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // SAFETY: as above.
        let g = unsafe { Globals::from_raw(base as *mut u8) };
        // SAFETY: as in mk.
        let m = unsafe { Map::at(&g, 64) };
        let mut live = [0u32; 128];
        let n = m.live(&mut live);
        assert_eq!(n, 50);
        let total: u64 = live[..n]
            .iter()
            .map(|&i| m.long(i as usize).load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, 80_000);
    }
}
