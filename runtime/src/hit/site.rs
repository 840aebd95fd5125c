//! The site table the hit path reads: a lock-free lookup in an
//! open-addressed table of atomics keyed by address, one table for every
//! int3 the runtime owns. A site has a kind ([`SiteKind`]): a probe site is an
//! immutable snapshot (address, displaced instruction, slot, probes in
//! registration order) published by `kprobes::register`; a syscall site is
//! a libc `syscall` site moved out of libc, published by
//! `syscall::sites`. Both go through [`insert`] / [`remove`]; the SIGTRAP
//! handler reads it with one [`find_raw`]. Also the kretprobe instance records
//! and the slot -> original address map.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use ptap_arch::xol::{Prepared, SLOT_SIZE};

use crate::abi::*;

#[derive(Clone, Copy)]
pub enum EntryKind {
    K,
    J(*mut Jprobe),
    R(*const RetRec),
}

#[derive(Clone, Copy)]
pub struct Entry {
    pub kp: *mut Kprobe,
    pub kind: EntryKind,
    /// Runtime-owned (never freed), set by unregister before its grace
    /// period. A thread still inside a hit path when the bounded grace
    /// period gives up (see [`retire`]) checks it before every access to
    /// the user's struct (`kp`, its handlers, flags, nmissed): after
    /// unregister returns, the struct may be gone.
    pub dead: &'static AtomicBool,
}

impl Entry {
    /// Has this probe been unregistered? (Then `kp` must not be touched.)
    #[inline(always)]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

pub struct Site {
    pub addr: u64,
    pub orig: [u8; 16],
    pub prep: Prepared,
    /// Slot address (0 when the instruction is emulated).
    pub slot: u64,
    /// A second slot for post_handlers: the same relocated instruction
    /// followed by an int3 (then the jump back), so a post_handler costs one
    /// int3 trap instead of a single-step trap (measured here: int3 round
    /// trip ~2.1 us, EFLAGS.TF step ~13 us). 0 when the instruction may leave
    /// the slot (ret, indirect jmp/call): those are single-stepped.
    pub post_slot: u64,
    pub probes: Vec<Entry>,
    pub has_ret: bool,
    /// Jump-optimizable site: its replaced instructions relocated, then a
    /// jump to the region's end. Trap hits run it instead of `slot` (so no
    /// thread resumes inside the region while the jump is written). 0 when
    /// the site is not eligible (post_handler, jprobe, refused region).
    pub region_slot: u64,
}

impl Site {
    pub fn needs_post(&self) -> bool {
        self.probes.iter().any(|e| {
            // SAFETY: a probe that is not dead is registered (its struct is
            // the user's until unregister returns).
            !e.is_dead()
                && unsafe {
                    (*e.kp).post_handler.is_some() && kprobe_flags(e.kp) & KPROBE_FLAG_DISABLED == 0
                }
        })
    }
}

/// Instance header; the public `kretprobe_instance` follows at +INST_HDR.
#[repr(C)]
pub struct InstHdr {
    /// 0 free, [`INST_HOOKED`] taken and its frame's return address points
    /// at the trampoline, [`INST_UNHOOKED`] taken but the real return
    /// address is back in place (an exception is unwinding: see unwind.rs).
    pub in_use: AtomicU32,
    /// While free: 1 + index of the next free instance of the same kretprobe
    /// (0: none). See [`RetRec::alloc`].
    pub free_next: AtomicU32,
    pub next: usize,
    pub sp: u64,
    pub rec: *const RetRec,
    /// 1 + this instance's index in its record (what [`RetRec::free`]
    /// links): kept here, since computing it from the address costs a
    /// 64-bit division per release.
    pub idx: u32,
    /// 1: one of the record's private instances (see [`RetRec::take`]),
    /// never on its shared free list.
    pub private: u32,
    _pad: [u32; 2],
}

/// A multiple of 16: the public instance keeps the alignment it had.
pub const INST_HDR: usize = 48;

pub const INST_HOOKED: u32 = 1;

pub const INST_UNHOOKED: u32 = 2;

const _: () = assert!(core::mem::size_of::<InstHdr>() == INST_HDR);

/// Runtime side of a kretprobe. Never freed: instances may still be on some
/// thread's stack (hijacked return addresses) after unregistration.
pub struct RetRec {
    pub rp: *mut Kretprobe,
    /// Its return handler is code ptap knows (`crate::kprobes::known`):
    /// returns go through the known-handlers return stub (`crate::hit::asm::trampoline_addr_for`).
    pub known_ret: bool,
    pub alive: AtomicBool,
    pub mem: *mut u8,
    /// Instances of the shared pool (maxactive): indexes 0..n.
    pub n: usize,
    /// Private instances, beyond maxactive: indexes n..n+n_private.
    pub n_private: usize,
    pub stride: usize,
    /// Free instances: a lock-free stack (Treiber) of instance indexes,
    /// `tag << 32 | (1 + index)` (0 in the low half: empty). The tag grows
    /// with every change, so a pop that raced with a pop and a push of the
    /// same instance fails its compare-exchange (no ABA). On a cache line
    /// of its own: the fields above are read on every hit by every thread.
    pub free: FreeHead,
    /// Private instances no thread holds (the same kind of stack).
    pub private_free: FreeHead,
}

/// Private instances per kretprobe registered with the default maxactive,
/// beyond it: so many threads at a time can each hold one (see
/// [`RetRec::take`]). An explicit maxactive gets none: it is exact.
pub const PRIVATE_INSTANCES: usize = 4;

/// [`RetRec::free`], alone on its cache line.
#[repr(align(64))]
pub struct FreeHead(pub AtomicU64);

impl core::ops::Deref for FreeHead {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

impl RetRec {
    pub fn inst(&self, i: usize) -> *mut InstHdr {
        // SAFETY: i < n + n_private, mem holds that many strides.
        unsafe { self.mem.add(i * self.stride) as *mut InstHdr }
    }

    /// An instance for a call of this kretprobe's function on the thread
    /// of slot `ts`, or None (a miss). A thread holds one private instance
    /// (of the kretprobe it last called when its instance was free), which
    /// it takes and gives back with plain stores: no atomic instruction on
    /// a call that does not nest in another call of a kretprobed function.
    /// The shared pool of maxactive instances serves every other call, so
    /// private instances never take capacity from other threads: they are
    /// extra ([`PRIVATE_INSTANCES`] per kretprobe of the default maxactive;
    /// none with an explicit one, which stays exact). Only where a thread's
    /// slot is never taken while the thread lives
    /// (`threads::only_owners_release`). Hit path; lock-free.
    ///
    /// # Safety
    /// `ts` is the calling thread's slot.
    #[inline(always)]
    pub unsafe fn take(&self, ts: *mut crate::hit::threads::ThreadState) -> Option<*mut InstHdr> {
        if !crate::hit::threads::only_owners_release() {
            return self.alloc();
        }
        // SAFETY: ts is ours (contract); instances and records are never
        // freed; only this thread touches its private instance while it
        // lives.
        unsafe {
            let p = (*ts).kret_private as *mut InstHdr;
            if p.is_null() || (*p).in_use.load(Ordering::Relaxed) == 0 {
                if !p.is_null() && core::ptr::eq((*p).rec, self) {
                    (*p).in_use.store(INST_HOOKED, Ordering::Relaxed);
                    return Some(p);
                }
                // None held, or a free one of another kretprobe: take one of
                // ours if there is one, and only then give that one back.
                if self.n_private != 0 {
                    if let Some(q) = self.pop_from(&self.private_free) {
                        (*ts).kret_private = q as usize;
                        if !p.is_null() {
                            (*(*p).rec).push_on(&(*(*p).rec).private_free, p);
                        }
                        return Some(q);
                    }
                }
            }
        }
        self.alloc()
    }

    /// Take a free instance of the shared pool: O(1) whatever number is in
    /// use (a scan would cost O(recursion depth) per call). Hit path;
    /// lock-free.
    pub fn alloc(&self) -> Option<*mut InstHdr> {
        self.pop_from(&self.free)
    }

    fn pop_from(&self, stack: &AtomicU64) -> Option<*mut InstHdr> {
        let mut head = stack.load(Ordering::Acquire);
        loop {
            let top = (head & 0xffff_ffff) as usize;
            if top == 0 {
                return None;
            }
            let h = self.inst(top - 1);
            // SAFETY: h is inside mem. A stale `free_next` (another thread
            // took h meanwhile) is harmless: the tag then differs and the
            // exchange fails.
            let next = unsafe { (*h).free_next.load(Ordering::Relaxed) } as u64;
            let new = ((head >> 32) + 1) << 32 | next;
            match stack.compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: h is ours now.
                    unsafe { (*h).in_use.store(1, Ordering::Relaxed) };
                    return Some(h);
                }
                Err(cur) => head = cur,
            }
        }
    }
    /// Give a shared-pool instance back (see [`release`]).
    fn push_free(&self, h: *mut InstHdr) {
        self.push_on(&self.free, h);
    }

    fn push_on(&self, stack: &AtomicU64, h: *mut InstHdr) {
        // SAFETY: h is one of this record's instances.
        let idx = unsafe { (*h).idx };
        let mut head = stack.load(Ordering::Acquire);
        loop {
            // SAFETY: h is inside mem and owned by the caller until pushed.
            unsafe { (*h).free_next.store(head as u32, Ordering::Relaxed) };
            let new = ((head >> 32) + 1) << 32 | idx as u64;
            match stack.compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(cur) => head = cur,
            }
        }
    }
}

/// Give back the private instance a thread held (its slot is being taken
/// over: the thread is gone, or this is a forked child where it does not
/// exist). Its frame, if any, was released with the thread's list.
///
/// # Safety
/// `p` is a slot's `kret_private`, which the caller now owns.
pub unsafe fn give_back_private(p: usize) {
    let h = p as *mut InstHdr;
    if h.is_null() {
        return;
    }
    // SAFETY: caller contract; records are never freed.
    unsafe {
        (*h).in_use.store(0, Ordering::Relaxed);
        let rec = &*(*h).rec;
        rec.push_on(&rec.private_free, h);
    }
}

/// Public instance pointer of a header.
pub fn public(h: *mut InstHdr) -> *mut KretprobeInstance {
    (h as usize + INST_HDR) as *mut KretprobeInstance
}

/// The first real (not a return stub's) return address among the
/// instances from `cur` on that hooked the same slot `sp`: the ones next to
/// each other on the list (hooked at one entry, as `unwind::settle` groups
/// them).
///
/// # Safety
/// `cur` is 0 or an instance of the calling thread's list.
pub(crate) unsafe fn chained_return(mut cur: usize, sp: u64) -> Option<u64> {
    // SAFETY: instances are never freed.
    unsafe {
        while cur != 0 && (*(cur as *mut InstHdr)).sp == sp {
            let h = cur as *mut InstHdr;
            let r = (*public(h)).ret_addr as u64;
            if !crate::hit::asm::is_ret_trampoline(r) {
                return Some(r);
            }
            cur = (*h).next;
        }
    }
    None
}

/// [`release`] by the thread whose list held `h` (a return, a reap): no
/// atomic exchange when no other thread can release it meanwhile
/// (`threads::only_owners_release`).
///
/// # Safety
/// As [`release`]; `h` was on the calling thread's own list.
#[inline(always)]
pub unsafe fn release_own(h: *mut InstHdr) {
    // SAFETY: caller contract.
    unsafe {
        if crate::hit::threads::only_owners_release() {
            if (*h).in_use.load(Ordering::Relaxed) != 0 {
                (*h).in_use.store(0, Ordering::Relaxed);
                if (*h).private == 0 {
                    (*(*h).rec).push_free(h);
                }
            }
        } else {
            release(h);
        }
    }
}

/// # Safety
/// `h` must be an instance header in use.
pub unsafe fn release(h: *mut InstHdr) {
    // SAFETY: caller contract; records are never freed. Only the release
    // that clears `in_use` pushes (a second release would link the free
    // list into a cycle). A swap: two threads can release the same
    // instance, e.g. the control thread sweeping the slot of a CLONE_VM
    // child (posix_spawn's) while the child returns through its kretprobe,
    // on a kernel without kcmp, where such a child looks dead to the sweep
    // (`sys::runs_in_our_memory`).
    unsafe {
        // A private instance stays with its thread (given back with the
        // thread's slot: `give_back_private`).
        if (*h).in_use.swap(0, Ordering::AcqRel) != 0 && (*h).private == 0 {
            (*(*h).rec).push_free(h);
        }
    }
}

const SITE_CAP: usize = 1 << 16;

/// Where a thread that traps on a moved libc `syscall` site goes (see
/// `crate::syscall::sites`): a [`SiteKind::Syscall`] site of the table. Built
/// by the control side, never freed (a late trap always finds valid code).
pub struct SyscallStub {
    /// The stub whose `syscall` runs outside libc (it traps: SIGSYS sees it).
    pub trap: u64,
    /// The stub that makes the call natively from libc (unseen numbers).
    pub native: u64,
    /// The stub that runs the probes' handlers without a second trap (0:
    /// none). Patchable sites (a `mov` patched into a jump) have all three
    /// equal to their trampoline.
    pub direct: u64,
}

/// The kinds of site the one table holds: every int3 the runtime plants is
/// one of them, so the SIGTRAP handler finds an int3's owner with exactly one
/// [`find_raw`] and dispatches on the kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SiteKind {
    /// Kprobes, jprobes and kretprobes at an address ([`Site`]).
    Probe,
    /// A libc syscall site moved out of libc ([`SyscallStub`]).
    Syscall,
}

/// A published site, as the hit path sees it.
#[derive(Clone, Copy)]
pub enum SiteRef {
    Probe(&'static Site),
    Syscall(&'static SyscallStub),
}

impl SiteRef {
    pub fn kind(&self) -> SiteKind {
        match self {
            SiteRef::Probe(_) => SiteKind::Probe,
            SiteRef::Syscall(_) => SiteKind::Syscall,
        }
    }
}

/// What registration publishes ([`insert`]).
#[derive(Clone, Copy)]
pub enum NewSite {
    Probe(*mut Site),
    Syscall(*const SyscallStub),
}

impl NewSite {
    fn kind(&self) -> SiteKind {
        match self {
            NewSite::Probe(_) => SiteKind::Probe,
            NewSite::Syscall(_) => SiteKind::Syscall,
        }
    }
    fn tagged(&self) -> usize {
        match *self {
            NewSite::Probe(p) => p as usize,
            NewSite::Syscall(p) => p as usize | SYSCALL_TAG,
        }
    }
}

/// Why [`insert`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InsertError {
    /// The address holds a site of the other kind.
    Taken(SiteKind),
    /// The table is full.
    Full,
}

/// Low bit of a value: a [`SyscallStub`] (both value types are 8-aligned).
const SYSCALL_TAG: usize = 1;

const _: () = assert!(core::mem::align_of::<Site>() > SYSCALL_TAG);
const _: () = assert!(core::mem::align_of::<SyscallStub>() > SYSCALL_TAG);

static KEYS: [AtomicU64; SITE_CAP] = [const { AtomicU64::new(0) }; SITE_CAP];

/// Tagged pointers (see [`SYSCALL_TAG`]); 0: removed.
static VALS: [AtomicUsize; SITE_CAP] = [const { AtomicUsize::new(0) }; SITE_CAP];

fn h(addr: u64) -> usize {
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % SITE_CAP
}

/// Table reads, counted only while a test asks for it
/// ([`count_lookups`]): a relaxed load of a flag nobody writes otherwise
/// costs the jump path nothing measurable; a shared counter would.
static COUNTING: AtomicBool = AtomicBool::new(false);

static LOOKUPS: AtomicU64 = AtomicU64::new(0);

/// Start (true) or stop counting [`find`] calls; starting resets the count.
/// For tests (`ptap_rt_site_stats`).
pub fn count_lookups(on: bool) {
    if on {
        LOOKUPS.store(0, Ordering::Relaxed);
    }
    COUNTING.store(on, Ordering::Release);
}

/// Table reads since counting started.
pub fn lookups() -> u64 {
    LOOKUPS.load(Ordering::Relaxed)
}

/// A hit in the site table, before it is trusted: the slot and the tagged
/// value found there. A syscall stub may be used at once (never freed); a
/// probe site only once the caller has entered its grace-period section and
/// [`Found::probe_if_current`] saw the same value again.
#[derive(Clone, Copy)]
pub struct Found {
    index: usize,
    value: usize,
}

impl Found {
    pub fn kind(&self) -> SiteKind {
        if self.value & SYSCALL_TAG != 0 {
            SiteKind::Syscall
        } else {
            SiteKind::Probe
        }
    }

    /// The stubs, if this is a syscall site.
    pub fn syscall(&self) -> Option<&'static SyscallStub> {
        // SAFETY: syscall stubs are never freed.
        (self.kind() == SiteKind::Syscall)
            .then(|| unsafe { &*((self.value & !SYSCALL_TAG) as *const SyscallStub) })
    }

    /// The probe site, if the slot still holds it: one load of the slot
    /// found, not a second lookup. Called after `threads::enter`: then
    /// either the unregistering thread's grace period waits for this one,
    /// or this load sees its removal (both sides have a SeqCst fence
    /// between their store and their load), and a probe site seen here
    /// stays live until the caller leaves.
    pub fn probe_if_current(&self) -> Option<&'static Site> {
        if self.kind() != SiteKind::Probe || VALS[self.index].load(Ordering::Acquire) != self.value
        {
            return None;
        }
        // SAFETY: published and protected, as above.
        Some(unsafe { &*(self.value as *const Site) })
    }
}

/// The one read of the site table: what is at `addr`, not yet trusted
/// (see [`Found`]). Lock-free (hit path).
pub fn find_raw(addr: u64) -> Option<Found> {
    if COUNTING.load(Ordering::Relaxed) {
        LOOKUPS.fetch_add(1, Ordering::Relaxed);
    }
    let s = h(addr);
    for k in 0..SITE_CAP {
        let i = (s + k) % SITE_CAP;
        let key = KEYS[i].load(Ordering::Acquire);
        if key == addr {
            let v = VALS[i].load(Ordering::Acquire);
            return (v != 0).then_some(Found { index: i, value: v });
        }
        if key == 0 {
            return None;
        }
    }
    None
}

/// Which site, of which kind, is at `addr`? For a caller already inside
/// `threads::enter` (a [`SiteRef::Probe`] is live until it leaves; a
/// [`SiteRef::Syscall`] forever). Lock-free (hit path).
pub fn find(addr: u64) -> Option<SiteRef> {
    let f = find_raw(addr)?;
    Some(match f.syscall() {
        Some(stub) => SiteRef::Syscall(stub),
        // SAFETY: published, and the caller is inside `threads::enter`.
        None => SiteRef::Probe(unsafe { &*(f.value as *const Site) }),
    })
}

/// The probe site at `addr`, if that is what the table holds there (the
/// jump path, fault attribution, backtraces, the control side).
pub fn lookup(addr: u64) -> Option<&'static Site> {
    match find(addr) {
        Some(SiteRef::Probe(s)) => Some(s),
        _ => None,
    }
}

/// The one way in for both kinds: publish `site` at `addr`, replacing a site
/// of the same kind (a new kprobe snapshot). Refused when the address holds
/// a site of the other kind: one int3 has one owner. Callers serialise on
/// their registration lock (the kprobe registry's, which the syscall side
/// also holds while it patches).
pub(crate) fn insert(addr: u64, site: NewSite) -> Result<(), InsertError> {
    let slot = cell(addr).ok_or(InsertError::Full)?;
    let cur = slot.load(Ordering::Acquire);
    let cur_kind = if cur & SYSCALL_TAG != 0 {
        SiteKind::Syscall
    } else {
        SiteKind::Probe
    };
    if cur != 0 && cur_kind != site.kind() {
        return Err(InsertError::Taken(cur_kind));
    }
    slot.store(site.tagged(), Ordering::Release);
    Ok(())
}

/// The table's value slot for `addr`, claimed now if the address has none
/// (with no value: nothing is published). Keys are never removed, so the
/// slot stays `addr`'s for the life of the process: a jump-path trampoline
/// is built with its address and reads the current site from it with one
/// load ([`probe_in`]), with no hashing or probing of the table. `None`:
/// the table is full. Registration time, under the same lock as [`insert`].
pub(crate) fn cell(addr: u64) -> Option<&'static AtomicUsize> {
    let s = h(addr);
    for k in 0..SITE_CAP {
        let i = (s + k) % SITE_CAP;
        let key = KEYS[i].load(Ordering::Acquire);
        if key == 0 {
            KEYS[i].store(addr, Ordering::Release);
        }
        if key == 0 || key == addr {
            return Some(&VALS[i]);
        }
    }
    None
}

/// The probe site a [`cell`] holds now, for a caller already inside
/// `threads::enter` (as [`find`]: then it stays live until the caller
/// leaves). Hit path: one load.
#[inline(always)]
pub fn probe_in(cell: &AtomicUsize) -> Option<&'static Site> {
    let v = cell.load(Ordering::Acquire);
    if v == 0 || v & SYSCALL_TAG != 0 {
        return None;
    }
    // SAFETY: a published probe site; the caller is inside `threads::enter`.
    Some(unsafe { &*(v as *const Site) })
}

/// Unpublish the site of `kind` at `addr` (a site of the other kind there
/// stays). The key stays, with no value (open addressing).
pub(crate) fn remove(addr: u64, kind: SiteKind) {
    if let Some(i) = slot_of(addr) {
        let cur = VALS[i].load(Ordering::Acquire);
        let is_sys = cur & SYSCALL_TAG != 0;
        if cur != 0 && is_sys == (kind == SiteKind::Syscall) {
            VALS[i].store(0, Ordering::Release);
        }
    }
}

/// What kind of site holds `addr` now (control side: no counting).
pub(crate) fn kind_at(addr: u64) -> Option<SiteKind> {
    let v = VALS[slot_of(addr)?].load(Ordering::Acquire);
    match v {
        0 => None,
        v if v & SYSCALL_TAG != 0 => Some(SiteKind::Syscall),
        _ => Some(SiteKind::Probe),
    }
}

fn slot_of(addr: u64) -> Option<usize> {
    let s = h(addr);
    for k in 0..SITE_CAP {
        let i = (s + k) % SITE_CAP;
        let key = KEYS[i].load(Ordering::Acquire);
        if key == addr {
            return Some(i);
        }
        if key == 0 {
            return None;
        }
    }
    None
}

const SLOTMAP_CAP: usize = 1 << 16;

static SLOTMAP: [(AtomicU64, AtomicU64); SLOTMAP_CAP] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; SLOTMAP_CAP];

static SLOTMAP_N: AtomicUsize = AtomicUsize::new(0);

/// If `ip` is inside a XOL slot, return (slot base, original address). Hit path.
pub fn slot_owner(ip: u64) -> Option<(u64, u64)> {
    let n = SLOTMAP_N.load(Ordering::Acquire).min(SLOTMAP_CAP);
    for e in SLOTMAP.iter().take(n) {
        let base = e.0.load(Ordering::Acquire);
        if base != 0 && ip >= base && ip < base + SLOT_SIZE as u64 {
            return Some((base, e.1.load(Ordering::Acquire)));
        }
    }
    None
}

pub(crate) fn remember_slot(slot: u64, orig: u64) {
    let i = SLOTMAP_N.fetch_add(1, Ordering::AcqRel);
    if i < SLOTMAP_CAP {
        SLOTMAP[i].1.store(orig, Ordering::Release);
        SLOTMAP[i].0.store(slot, Ordering::Release);
    }
}

/// Address of the int3 in a post slot.
pub fn post_int3(site: &Site) -> u64 {
    site.post_slot + site.prep.body_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    static STUB: SyscallStub = SyscallStub {
        trap: 0x10,
        native: 0x20,
        direct: 0x30,
    };

    /// Table semantics only: the probe site here is a dangling (aligned)
    /// pointer that is never dereferenced, at addresses no code has.
    #[test]
    fn one_owner_per_address_and_removal_by_kind() {
        let a = 0x7ee0_0000_1001;
        let probe = NewSite::Probe(core::ptr::NonNull::<Site>::dangling().as_ptr());
        assert_eq!(kind_at(a), None);
        assert!(insert(a, NewSite::Syscall(&STUB)).is_ok());
        assert_eq!(kind_at(a), Some(SiteKind::Syscall));
        match find(a) {
            Some(SiteRef::Syscall(s)) => {
                assert_eq!((s.trap, s.native, s.direct), (0x10, 0x20, 0x30))
            }
            _ => panic!("the syscall site is found as one"),
        }
        assert!(lookup(a).is_none(), "not a probe site");
        // The other kind is refused, and removing the other kind is a no-op.
        assert_eq!(
            insert(a, probe).err(),
            Some(InsertError::Taken(SiteKind::Syscall))
        );
        remove(a, SiteKind::Probe);
        assert_eq!(kind_at(a), Some(SiteKind::Syscall));
        // Once removed, the address may change hands.
        remove(a, SiteKind::Syscall);
        assert!(find(a).is_none());
        assert!(insert(a, probe).is_ok());
        assert_eq!(find(a).map(|s| s.kind()), Some(SiteKind::Probe));
        assert_eq!(
            insert(a, NewSite::Syscall(&STUB)).err(),
            Some(InsertError::Taken(SiteKind::Probe))
        );
        // A probe snapshot replaces a probe snapshot.
        assert!(insert(a, probe).is_ok());
        remove(a, SiteKind::Probe);
        assert_eq!(kind_at(a), None);
    }
}
