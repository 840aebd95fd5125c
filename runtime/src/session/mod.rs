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
//! length-prefixed records, each `8 + round_up(len, 8)` bytes: an 8-byte
//! header word, then the payload. `head`/`tail` are byte counters that only
//! grow (wrapping arithmetic; `head - tail` is the bytes in use).
//!
//! Header word states (little-endian u64 at the record's start):
//!
//! | bits | free (0) | busy | published |
//! |---|---|---|---|
//! | 63 | 0 | 0 | 1 |
//! | 62 | 0 | 1 | 0 |
//! | 32..61 | 0 | writer tid (30 bits) | bits 32..47: kind |
//! | 0..31 | 0 | payload length | payload length |
//!
//! A producer reserves space with a CAS on `head`, immediately stores the
//! busy header (length + its tid), copies its payload (never faulting:
//! caller memory is copied with `process_vm_readv`, see
//! [`Part::Untrusted`]), then publishes with a CAS busy -> published
//! (release). A record whose payload could not be read is published with
//! kind [`REC_SKIP`] and counted in `dropped`.
//! The consumer (ptap) reads records in order, zeroes them and advances
//! `tail`. A record that stays busy because its writer died (thread killed
//! mid-record by exit_group, /proc/TID gone or a zombie) or that stays busy
//! for [`STALL_TIMEOUT_NS`] while its writer is not stopped is skipped
//! (CAS busy -> 0, so a late writer cannot publish it) and counted in
//! `dropped`; the consumer keeps that stall's position and start time in
//! `stall_pos`/`stall_since`. Residual: a writer killed in the few
//! instructions between its CAS on `head` and its busy store leaves a zero
//! header of unknown length: output stops there (`pending_bytes` reports it).
//! A record is one whole message, so lines never interleave.
//! When the ring is full the record is dropped and `dropped` is incremented.
//! No producer ever waits for anything: atomics only.

pub mod output;

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: u64 = 0x5054_4150_5345_5331; // "PTAPSES1"
pub const VERSION: u32 = 2;
pub const CONTROL_SIZE: usize = 4096;
pub const DEFAULT_RING_SIZE: usize = 1 << 20;
pub const MAX_PIDS: usize = 64;

/// Record kinds.
pub const REC_TEXT: u16 = 1; // printk text, goes to ptap's stdout
pub const REC_FORMAT: u16 = 2; // compiled scripts: u32 format id + u64 args (ptap formats)
pub const REC_DIAG: u16 = 3; // runtime diagnostics ("ptap: ..."), goes to ptap's stderr
/// A record whose payload could not be read: skipped by the consumer.
pub const REC_SKIP: u16 = 0xffff;

/// Header bits (see the table above).
const PUBLISHED: u64 = 1 << 63;
const BUSY: u64 = 1 << 62;
const TID_MASK: u64 = (1 << 30) - 1;
/// A busy record whose (running) writer made no progress for this long is skipped.
pub const STALL_TIMEOUT_NS: u64 = 2_000_000_000;

/// One piece of a record's payload.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    /// Runtime memory, always readable.
    Bytes(&'a [u8]),
    /// Caller memory (may be unmapped): copied with `process_vm_readv`.
    Untrusted { addr: u64, len: usize },
}

impl Part<'_> {
    pub fn len(&self) -> usize {
        match *self {
            Part::Bytes(b) => b.len(),
            Part::Untrusted { len, .. } => len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// State letter of thread `tid` from /proc/TID/stat (None: no such thread).
/// Consumer side only (allocates).
fn thread_state(tid: i32) -> Option<u8> {
    let s = std::fs::read(format!("/proc/{tid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    s.get(close + 2).copied()
}

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
    /// Consumer only: ring position of the busy record it is waiting on,
    /// and since when (CLOCK_MONOTONIC ns, 0 = not waiting).
    pub stall_pos: AtomicU64,
    pub stall_since: AtomicU64,
    /// Processes where the C module did not load (dlopen failed, no
    /// init_module, or init_module() returned an error, faulted or overran
    /// its time; also a faulting cleanup_module()), and where it did: when
    /// it loaded nowhere, ptap exits 1 (in a followed tree, a process
    /// without the probed function failing is normal).
    pub module_errors: AtomicU32,
    pub module_loads: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<Control>() <= CONTROL_SIZE);

/// A mapped session (in ptap or in a target).
///
/// The ring size is kept here, in this process's memory (recorded in
/// [`crate::base::trusted::SESSIONS`] by whoever created or validated the
/// mapping), never re-read from the mapping: any process of the session
/// can write the control block. A session of unknown size (ring 0) is
/// inert: writes are dropped, nothing is drained.
#[derive(Clone, Copy)]
pub struct Session {
    base: *mut u8,
    ring: usize,
}

// SAFETY: the shared memory is accessed only through atomics (control block,
// ring headers) or through byte copies ordered by those atomics.
unsafe impl Send for Session {}
// SAFETY: see above.
unsafe impl Sync for Session {}

/// Ring sizes a session may have.
pub const MIN_RING: usize = 64;
pub const MAX_RING: usize = 1 << 30;

fn ring_ok(n: usize) -> bool {
    n.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&n)
}

impl Session {
    pub fn total_size(ring_size: usize) -> usize {
        CONTROL_SIZE + ring_size
    }

    /// The session at `base`, with the ring size recorded when it was
    /// created ([`Session::create`]) or validated ([`Session::adopt`]) in
    /// this process; inert if none was.
    ///
    /// # Safety
    /// `base` must point to a mapping of at least `CONTROL_SIZE` bytes (and
    /// of `total_size(ring)` once recorded), that stays mapped for the life
    /// of the returned value.
    pub unsafe fn from_raw(base: *mut u8) -> Session {
        Session {
            base,
            ring: crate::base::trusted::SESSIONS.get(base as usize),
        }
    }

    /// Initialise a fresh (zeroed) mapping with a ring of `ring_size` bytes
    /// and record its size in this process.
    ///
    /// # Safety
    /// `base` must point to a writable mapping of at least
    /// `total_size(ring_size)` bytes that stays mapped until [`Session::forget`].
    pub unsafe fn create(base: *mut u8, ring_size: usize) -> Session {
        assert!(ring_ok(ring_size), "bad ring size {ring_size}");
        crate::base::trusted::SESSIONS.set(base as usize, ring_size);
        // SAFETY: caller contract.
        let s = unsafe { Session::from_raw(base) };
        let c = s.control();
        c.ring_size.store(ring_size as u32, Ordering::Relaxed);
        c.version.store(VERSION, Ordering::Relaxed);
        c.magic.store(MAGIC, Ordering::Release);
        s
    }

    /// A session mapping of `len` bytes made by another process: its
    /// header is read once and checked (magic, version, a ring size that
    /// fits in `len`), and the ring size is recorded in this process.
    ///
    /// # Safety
    /// `base` must point to a mapping of `len` bytes that stays mapped
    /// until [`Session::forget`] (or for the life of the process).
    pub unsafe fn adopt(base: *mut u8, len: usize) -> Option<Session> {
        if len < CONTROL_SIZE {
            return None;
        }
        // SAFETY: len >= CONTROL_SIZE; Control is atomics only.
        let c = unsafe { &*(base as *const Control) };
        let ring = c.ring_size.load(Ordering::Relaxed) as usize;
        let ok = c.magic.load(Ordering::Acquire) == MAGIC
            && c.version.load(Ordering::Relaxed) == VERSION
            && ring_ok(ring)
            && Session::total_size(ring) <= len;
        if !ok || !crate::base::trusted::SESSIONS.set(base as usize, ring) {
            return None;
        }
        Some(Session { base, ring })
    }

    /// Stop using this mapping (about to be unmapped).
    pub fn forget(&self) {
        crate::base::trusted::SESSIONS.remove(self.base as usize);
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Is this a valid session of our version (and of a known size)?
    pub fn valid(&self) -> bool {
        let c = self.control();
        self.ring != 0
            && c.magic.load(Ordering::Acquire) == MAGIC
            && c.version.load(Ordering::Relaxed) == VERSION
    }

    pub fn control(&self) -> &Control {
        // SAFETY: the mapping is at least CONTROL_SIZE bytes (from_raw contract)
        // and Control is made only of atomics, valid for any bit pattern.
        unsafe { &*(self.base as *const Control) }
    }

    /// The ring's size in bytes (this process's record, not the mapping's).
    pub fn ring_size(&self) -> usize {
        self.ring
    }

    /// Malformed ring records this process skipped (drain).
    pub fn malformed(&self) -> u64 {
        crate::base::trusted::SESSIONS.counted(self.base as usize)
    }

    fn ring(&self) -> *mut u8 {
        // SAFETY: the ring follows the control block inside the mapping.
        unsafe { self.base.add(CONTROL_SIZE) }
    }

    fn header_at(&self, pos: u64) -> &AtomicU64 {
        let off = (pos as usize) & (self.ring - 1);
        // SAFETY: off is 8-aligned (records are 8-aligned, size a power of two)
        // and inside the ring; callers check ring != 0.
        unsafe { &*(self.ring().add(off & !7) as *const AtomicU64) }
    }

    /// `len <= ring` bytes from ring position `pos`: (offset, bytes before the wrap).
    fn span(&self, pos: u64, len: usize) -> (usize, usize) {
        debug_assert!(len <= self.ring);
        let off = (pos as usize) & (self.ring - 1);
        (off, len.min(self.ring - off))
    }

    fn copy_in(&self, pos: u64, data: &[u8]) {
        if data.len() > self.ring {
            return;
        }
        let (off, first) = self.span(pos, data.len());
        // SAFETY: both ranges lie inside the ring (len <= ring); the producer
        // owns [pos, pos+len) after a successful reservation.
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
        if out.len() > self.ring {
            return;
        }
        let n = out.len();
        let (off, first) = self.span(pos, n);
        // SAFETY: both ranges lie inside the ring (n <= ring).
        unsafe {
            core::ptr::copy_nonoverlapping(self.ring().add(off), out.as_mut_ptr(), first);
            core::ptr::copy_nonoverlapping(self.ring(), out.as_mut_ptr().add(first), n - first);
        }
    }

    fn zero(&self, pos: u64, len: usize) {
        let len = len.min(self.ring);
        let (off, first) = self.span(pos, len);
        // SAFETY: ranges inside the ring (len <= ring), owned by the consumer
        // until tail moves.
        unsafe {
            core::ptr::write_bytes(self.ring().add(off), 0, first);
            core::ptr::write_bytes(self.ring(), 0, len - first);
        }
    }

    /// Append one record made of the concatenation of `parts`. Returns false
    /// (and counts a drop) if the ring has no room. Never blocks, never allocates.
    pub fn write_record(&self, kind: u16, parts: &[&[u8]]) -> bool {
        let mut ps: [Part<'_>; 8] = [const { Part::Bytes(&[]) }; 8];
        if parts.len() <= ps.len() {
            for (d, p) in ps.iter_mut().zip(parts) {
                *d = Part::Bytes(p);
            }
            return self.write_parts(kind, &ps[..parts.len()]);
        }
        // Many parts (script records): all trusted runtime memory.
        self.write_with(kind, parts.iter().map(|p| p.len()).sum(), |pos| {
            let mut pos = pos;
            for p in parts {
                self.copy_in(pos, p);
                pos = pos.wrapping_add(p.len() as u64);
            }
            true
        })
    }

    /// Like [`Session::write_record`], with parts that may be caller memory
    /// read without faulting ([`Part::Untrusted`]). A record whose memory
    /// cannot be read is not delivered (counted in `dropped`); returns false.
    pub fn write_parts(&self, kind: u16, parts: &[Part<'_>]) -> bool {
        let len = parts.iter().fold(0usize, |a, p| a.saturating_add(p.len()));
        self.write_with(kind, len, |pos| {
            let mut pos = pos;
            for p in parts {
                match *p {
                    Part::Bytes(b) => self.copy_in(pos, b),
                    Part::Untrusted { addr, len } => {
                        if !self.copy_in_untrusted(pos, addr, len) {
                            return false;
                        }
                    }
                }
                pos = pos.wrapping_add(p.len() as u64);
            }
            true
        })
    }

    /// Reserve `len` payload bytes, mark them busy, let `fill(payload_pos)`
    /// write them, publish. `fill` returning false publishes a skip record.
    fn write_with(&self, kind: u16, len: usize, fill: impl FnOnce(u64) -> bool) -> bool {
        let size = self.ring_size();
        let c = self.control();
        if len > size.saturating_sub(8) || len > u32::MAX as usize {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let need = (8 + ((len + 7) & !7)) as u64;
        let h = loop {
            // Tail first, then head: head >= that tail always (tail never
            // passes head), so `h - t` is the bytes in use (or more, if the
            // consumer moved since: a conservative answer).
            let t = c.tail.load(Ordering::Acquire);
            let h = c.head.load(Ordering::Acquire);
            let used = h.wrapping_sub(t);
            if used > size as u64 || used + need > size as u64 {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if c.head
                .compare_exchange_weak(h, h.wrapping_add(need), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                break h;
            }
        };
        let tid = (crate::base::sys::gettid() as u64) & TID_MASK;
        let busy = BUSY | (tid << 32) | len as u64;
        let hdr = self.header_at(h);
        hdr.store(busy, Ordering::Release);
        let ok = fill(h.wrapping_add(8));
        let done = if ok {
            PUBLISHED | ((kind as u64) << 32) | len as u64
        } else {
            PUBLISHED | ((REC_SKIP as u64) << 32) | len as u64
        };
        // The consumer may have given up on us (stopped for too long): then
        // the header is no longer ours and the record counts as lost.
        let published = hdr
            .compare_exchange(busy, done, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if !ok {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok && published
    }

    /// Copy `len` bytes of this process's memory at `addr` into the ring
    /// at `pos` without ever faulting (process_vm_readv). False if any
    /// byte was unreadable.
    fn copy_in_untrusted(&self, pos: u64, addr: u64, len: usize) -> bool {
        if len > self.ring {
            return false;
        }
        let (off, first) = self.span(pos, len);
        // SAFETY: both destination ranges lie inside the ring, owned by this
        // producer after its reservation; the source is validated by the kernel.
        unsafe {
            crate::base::peek::read(self.ring().add(off), addr, first) == 0
                && crate::base::peek::read(
                    self.ring(),
                    addr.wrapping_add(first as u64),
                    len - first,
                ) == 0
        }
    }

    /// Consume every published record in order, calling `f(kind, payload)`.
    /// Only one consumer may call this at a time. Returns the number of records.
    /// A record left busy by a dead writer (or busy for longer than
    /// [`STALL_TIMEOUT_NS`] while its writer runs) is skipped and counted
    /// in `dropped`.
    pub fn drain(&self, f: impl FnMut(u16, &[u8])) -> usize {
        self.drain_with(STALL_TIMEOUT_NS, f)
    }

    /// [`Session::drain`] with an explicit stall timeout (tests).
    ///
    /// Everything read from the mapping is checked before use: head and
    /// tail may be anything, a header may claim any length. A record that
    /// cannot be a producer's (longer than the ring or than what was
    /// reserved, head more than a ring ahead of tail) is counted in
    /// [`Session::malformed`] and the ring is skipped up to head (nothing
    /// after a broken record can be trusted to start where it claims).
    /// At most a bounded number of steps per call, so a process that keeps
    /// changing the ring cannot hold the consumer here.
    pub fn drain_with(&self, timeout_ns: u64, mut f: impl FnMut(u16, &[u8])) -> usize {
        if self.ring == 0 {
            return 0;
        }
        let c = self.control();
        let mut n = 0;
        let mut buf = Vec::new();
        let mut steps = self.ring / 8 + 64;
        loop {
            if steps == 0 {
                break;
            }
            steps -= 1;
            let t = c.tail.load(Ordering::Relaxed);
            let h = c.head.load(Ordering::Acquire);
            if t == h {
                break;
            }
            let used = h.wrapping_sub(t);
            if used > self.ring as u64 || !t.is_multiple_of(8) {
                self.skip_malformed(h);
                continue;
            }
            let hdr_ref = self.header_at(t);
            let hdr = hdr_ref.load(Ordering::Acquire);
            if hdr == 0 {
                break; // reserved, busy header not yet stored
            }
            let len = (hdr & 0xffff_ffff) as usize;
            let need = (8 + ((len + 7) & !7)) as u64;
            // Reservations are contiguous: head passed t only by the CAS
            // that reserved this record, so a real one fits before head.
            if need > used || hdr & (PUBLISHED | BUSY) == PUBLISHED | BUSY {
                self.skip_malformed(h);
                continue;
            }
            if hdr & PUBLISHED == 0 {
                if hdr & BUSY == 0 {
                    self.skip_malformed(h);
                    continue;
                }
                let tid = ((hdr >> 32) & TID_MASK) as i32;
                if !self.stalled_writer_gone(t, tid, timeout_ns) {
                    break; // being written
                }
                if hdr_ref
                    .compare_exchange(hdr, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue; // published meanwhile: read it
                }
                c.dropped.fetch_add(1, Ordering::Relaxed);
                self.zero(t, need as usize);
                c.tail.store(t.wrapping_add(need), Ordering::Release);
                continue;
            }
            let kind = ((hdr >> 32) & 0xffff) as u16;
            if kind != REC_SKIP {
                buf.resize(len, 0);
                self.copy_out(t.wrapping_add(8), &mut buf);
            }
            self.zero(t, need as usize);
            c.tail.store(t.wrapping_add(need), Ordering::Release);
            if kind != REC_SKIP {
                f(kind, &buf);
                n += 1;
            }
        }
        n
    }

    /// The ring holds something no producer wrote: count it and go on
    /// from `head` (records between are lost; later ones are read). The
    /// ring is not zeroed: a producer may be writing its record meanwhile.
    fn skip_malformed(&self, head: u64) {
        crate::base::trusted::SESSIONS.count(self.base as usize, 1);
        let c = self.control();
        // Producers start at head: align it so their headers stay aligned.
        let h = (head.wrapping_add(7)) & !7;
        if h != head {
            let _ = c
                .head
                .compare_exchange(head, h, Ordering::AcqRel, Ordering::Relaxed);
        }
        c.tail
            .store(c.head.load(Ordering::Acquire), Ordering::Release);
        c.stall_since.store(0, Ordering::Relaxed);
    }

    /// The record at `pos` is busy: has its writer `tid` died, or stalled
    /// (running, not stopped) for longer than `timeout_ns`?
    fn stalled_writer_gone(&self, pos: u64, tid: i32, timeout_ns: u64) -> bool {
        let c = self.control();
        let now = crate::base::sys::monotonic_ns();
        if c.stall_pos.load(Ordering::Relaxed) != pos || c.stall_since.load(Ordering::Relaxed) == 0
        {
            c.stall_pos.store(pos, Ordering::Relaxed);
            c.stall_since.store(now.max(1), Ordering::Relaxed);
        }
        match thread_state(tid) {
            None | Some(b'Z') | Some(b'X') | Some(b'x') => true,
            // Stopped (SIGSTOP, ptrace): it will go on when resumed.
            Some(b'T') | Some(b't') => {
                c.stall_since.store(now.max(1), Ordering::Relaxed);
                false
            }
            Some(_) => now.saturating_sub(c.stall_since.load(Ordering::Relaxed)) > timeout_ns,
        }
    }

    /// Bytes reserved but never published (a producer died mid-record).
    pub fn pending_bytes(&self) -> u64 {
        let c = self.control();
        let t = c.tail.load(Ordering::Acquire);
        c.head
            .load(Ordering::Acquire)
            .wrapping_sub(t)
            .min(self.ring as u64)
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
mod tests;
