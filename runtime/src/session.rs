//! The session shared memory: one memfd created by ptap and mapped by ptap
//! and by every target process (forked children inherit the mapping, exec'ed
//! children re-map it from `PTAP_SESSION_FD` / `PTAP_SESSION`).
//!
//! Layout (all offsets from the start of the mapping):
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | 4096 | [`Control`] block |
//! | 4096 | `ring_size` | output ring (power of two, multiple of 8) |
//!
//! The ring is a lock-free multi-producer / single-consumer queue of
//! length-prefixed records. A producer reserves space with a CAS on `head`,
//! copies its payload, then publishes the 8-byte header with a release store;
//! the consumer (ptap) reads records in order, zeroes them and advances
//! `tail`. A record is one whole message, so lines never interleave.
//! When the ring is full the record is dropped and `dropped` is incremented.
//! No producer ever waits for anything: atomics only.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: u64 = 0x5054_4150_5345_5331; // "PTAPSES1"
pub const VERSION: u32 = 1;
pub const CONTROL_SIZE: usize = 4096;
pub const DEFAULT_RING_SIZE: usize = 1 << 20;
pub const MAX_PIDS: usize = 64;

/// Record kinds.
pub const REC_TEXT: u16 = 1; // printk text, goes to ptap's stdout
pub const REC_FORMAT: u16 = 2; // compiled scripts: u32 format id + u64 args (ptap formats)
pub const REC_DIAG: u16 = 3; // runtime diagnostics ("ptap: ..."), goes to ptap's stderr

/// Environment variables of the protocol.
pub const ENV_FD: &str = "PTAP_SESSION_FD";
pub const ENV_PATH: &str = "PTAP_SESSION";
pub const ENV_MODULE: &str = "PTAP_MODULE";

#[repr(C)]
pub struct Control {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub ring_size: AtomicU32,
    /// Bytes ever reserved by producers.
    pub head: AtomicU64,
    /// Bytes ever consumed by ptap.
    pub tail: AtomicU64,
    /// Records dropped because the ring was full.
    pub dropped: AtomicU64,
    /// Futex word: 0 = running, 1 = ptap asks every runtime to detach
    /// (cleanup_module + unregister everything, the target goes on).
    pub detach: AtomicU32,
    /// Number of runtimes currently attached (init done, not yet cleaned up).
    pub attached: AtomicU32,
    /// Handlers aborted because they faulted.
    pub handler_faults: AtomicU64,
    /// Pids of attached processes (0 = free).
    pub pids: [AtomicI32; MAX_PIDS],
    /// Runtimes that ever attached (monotonic): 0 at the end means the
    /// preload never took (e.g. a statically linked program).
    pub attaches: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<Control>() <= CONTROL_SIZE);

/// A mapped session (in ptap or in a target).
#[derive(Clone, Copy)]
pub struct Session {
    base: *mut u8,
}

// SAFETY: the shared memory is accessed only through atomics (control block,
// ring headers) or through byte copies ordered by those atomics.
unsafe impl Send for Session {}
// SAFETY: see above.
unsafe impl Sync for Session {}

impl Session {
    pub fn total_size(ring_size: usize) -> usize {
        CONTROL_SIZE + ring_size
    }

    /// Wrap an existing mapping.
    ///
    /// # Safety
    /// `base` must point to a mapping of at least `total_size(ring_size)`
    /// bytes, that stays mapped for the life of the returned value.
    pub unsafe fn from_raw(base: *mut u8) -> Session {
        Session { base }
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Initialise a fresh (zeroed) mapping.
    pub fn init(&self, ring_size: usize) {
        assert!(ring_size.is_power_of_two() && ring_size >= 64);
        let c = self.control();
        c.ring_size.store(ring_size as u32, Ordering::Relaxed);
        c.version.store(VERSION, Ordering::Relaxed);
        c.magic.store(MAGIC, Ordering::Release);
    }

    /// Is this a valid session of our version?
    pub fn valid(&self) -> bool {
        let c = self.control();
        c.magic.load(Ordering::Acquire) == MAGIC && c.version.load(Ordering::Relaxed) == VERSION
    }

    pub fn control(&self) -> &Control {
        // SAFETY: the mapping is at least CONTROL_SIZE bytes (from_raw contract)
        // and Control is made only of atomics, valid for any bit pattern.
        unsafe { &*(self.base as *const Control) }
    }

    pub fn ring_size(&self) -> usize {
        self.control().ring_size.load(Ordering::Relaxed) as usize
    }

    fn ring(&self) -> *mut u8 {
        // SAFETY: the ring follows the control block inside the mapping.
        unsafe { self.base.add(CONTROL_SIZE) }
    }

    fn header_at(&self, pos: u64) -> &AtomicU64 {
        let off = (pos as usize) & (self.ring_size() - 1);
        // SAFETY: off is 8-aligned (records are 8-aligned, size a power of two)
        // and inside the ring.
        unsafe { &*(self.ring().add(off) as *const AtomicU64) }
    }

    fn copy_in(&self, pos: u64, data: &[u8]) {
        let size = self.ring_size();
        let off = (pos as usize) & (size - 1);
        let first = data.len().min(size - off);
        // SAFETY: both ranges lie inside the ring; the producer owns
        // [pos, pos+len) after a successful reservation.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.ring().add(off), first);
            core::ptr::copy_nonoverlapping(
                data.as_ptr().add(first),
                self.ring(),
                data.len() - first,
            );
        }
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let size = self.ring_size();
        let off = (pos as usize) & (size - 1);
        let first = out.len().min(size - off);
        let n = out.len();
        // SAFETY: both ranges lie inside the ring; the record was published.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ring().add(off), out.as_mut_ptr(), first);
            core::ptr::copy_nonoverlapping(self.ring(), out.as_mut_ptr().add(first), n - first);
        }
    }

    fn zero(&self, pos: u64, len: usize) {
        let size = self.ring_size();
        let off = (pos as usize) & (size - 1);
        let first = len.min(size - off);
        // SAFETY: ranges inside the ring, owned by the consumer until tail moves.
        unsafe {
            core::ptr::write_bytes(self.ring().add(off), 0, first);
            core::ptr::write_bytes(self.ring(), 0, len - first);
        }
    }

    /// Append one record made of the concatenation of `parts`. Returns false
    /// (and counts a drop) if the ring has no room. Never blocks, never allocates.
    pub fn write_record(&self, kind: u16, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let size = self.ring_size();
        let need = 8 + ((len + 7) & !7);
        let c = self.control();
        if need > size || len > u32::MAX as usize {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut h = c.head.load(Ordering::Relaxed);
        loop {
            let t = c.tail.load(Ordering::Acquire);
            if h + need as u64 - t > size as u64 {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match c.head.compare_exchange_weak(
                h,
                h + need as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(cur) => h = cur,
            }
        }
        let mut pos = h + 8;
        for p in parts {
            self.copy_in(pos, p);
            pos += p.len() as u64;
        }
        let hdr = (len as u64) | ((kind as u64) << 32) | (1u64 << 63);
        self.header_at(h).store(hdr, Ordering::Release);
        true
    }

    /// Consume every published record in order, calling `f(kind, payload)`.
    /// Only one consumer may call this at a time. Returns the number of records.
    pub fn drain(&self, mut f: impl FnMut(u16, &[u8])) -> usize {
        let c = self.control();
        let mut n = 0;
        let mut buf = Vec::new();
        loop {
            let t = c.tail.load(Ordering::Relaxed);
            if t == c.head.load(Ordering::Acquire) {
                break;
            }
            let hdr = self.header_at(t).load(Ordering::Acquire);
            if hdr == 0 {
                break; // reserved but not yet published
            }
            let len = (hdr & 0xffff_ffff) as usize;
            let kind = ((hdr >> 32) & 0xffff) as u16;
            buf.resize(len, 0);
            self.copy_out(t + 8, &mut buf);
            let need = 8 + ((len + 7) & !7);
            self.zero(t, need);
            c.tail.store(t + need as u64, Ordering::Release);
            f(kind, &buf);
            n += 1;
        }
        n
    }

    /// Bytes reserved but never published (a producer died mid-record).
    pub fn pending_bytes(&self) -> u64 {
        let c = self.control();
        c.head.load(Ordering::Acquire) - c.tail.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.control().dropped.load(Ordering::Relaxed)
    }

    /// Record `pid` as attached. Returns false if the table is full.
    pub fn add_pid(&self, pid: i32) -> bool {
        let c = self.control();
        // An exec'ed process keeps its pid: count it once.
        if c.pids.iter().any(|p| p.load(Ordering::Acquire) == pid) {
            return true;
        }
        c.attached.fetch_add(1, Ordering::AcqRel);
        c.attaches.fetch_add(1, Ordering::AcqRel);
        for slot in &c.pids {
            if slot
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
    }

    pub fn remove_pid(&self, pid: i32) {
        let c = self.control();
        for slot in &c.pids {
            if slot
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                c.attached.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        }
    }

    /// Pids recorded as attached.
    pub fn pids(&self) -> Vec<i32> {
        self.control()
            .pids
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .filter(|&p| p != 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(size: usize) -> (Vec<u64>, Session) {
        let mut mem = vec![0u64; Session::total_size(size) / 8];
        // SAFETY: mem outlives the session in each test.
        let s = unsafe { Session::from_raw(mem.as_mut_ptr() as *mut u8) };
        s.init(size);
        (mem, s)
    }

    #[test]
    fn records_roundtrip_and_wrap() {
        let (_m, s) = mk(64);
        let mut got = Vec::new();
        for i in 0..20u8 {
            assert!(s.write_record(REC_TEXT, &[b"ab", &[b'0' + i % 10]]));
            assert!(s.write_record(REC_DIAG, &[b"0123456789abc"]));
            s.drain(|k, p| got.push((k, p.to_vec())));
        }
        assert_eq!(got.len(), 40);
        assert_eq!(got[2], (REC_TEXT, b"ab1".to_vec()));
        assert_eq!(got[39], (REC_DIAG, b"0123456789abc".to_vec()));
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let (_m, s) = mk(64);
        // each record takes 8 + 16 = 24 bytes: two fit in 64, the third does not.
        assert!(s.write_record(REC_TEXT, &[b"0123456789"]));
        assert!(s.write_record(REC_TEXT, &[b"0123456789"]));
        assert!(!s.write_record(REC_TEXT, &[b"0123456789"]));
        assert_eq!(s.dropped(), 1);
        assert_eq!(s.drain(|_, _| {}), 2);
        assert!(s.write_record(REC_TEXT, &[b"x"]));
    }

    #[test]
    fn concurrent_producers_never_tear_records() {
        let size = 1 << 12;
        let (mut m, _s) = mk(size);
        let base = m.as_mut_ptr() as usize;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hs = Vec::new();
        for t in 0..4u8 {
            hs.push(std::thread::spawn(move || {
                // SAFETY: the buffer outlives the threads (joined below).
                let s = unsafe { Session::from_raw(base as *mut u8) };
                let line = [b'a' + t; 37];
                let mut ok = 0u64;
                for _ in 0..20000 {
                    if s.write_record(REC_TEXT, &[&line]) {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        // SAFETY: as above.
        let s = unsafe { Session::from_raw(base as *mut u8) };
        let d2 = done.clone();
        let mut seen = 0u64;
        let mut written = 0u64;
        let mut finished = 0;
        while finished < 4 {
            s.drain(|_, p| {
                assert_eq!(p.len(), 37);
                assert!(p.iter().all(|&b| b == p[0]));
                seen += 1;
            });
            finished = hs.iter().filter(|h| h.is_finished()).count();
        }
        for h in hs {
            written += h.join().unwrap();
        }
        s.drain(|_, _| seen += 1);
        d2.store(true, Ordering::Relaxed);
        assert_eq!(seen, written);
        assert_eq!(seen + s.dropped(), 80000);
    }
}
