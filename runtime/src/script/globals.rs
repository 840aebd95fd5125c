//! Script globals in the session shared memory.
//!
//! The globals area follows the output ring in the session mapping: at
//! [`offset_in_session`]`(ring_size)`, ptap allocates `size` bytes more
//! (metadata `globals_size`) and calls [`Globals::init`] before any target
//! runs. Every process of the session (ptap for begin/end/timer, each target
//! for its probes) sees the same bytes.
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | 64 | [`Header`] |
//! | 64.. | per global, 8-aligned | a long: one `i64` (atomic updates); a string: an `u64` sequence word + `maxstringlen + 1` bytes; statistics: `count, sum, min, max` (`i64` each, atomic updates) |
//!
//! Long scalars are read and written with aligned 8-byte loads/stores and
//! updated with atomic read-modify-write (`x++` from many threads counts
//! exactly). Strings use a sequence lock: a writer makes the word odd
//! (with its tid in it), copies, makes it even; a reader retries while it
//! changes, a bounded number of times (then it gets the possibly torn
//! bytes: readers never wait). A writer waits for another writer; it takes
//! over only from a dead one (/proc/TID gone or a zombie) and drops its
//! store after `WRITE_WAIT_NS` of a live writer (preempted, stopped).

use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::session::Session;

pub const MAGIC: u64 = 0x5054_4150_474C_4231; // "PTAPGLB1"
pub const HEADER_SIZE: usize = 128;
const SPIN_LIMIT: u32 = 1 << 16;
/// How long a string store waits for a live writer of the same global.
pub const WRITE_WAIT_NS: u64 = 200_000_000;

// String sequence word: even = idle, a counter (< 2^33) bumped by 2 per
// store; odd = a writer is copying: bit 0 set, bits 1..31 its tid, bits
// 32..63 the idle counter it started from (>> 1), so that a writer taking
// over from a dead one can finish the counter.
fn seq_writing(idle: u64, tid: i32) -> u64 {
    1 | (u64::from(tid as u32 & 0x7fff_ffff) << 1) | (((idle >> 1) & 0xffff_ffff) << 32)
}
fn seq_owner(w: u64) -> i32 {
    ((w >> 1) & 0x7fff_ffff) as i32
}
fn seq_base(w: u64) -> u64 {
    (w >> 32) << 1
}
fn seq_next(idle: u64) -> u64 {
    (((idle >> 1) + 1) & 0xffff_ffff) << 1
}

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    /// Bytes of the whole area (header included).
    pub size: AtomicU64,
    /// Set by `exit()`: ptap runs the end probes and detaches.
    pub exit: AtomicU32,
    /// `target()`: the pid of the -c command (or -x pid).
    pub target_pid: AtomicI32,
    /// Runtime errors reported so far (all processes).
    pub errors: AtomicU64,
    /// Handler runs skipped because a kretprobe had no free instance
    /// (maxactive exhausted): the kretprobes' `nmissed`, summed by each
    /// target runtime while it runs and when it detaches or exits
    /// ([`Globals::add_missed`]).
    pub nmissed: AtomicU64,
    /// Handler runs skipped because a probe hit inside a handler (the
    /// kprobes' `nmissed`), summed the same way.
    pub reentrancy: AtomicU64,
    /// Inserts refused because an array was full (each also an error).
    pub map_full: AtomicU64,
    /// kretprobed frames left by unwinding (C++ exceptions, forced unwinds,
    /// longjmp): their instances were reclaimed and no return handler ran.
    /// Not a skip: reported on its own summary line.
    pub unwound: AtomicU64,
    /// A REPL session: offset of its module table in this area
    /// (`super::control`), 0 = none.
    pub repl: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Header>() <= HEADER_SIZE);

/// What a global scalar stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Long,
    Str,
    Stats,
    /// This many bytes: an associative array ([`super::map::Shape::size`]),
    /// or statistics followed by histogram buckets.
    Bytes(u64),
}

/// Offsets inside a statistics slot.
pub mod stats {
    pub const COUNT: u64 = 0;
    pub const SUM: u64 = 8;
    pub const MIN: u64 = 16;
    pub const MAX: u64 = 24;
}

/// Bytes one global takes.
pub fn slot_size(slot: Slot, maxstringlen: u64) -> u64 {
    match slot {
        Slot::Long => 8,
        Slot::Str => 8 + (maxstringlen + 1).div_ceil(8) * 8,
        Slot::Stats => 32,
        Slot::Bytes(n) => n.div_ceil(8) * 8,
    }
}

/// Offsets of each global (in order) and the size of the whole area.
pub fn layout(slots: &[Slot], maxstringlen: u64) -> (Vec<u64>, u64) {
    let mut at = HEADER_SIZE as u64;
    let offs = slots
        .iter()
        .map(|&s| {
            let o = at;
            at += slot_size(s, maxstringlen);
            o
        })
        .collect();
    (offs, at)
}

/// Where the globals area starts inside a session mapping.
pub fn offset_in_session(ring_size: usize) -> usize {
    Session::total_size(ring_size)
}

/// A mapped globals area.
#[derive(Clone, Copy)]
pub struct Globals {
    base: *mut u8,
}

// SAFETY: the area is shared memory accessed through atomics or seqlock-ordered copies.
unsafe impl Send for Globals {}
// SAFETY: see above.
unsafe impl Sync for Globals {}

impl Globals {
    /// # Safety
    /// `base` must be 8-aligned and point to a mapping at least as large as
    /// the module's `globals_size`, alive as long as the value is used.
    pub unsafe fn from_raw(base: *mut u8) -> Globals {
        Globals { base }
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Record that the area at `base` has `size` bytes (in this process's
    /// memory: the header's `size` is writable by every process of the
    /// session). [`Globals::init`] does it for the area's creator.
    pub fn record_size(base: *mut u8, size: usize) {
        crate::base::trusted::GLOBALS.set(base as usize, size);
    }

    /// Bytes of the area as recorded in this process (0: unknown; arrays
    /// of an unknown area are treated as empty and full).
    pub fn size(&self) -> usize {
        crate::base::trusted::GLOBALS.get(self.base as usize)
    }

    /// Stop using this area (about to be unmapped).
    pub fn forget(&self) {
        crate::base::trusted::GLOBALS.remove(self.base as usize);
    }

    pub fn header(&self) -> &Header {
        // SAFETY: from_raw contract; Header is atomics only.
        unsafe { &*(self.base as *const Header) }
    }

    /// Initialise a zeroed area of `size` bytes.
    pub fn init(&self, size: u64, target_pid: i32) {
        Globals::record_size(self.base, size as usize);
        let h = self.header();
        h.size.store(size, Ordering::Relaxed);
        h.target_pid.store(target_pid, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// Add a process's skipped-handler counts (its probes' `nmissed`) to
    /// the session's: `nmissed` from kretprobes (no free instance),
    /// `reentrancy` from kprobes (hit inside a handler). Called with the
    /// increments since the last call: by each runtime's control thread
    /// about once a second, and when the process unregisters its probes.
    pub fn add_missed(&self, nmissed: u64, reentrancy: u64) {
        let h = self.header();
        h.nmissed.fetch_add(nmissed, Ordering::Relaxed);
        h.reentrancy.fetch_add(reentrancy, Ordering::Relaxed);
    }

    pub fn valid(&self) -> bool {
        self.header().magic.load(Ordering::Acquire) == MAGIC
    }

    pub fn long(&self, off: u64) -> &AtomicI64 {
        // SAFETY: offsets come from `layout` (8-aligned, inside the area).
        unsafe { &*(self.base.add(off as usize) as *const AtomicI64) }
    }

    fn seq(&self, off: u64) -> &AtomicU64 {
        // SAFETY: as in `long`.
        unsafe { &*(self.base.add(off as usize) as *const AtomicU64) }
    }

    /// Copy string global `off` (capacity `cap` bytes incl. NUL) into `dst`
    /// (NUL-terminated); returns its length.
    ///
    /// # Safety
    /// `off` must be a string slot of capacity `cap`; `dst` valid for `cap` bytes.
    pub unsafe fn load_str(&self, off: u64, cap: usize, dst: *mut u8) -> usize {
        let seq = self.seq(off);
        // SAFETY: the slot's bytes follow the sequence word.
        let src = unsafe { self.base.add(off as usize + 8) };
        let mut tries = 0;
        loop {
            let s1 = seq.load(Ordering::Acquire);
            // SAFETY: both ranges are `cap` bytes (caller contract).
            unsafe { copy_str(dst, src, cap) };
            core::sync::atomic::fence(Ordering::Acquire);
            let s2 = seq.load(Ordering::Relaxed);
            tries += 1;
            if (s1 == s2 && s1 & 1 == 0) || tries > SPIN_LIMIT {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: copy_str NUL-terminated dst within cap.
        unsafe { c_len(dst, cap) }
    }

    /// Store a NUL-terminated string into string global `off`. A writer
    /// that finds another one copying waits for it; it takes the slot over
    /// only if that writer has died (its tid is in the odd sequence word),
    /// and gives up (the store is dropped) after [`WRITE_WAIT_NS`] of a
    /// live writer not finishing.
    ///
    /// # Safety
    /// As [`Globals::load_str`]; `src` NUL-terminated or valid for `cap` bytes.
    pub unsafe fn store_str(&self, off: u64, cap: usize, src: *const u8) {
        let seq = self.seq(off);
        let me = crate::base::sys::gettid();
        let mut tries = 0u32;
        let mut since = 0u64;
        let base = loop {
            let s = seq.load(Ordering::Relaxed);
            if s & 1 == 0 {
                if seq
                    .compare_exchange_weak(
                        s,
                        seq_writing(s, me),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    break s;
                }
                continue;
            }
            tries = tries.saturating_add(1);
            if tries < SPIN_LIMIT {
                core::hint::spin_loop();
                continue;
            }
            let owner = seq_owner(s);
            if (owner == me || crate::base::sys::task_dead(owner))
                && seq
                    .compare_exchange(
                        s,
                        seq_writing(seq_base(s), me),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                break seq_base(s);
            }
            let now = crate::base::sys::monotonic_ns();
            if since == 0 {
                since = now;
            } else if now.saturating_sub(since) > WRITE_WAIT_NS {
                return;
            }
            crate::base::sys::sched_yield();
        };
        // SAFETY: caller contract.
        unsafe { copy_str(self.base.add(off as usize + 8), src, cap) };
        seq.store(seq_next(base), Ordering::Release);
    }

    /// Empty a statistics slot (min/max start at the extremes).
    pub fn reset_stats(&self, off: u64) {
        self.long(off + stats::COUNT).store(0, Ordering::Relaxed);
        self.long(off + stats::SUM).store(0, Ordering::Relaxed);
        self.long(off + stats::MIN)
            .store(i64::MAX, Ordering::Relaxed);
        self.long(off + stats::MAX)
            .store(i64::MIN, Ordering::Relaxed);
    }

    /// (count, sum, min, max) of a statistics slot.
    pub fn read_stats(&self, off: u64) -> (i64, i64, i64, i64) {
        let l = |k| self.long(off + k).load(Ordering::SeqCst);
        (l(stats::COUNT), l(stats::SUM), l(stats::MIN), l(stats::MAX))
    }

    /// A string global as text (ptap side).
    pub fn read_str(&self, off: u64, cap: usize) -> String {
        let mut buf = vec![0u8; cap.max(1)];
        // SAFETY: buf has cap bytes; off is a string slot (caller's metadata).
        let n = unsafe { self.load_str(off, buf.len(), buf.as_mut_ptr()) };
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Length of the NUL-terminated string at `p`, at most `cap - 1`.
///
/// # Safety
/// `p` valid for `cap` bytes or up to its NUL.
pub unsafe fn c_len(p: *const u8, cap: usize) -> usize {
    let mut n = 0;
    // SAFETY: caller contract.
    while n + 1 < cap && unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    n
}

/// strncpy-like: copy up to `cap - 1` bytes of `src` and NUL-terminate `dst`.
///
/// # Safety
/// `dst` valid for `cap` bytes; `src` NUL-terminated or valid for `cap - 1` bytes.
pub unsafe fn copy_str(dst: *mut u8, src: *const u8, cap: usize) {
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract; ptr::copy allows overlap (s = s . x).
    unsafe {
        let n = c_len(src, cap);
        core::ptr::copy(src, dst, n);
        *dst.add(n) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_strings() {
        let (offs, size) = layout(&[Slot::Long, Slot::Str, Slot::Long], 128);
        let h = HEADER_SIZE as u64;
        assert_eq!(offs, vec![h, h + 8, h + 8 + 8 + 136]);
        assert_eq!(size, h + 8 + 8 + 136 + 8);
        let mut mem = vec![0u64; size as usize / 8];
        // SAFETY: mem outlives g.
        let g = unsafe { Globals::from_raw(mem.as_mut_ptr() as *mut u8) };
        g.init(size, 42);
        assert!(g.valid());
        g.long(offs[0]).fetch_add(5, Ordering::Relaxed);
        assert_eq!(g.long(offs[0]).load(Ordering::Relaxed), 5);
        // SAFETY: string slot of capacity 129.
        unsafe { g.store_str(offs[1], 129, c"hello".as_ptr() as *const u8) };
        assert_eq!(g.read_str(offs[1], 129), "hello");
        assert_eq!(g.long(offs[2]).load(Ordering::Relaxed), 0);
    }

    /// A thread that stays alive until told to go, and its tid.
    fn live_thread() -> (
        i32,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(crate::base::sys::gettid()).unwrap();
            let _ = go_rx.recv();
        });
        (rx.recv().unwrap(), go_tx, h)
    }

    #[test]
    fn a_string_writer_never_steals_from_a_live_writer_and_takes_over_from_a_dead_one() {
        let (offs, size) = layout(&[Slot::Str], 16);
        let mut mem = vec![0u64; size as usize / 8];
        // SAFETY: mem outlives g.
        let g = unsafe { Globals::from_raw(mem.as_mut_ptr() as *mut u8) };
        g.init(size, 1);
        // SAFETY: string slot of capacity 17.
        unsafe { g.store_str(offs[0], 17, c"before".as_ptr() as *const u8) };
        let idle = g.seq(offs[0]).load(Ordering::Relaxed);
        // A live writer is in the middle of a store (preempted).
        let (tid, go, h) = live_thread();
        g.seq(offs[0])
            .store(seq_writing(idle, tid), Ordering::Relaxed);
        let t0 = std::time::Instant::now();
        // SAFETY: as above.
        unsafe { g.store_str(offs[0], 17, c"stolen".as_ptr() as *const u8) };
        assert!(t0.elapsed() >= std::time::Duration::from_nanos(WRITE_WAIT_NS));
        assert_eq!(
            g.seq(offs[0]).load(Ordering::Relaxed),
            seq_writing(idle, tid),
            "the live writer keeps its lock"
        );
        // It dies without finishing: the next writer takes over.
        go.send(()).unwrap();
        h.join().unwrap();
        // SAFETY: as above.
        unsafe { g.store_str(offs[0], 17, c"after".as_ptr() as *const u8) };
        let now = g.seq(offs[0]).load(Ordering::Relaxed);
        assert_eq!(now, seq_next(idle));
        assert_eq!(g.read_str(offs[0], 17), "after");
    }

    #[test]
    fn seq_words_round_trip() {
        for idle in [0u64, 2, 1 << 20, ((1u64 << 32) - 1) << 1] {
            let w = seq_writing(idle, 4_194_303);
            assert_eq!(w & 1, 1);
            assert_eq!(seq_owner(w), 4_194_303);
            assert_eq!(seq_base(w), idle);
            assert_ne!(seq_next(idle), idle);
            assert_eq!(seq_next(idle) & 1, 0);
        }
    }
}
