//! The probe table, XOL slot arenas, code patching, and the
//! register/unregister side of kprobes, jprobes and kretprobes.
//!
//! Readers (the SIGTRAP handler) find a site with a lock-free lookup in an
//! open-addressed table of atomics keyed by address; a site is an immutable
//! snapshot (address, displaced instruction, slot, probes in registration
//! order). Registration builds a new snapshot, publishes it with one atomic
//! store, waits for a grace period (`threads::synchronize`) and frees the old
//! one. Registration itself is serialised by a mutex that the hit path never
//! takes. XOL slots are never freed or reused (a thread may still be running
//! an old slot after its probe is gone; the old slot stays correct).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::Mutex;

use ptap_arch::xol::{self, Kind, Prepared, SLOT_SIZE};
use ptap_arch::ArchError;

use crate::abi::*;
use crate::{symbols, sys, threads};

pub const EINVAL: i32 = 22;
pub const ENOENT: i32 = 2;
pub const EEXIST: i32 = 17;
pub const EILSEQ: i32 = 84;
pub const ENOMEM: i32 = 12;
pub const EBUSY: i32 = 16;
pub const EIO: i32 = 5;

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
}
pub const INST_HDR: usize = 32;
pub const INST_HOOKED: u32 = 1;
pub const INST_UNHOOKED: u32 = 2;
const _: () = assert!(core::mem::size_of::<InstHdr>() == INST_HDR);

/// Runtime side of a kretprobe. Never freed: instances may still be on some
/// thread's stack (hijacked return addresses) after unregistration.
pub struct RetRec {
    pub rp: *mut Kretprobe,
    pub alive: AtomicBool,
    pub mem: *mut u8,
    pub n: usize,
    pub stride: usize,
    /// Free instances: a lock-free stack (Treiber) of instance indexes,
    /// `tag << 32 | (1 + index)` (0 in the low half: empty). The tag grows
    /// with every change, so a pop that raced with a pop and a push of the
    /// same instance fails its compare-exchange (no ABA). On a cache line
    /// of its own: the fields above are read on every hit by every thread.
    pub free: FreeHead,
}

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
        // SAFETY: i < n, mem holds n strides.
        unsafe { self.mem.add(i * self.stride) as *mut InstHdr }
    }
    /// Take a free instance: O(1) whatever number is in use (a scan would
    /// cost O(recursion depth) per call). Hit path; lock-free.
    pub fn alloc(&self) -> Option<*mut InstHdr> {
        let mut head = self.free.load(Ordering::Acquire);
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
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: h is ours now.
                    unsafe { (*h).in_use.store(1, Ordering::Relaxed) };
                    return Some(h);
                }
                Err(cur) => head = cur,
            }
        }
    }
    /// Give an instance back (see [`release`]).
    fn push_free(&self, h: *mut InstHdr) {
        let idx = (h as usize - self.mem as usize) / self.stride + 1;
        let mut head = self.free.load(Ordering::Acquire);
        loop {
            // SAFETY: h is inside mem and owned by the caller until pushed.
            unsafe { (*h).free_next.store(head as u32, Ordering::Relaxed) };
            let new = ((head >> 32) + 1) << 32 | idx as u64;
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(cur) => head = cur,
            }
        }
    }
}

/// Public instance pointer of a header.
pub fn public(h: *mut InstHdr) -> *mut KretprobeInstance {
    (h as usize + INST_HDR) as *mut KretprobeInstance
}

/// # Safety
/// `h` must be an instance header in use.
pub unsafe fn release(h: *mut InstHdr) {
    // SAFETY: caller contract; records are never freed. Only the release
    // that clears `in_use` pushes (a second release would link the free
    // list into a cycle).
    unsafe {
        if (*h).in_use.swap(0, Ordering::AcqRel) != 0 {
            (*(*h).rec).push_free(h);
        }
    }
}

// ---------------------------------------------------------------- site table

const SITE_CAP: usize = 1 << 16;
static KEYS: [AtomicU64; SITE_CAP] = [const { AtomicU64::new(0) }; SITE_CAP];
static VALS: [AtomicPtr<Site>; SITE_CAP] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; SITE_CAP];

fn h(addr: u64) -> usize {
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % SITE_CAP
}

/// Lock-free lookup (hit path).
pub fn lookup(addr: u64) -> Option<&'static Site> {
    let s = h(addr);
    for k in 0..SITE_CAP {
        let i = (s + k) % SITE_CAP;
        let key = KEYS[i].load(Ordering::Acquire);
        if key == addr {
            let p = VALS[i].load(Ordering::Acquire);
            // SAFETY: published sites live until a grace period after removal,
            // and the caller is inside `threads::enter`.
            return if p.is_null() {
                None
            } else {
                Some(unsafe { &*p })
            };
        }
        if key == 0 {
            return None;
        }
    }
    None
}

/// Publish (or remove, with null) the site for `addr`. Registration lock held.
fn publish(addr: u64, site: *mut Site) -> bool {
    let s = h(addr);
    for k in 0..SITE_CAP {
        let i = (s + k) % SITE_CAP;
        let key = KEYS[i].load(Ordering::Acquire);
        if key == addr || key == 0 {
            if key == 0 {
                KEYS[i].store(addr, Ordering::Release);
            }
            VALS[i].store(site, Ordering::Release);
            return true;
        }
    }
    false
}

// ------------------------------------------------------------- slot -> orig map

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

// ---------------------------------------------------------------- registry

struct Arena {
    base: u64,
    size: u64,
    used: u64,
    /// A writable alias of the same memory (memfd mapped twice), so that
    /// slots and trampolines are written with a plain copy instead of a
    /// /proc/self/mem write per piece; 0 if there is none.
    rw: u64,
    /// The process that may allocate from it (a forked child shares the
    /// memfd pages with its parent: it must not write them).
    pid: i32,
}

struct Registry {
    by_kp: HashMap<usize, u64>,
    sites: HashMap<u64, *mut Site>,
    arenas: Vec<Arena>,
    rets: HashMap<usize, *const RetRec>,
    /// Sites whose probes are all disabled: original byte in place.
    disarmed: std::collections::HashSet<u64>,
    mem_fd: i32,
    mem_id: crate::loader::fds::Ident,
    /// int3s of a batch (register_kprobes), written together at its end.
    deferred_int3: Vec<u64>,
}

// SAFETY: the raw pointers are only touched with the registry lock held.
unsafe impl Send for Registry {}

static REG: Mutex<Option<Registry>> = Mutex::new(None);
static FORK_REG: crate::forklock::MutexSlot<Option<Registry>> =
    crate::forklock::MutexSlot::new(&REG);

/// The registry lock, for the fork handlers (taken first: every other
/// runtime lock nests inside it).
pub(crate) fn fork_lock() -> &'static dyn crate::forklock::ForkLock {
    &FORK_REG
}

fn with_reg<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = match REG.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let r = g.get_or_insert_with(|| Registry {
        by_kp: HashMap::new(),
        sites: HashMap::new(),
        arenas: Vec::new(),
        rets: HashMap::new(),
        disarmed: std::collections::HashSet::new(),
        mem_fd: -1,
        mem_id: Default::default(),
        deferred_int3: Vec::new(),
    });
    f(r)
}

/// Write `bytes` at `addr` in this process's text: /proc/self/mem first
/// (works on r-x pages), mprotect as a fallback.
fn poke(reg: &mut Registry, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    let pid = sys::getpid();
    // Fresh code in one of this process's arenas: through its writable alias
    // (registration publishes it, with a membarrier, only afterwards).
    if let Some(a) = reg.arenas.iter().find(|a| {
        a.rw != 0 && a.pid == pid && addr >= a.base && addr + bytes.len() as u64 <= a.base + a.size
    }) {
        // SAFETY: the alias maps the same memfd pages read-write.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (a.rw + (addr - a.base)) as *mut u8,
                bytes.len(),
            )
        };
        return Ok(());
    }
    // A high descriptor, checked before use: reopened after fork (an
    // inherited one names the parent's memory) or when the target closed
    // it (never written to if the target reused its number).
    reg.mem_fd = crate::loader::fds::proc_self_mem(reg.mem_fd, &mut reg.mem_id);
    if reg.mem_fd >= 0 {
        // SAFETY: the caller decided to patch these bytes.
        let r = unsafe { sys::pwrite(reg.mem_fd, bytes, addr) };
        if r == bytes.len() as isize {
            return Ok(());
        }
    }
    let page = addr & !0xfff;
    let end = (addr + bytes.len() as u64 + 0xfff) & !0xfff;
    // SAFETY: temporarily make our own text writable, copy, restore r-x.
    unsafe {
        if sys::mprotect(page as usize, (end - page) as usize, 7) != 0 {
            return Err(EIO);
        }
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len());
        sys::mprotect(page as usize, (end - page) as usize, 5);
    }
    Ok(())
}

fn read_maps() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut v: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let r = l.split_whitespace().next()?;
            let (a, b) = r.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    v.sort();
    v
}

const ARENA_SIZE: u64 = 1024 * 1024;
const NEAR: u64 = (1 << 31) - (64 << 20);

fn new_arena_near(addr: u64) -> Option<Arena> {
    let maps = read_maps();
    let mut cands = Vec::new();
    let mut prev_end = 0x10000u64;
    for &(s, e) in maps
        .iter()
        .chain(std::iter::once(&(0x7fff_ffff_f000u64, 0x7fff_ffff_f000u64)))
    {
        if s > prev_end && s - prev_end >= ARENA_SIZE {
            cands.push(prev_end);
            cands.push(s - ARENA_SIZE);
        }
        prev_end = prev_end.max(e);
    }
    cands.retain(|&c| c.abs_diff(addr) < NEAR);
    cands.sort_by_key(|&c| c.abs_diff(addr));
    // SAFETY: memfd_create(name, MFD_CLOEXEC) and ftruncate on it.
    let fd = unsafe {
        let fd = sys::syscall3(319, c"ptap-code".as_ptr() as usize, 1, 0) as i32;
        if fd >= 0 && sys::syscall3(77, fd as usize, ARENA_SIZE as usize, 0) != 0 {
            libc::close(fd);
            -1
        } else {
            fd
        }
    };
    let close = |fd: i32| {
        if fd >= 0 {
            // SAFETY: our own fd; the mappings keep the memory.
            unsafe { libc::close(fd) };
        }
    };
    for c in cands {
        // MAP_SHARED of the memfd (or MAP_PRIVATE|MAP_ANONYMOUS without one),
        // MAP_FIXED_NOREPLACE: never clobbers an existing mapping.
        let flags = if fd >= 0 { 0x01 } else { 0x22 } | 0x10_0000;
        // SAFETY: as above.
        let p = unsafe { sys::mmap(c as usize, ARENA_SIZE as usize, 5, flags, fd, 0) };
        if p >= 0 && (p as u64).abs_diff(addr) < NEAR {
            let rw = if fd >= 0 {
                // SAFETY: a second, writable view of the same memfd.
                let q = unsafe { sys::mmap(0, ARENA_SIZE as usize, 3, 0x01, fd, 0) };
                if q >= 0 {
                    q as u64
                } else {
                    0
                }
            } else {
                0
            };
            close(fd);
            return Some(Arena {
                base: p as u64,
                size: ARENA_SIZE,
                used: 0,
                rw,
                pid: sys::getpid(),
            });
        }
        if p >= 0 {
            // SAFETY: unmapping what we just mapped.
            unsafe { libc::munmap(p as *mut libc::c_void, ARENA_SIZE as usize) };
        }
    }
    close(fd);
    None
}

fn alloc_slot(reg: &mut Registry, addr: u64) -> Option<u64> {
    alloc_code(reg, addr, SLOT_SIZE)
}

/// `len` bytes (rounded up to a slot) of arena memory within reach of `addr`.
fn alloc_code(reg: &mut Registry, addr: u64, len: usize) -> Option<u64> {
    let len = (len as u64).div_ceil(SLOT_SIZE as u64) * SLOT_SIZE as u64;
    if len > ARENA_SIZE {
        return None;
    }
    let pid = sys::getpid();
    let fits = |a: &Arena| {
        a.pid == pid
            && a.used + len <= a.size
            && a.base.abs_diff(addr) < NEAR
            && (a.base + a.size).abs_diff(addr) < NEAR
    };
    // Only the newest few arenas are worth looking at (older ones are full).
    let n = reg.arenas.len();
    let idx = (n.saturating_sub(8)..n)
        .rev()
        .find(|&i| fits(&reg.arenas[i]));
    let i = match idx {
        Some(i) => i,
        None => {
            let a = new_arena_near(addr)?;
            reg.arenas.push(a);
            reg.arenas.len() - 1
        }
    };
    let a = &mut reg.arenas[i];
    let s = a.base + a.used;
    a.used += len;
    Some(s)
}

/// Run `f` with the registry's code memory (arenas near an address, writes
/// to text), the registry's lock held. Not for the hit path.
pub(crate) fn with_code_mem<R>(f: impl FnOnce(&mut dyn crate::optprobe::CodeMem) -> R) -> R {
    with_reg(|r| f(r))
}

impl crate::optprobe::CodeMem for Registry {
    fn alloc(&mut self, near: u64, len: usize) -> Option<u64> {
        alloc_code(self, near, len)
    }
    fn poke(&mut self, at: u64, bytes: &[u8]) -> bool {
        poke(self, at, bytes).is_ok()
    }
    fn poke_many(&mut self, w: &[(u64, Vec<u8>)]) {
        poke_many(self, w)
    }
    fn clean(&self, addr: u64, len: usize) -> Vec<u8> {
        clean_code(self, addr, len)
    }
    fn armed(&self, addr: u64) -> Option<u64> {
        let s = *self.sites.get(&addr)?;
        if self.disarmed.contains(&addr) {
            return None;
        }
        // SAFETY: registry sites are live.
        let s = unsafe { &*s };
        (s.region_slot != 0).then_some(s.slot)
    }
}

fn remember_slot(slot: u64, orig: u64) {
    let i = SLOTMAP_N.fetch_add(1, Ordering::AcqRel);
    if i < SLOTMAP_CAP {
        SLOTMAP[i].1.store(orig, Ordering::Release);
        SLOTMAP[i].0.store(slot, Ordering::Release);
    }
}

/// Build the int3-terminated slot used for post_handlers (see `Site::post_slot`).
/// Only for instructions that always fall through to the next one.
fn build_post_slot(reg: &mut Registry, bytes: &[u8], addr: u64) -> u64 {
    use ptap_arch::decode::{self, Class};
    let Ok(i) = decode::decode_one(bytes, addr) else {
        return 0;
    };
    let len = i.len();
    if !matches!(
        decode::classify(&i, &bytes[..len]),
        Class::Plain | Class::RipRelative | Class::Syscall
    ) {
        return 0;
    }
    let Some(slot) = alloc_slot(reg, addr) else {
        return 0;
    };
    let Ok(p) = xol::prepare(bytes, addr, slot) else {
        return 0;
    };
    let bl = p.body_len as usize;
    if p.kind != Kind::Slot || p.n_steps != 1 || p.slot[bl] != 0xe9 || bl + 6 > xol::DATA_OFFSET {
        return 0;
    }
    let mut code = p.slot[..bl].to_vec();
    code.push(0xcc);
    let rel = p.next() as i64 - (slot + bl as u64 + 6) as i64;
    let Ok(rel) = i32::try_from(rel) else {
        return 0;
    };
    code.push(0xe9);
    code.extend_from_slice(&rel.to_le_bytes());
    if poke(reg, slot, &code).is_err() {
        return 0;
    }
    remember_slot(slot, addr);
    slot
}

/// Address of the int3 in a post slot.
pub fn post_int3(site: &Site) -> u64 {
    site.post_slot + site.prep.body_len as u64
}

/// Is `addr` inside one of our slot arenas?
fn in_arena(reg: &Registry, addr: u64) -> bool {
    reg.arenas
        .iter()
        .any(|a| addr >= a.base && addr < a.base + a.size)
}

/// Copy `len` bytes of code at `addr`, with int3s of our own probes replaced
/// by the original bytes.
fn clean_code(reg: &Registry, addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: the caller checked [addr, addr+len) lies in a mapped executable segment.
    let mut v = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
    // Whichever is smaller: the range's addresses or the registered sites.
    if len < reg.sites.len() {
        for (off, b) in v.iter_mut().enumerate() {
            if let Some(&s) = reg.sites.get(&(addr + off as u64)) {
                // SAFETY: sites in the registry are live.
                *b = unsafe { (*s).orig[0] };
            }
        }
    } else {
        for (&a, &s) in &reg.sites {
            if a >= addr && a < addr + len as u64 {
                // SAFETY: sites in the registry are live.
                v[(a - addr) as usize] = unsafe { (*s).orig[0] };
            }
        }
    }
    // Jumps of optimized sites (the registry's lock is held: none changes),
    // and syscall sites moved out of libc (syscall::sites).
    let moved = crate::syscall::sites::originals_in(addr, len as u64);
    for (a, orig) in crate::optprobe::originals_in(addr, len as u64)
        .into_iter()
        .chain(moved)
    {
        let off = (a - addr) as usize;
        let n = orig.len().min(len - off);
        v[off..off + n].copy_from_slice(&orig[..n]);
    }
    v
}

/// Marks a function size taken from CFI bounds (see `resolve`).
const CFI_BOUNDS: u64 = 1 << 63;

/// Resolve the probe address of `kp` and validate it. Returns (addr, func
/// start or 0, func size, end of the executable segment).
fn resolve(kp: *mut Kprobe) -> Result<(u64, u64, u64, u64), i32> {
    // SAFETY: kp points to the user's struct (checked non-null by the caller).
    let (addr, sym, off) = unsafe { ((*kp).addr as u64, (*kp).symbol_name, (*kp).offset as u64) };
    let (addr, mut func, mut size) = if addr == 0 {
        if sym.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: user-supplied NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(sym) }
            .to_string_lossy()
            .into_owned();
        let f = crate::symcache::lookup(&name).ok_or_else(|| {
            set_last_error(format!("unknown symbol `{name}`"));
            ENOENT
        })?;
        (f.addr + off, f.func, f.size)
    } else {
        if !sym.is_null() {
            set_last_error("both addr and symbol_name are set".into());
            return Err(EINVAL);
        }
        (addr, 0, 0)
    };
    let mut idx = symbols::get_or_build();
    if symbols::executable(idx, addr).is_none() {
        idx = symbols::build();
    }
    let obj = symbols::executable(idx, addr).ok_or_else(|| {
        set_last_error(format!(
            "{addr:#x} is not in the executable code of a loaded object"
        ));
        EINVAL
    })?;
    if obj.is_runtime {
        set_last_error(format!("{addr:#x} is inside the ptap runtime itself"));
        return Err(EINVAL);
    }
    let seg_end = obj
        .exec
        .iter()
        .find(|&&(s, e)| addr >= s && addr < e)
        .map(|r| r.1)
        .unwrap_or(addr + 1);
    if func == 0 {
        if let Some((_, s)) = symbols::containing(idx, addr) {
            if s.size > 0 && addr < s.addr + s.size {
                func = s.addr;
                size = s.size;
            }
        }
    }
    if func == 0 || size == 0 {
        // No sized symbol (a stripped library's local function, an IFUNC
        // implementation): the bounds of its CFI, for the boundary check.
        // Not for jump optimization: hand-written assembly such as glibc's
        // string functions has several entry points, and a sibling entry
        // outside this FDE may jump into the bytes a jump would replace
        // (measured: a jump-optimized memcpy implementation missed most
        // of its calls). `resolve` marks such bounds with the high bit.
        if let Some((s, e)) = crate::unwind_dwarf::fde_bounds(obj, addr) {
            func = s;
            size = (e - s) | CFI_BOUNDS;
        }
    }
    if func != 0 && size > 0 && addr >= func + (size & !CFI_BOUNDS) {
        set_last_error(format!(
            "offset {:#x} is beyond the end of the function",
            addr - func
        ));
        return Err(EINVAL);
    }
    let g = sys::gadget();
    if addr >= g && addr < g + 3 {
        // The `syscall; ret` every raw system call of the runtime goes
        // through (see syscall/sites.rs): an int3 there would trap inside
        // the runtime's own hit path.
        set_last_error(format!(
            "{addr:#x} is the runtime's own system call gadget and cannot be probed"
        ));
        return Err(EINVAL);
    }
    Ok((addr, func, size, seg_end))
}

fn arch_errno(e: ArchError) -> i32 {
    match e {
        ArchError::NotBoundary | ArchError::Undecodable | ArchError::Truncated => EILSEQ,
        _ => EINVAL,
    }
}

/// Why the last registration failed (for `ptap -v`-style messages).
pub static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

fn set_last_error(s: String) {
    if let Ok(mut g) = LAST_ERROR.lock() {
        *g = s;
    }
}

/// Verbose registration reports (`ptap load -v` sets PTAP_VERBOSE).
pub static VERBOSE: AtomicBool = AtomicBool::new(false);

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::K => "register_kprobe",
        EntryKind::J(_) => "register_jprobe",
        EntryKind::R(_) => "register_kretprobe",
    }
}

/// How the user named the probe point: "sym+0xoff" or the address.
fn describe(kp: *mut Kprobe) -> String {
    // SAFETY: kp is the user's (non-NULL) struct; symbol_name is a C string.
    unsafe {
        if !(*kp).symbol_name.is_null() {
            let n = std::ffi::CStr::from_ptr((*kp).symbol_name).to_string_lossy();
            return if (*kp).offset != 0 {
                format!("{n}+{:#x}", (*kp).offset)
            } else {
                n.into_owned()
            };
        }
        let mut data = [0u8; 256];
        let mut b = crate::fmt::Buf {
            data: &mut data,
            len: 0,
        };
        symbols::symbolize((*kp).addr as u64, &mut b);
        String::from_utf8_lossy(b.as_bytes()).into_owned()
    }
}

fn register_entry(kp: *mut Kprobe, kind: EntryKind) -> i32 {
    if kp.is_null() {
        return -EINVAL;
    }
    set_last_error(String::new());
    let r = register_entry_inner(kp, kind);
    if !crate::optprobe::in_batch() {
        flush_optimizer();
    }
    // SAFETY: kp is the caller's non-NULL struct.
    let quiet = unsafe { kprobe_flags(kp) } & KPROBE_FLAG_QUIET != 0;
    if r < 0 && !quiet {
        let why = LAST_ERROR.lock().map(|g| g.clone()).unwrap_or_default();
        let why = if !why.is_empty() {
            why
        } else {
            match -r {
                EEXIST => "this struct is already registered".into(),
                EBUSY => "a jprobe is already on this function".into(),
                ENOMEM => "no room for an out-of-line slot near the address".into(),
                _ => "refused".into(),
            }
        };
        crate::output::diag(
            format!("ptap: {}({}): {why} ({r})\n", kind_name(kind), describe(kp)).as_bytes(),
        );
    } else if VERBOSE.load(Ordering::Relaxed) {
        report_site(kp, kind);
    }
    r
}

/// `ptap load -v`: how a registered probe is placed.
fn report_site(kp: *mut Kprobe, kind: EntryKind) {
    // SAFETY: registered kprobe.
    let addr = unsafe { (*kp).addr } as u64;
    let msg = with_reg(|reg| {
        let site = *reg.sites.get(&addr)?;
        // SAFETY: registry sites are live.
        let s = unsafe { &*site };
        let insn = ptap_arch::decode::disassemble(&s.orig[..s.prep.insn_len as usize], addr);
        let opt = crate::optprobe::describe(addr);
        let how = match (s.prep.kind, s.post_slot) {
            (Kind::Emulate(_), _) => "emulated".to_string(),
            (Kind::Slot, 0) => format!("slot {:#x} (boosted; post_handler single-stepped)", s.slot),
            (Kind::Slot, p) => format!("slot {:#x} (boosted), post slot {p:#x}", s.slot),
        };
        Some(format!(
            "ptap: {} {} at {addr:#x}: `{insn}` {how}, {} probe(s) here; {opt}\n",
            kind_name(kind),
            describe(kp),
            s.probes.len()
        ))
    });
    if let Some(m) = msg {
        crate::output::diag(m.as_bytes());
    }
}

fn register_entry_inner(kp: *mut Kprobe, kind: EntryKind) -> i32 {
    if kp.is_null() {
        return -EINVAL;
    }
    if with_reg(|r| r.by_kp.contains_key(&(kp as usize))) {
        return -EEXIST;
    }
    let (addr, func, size, seg_end) = match resolve(kp) {
        Ok(x) => x,
        Err(e) => return -e,
    };
    // A jprobe's entry mirrors the function's arguments, a kretprobe
    // hijacks the return address at [sp]: both only make sense at the
    // function's first instruction (Linux: kprobe_on_func_entry). A
    // kretprobe after `push rbp` would overwrite the saved rbp.
    let what = match kind {
        EntryKind::J(_) => Some("jprobe"),
        EntryKind::R(_) => Some("kretprobe"),
        EntryKind::K => None,
    };
    if let Some(what) = what {
        if func != 0 && addr != func {
            set_last_error(format!("{what} at {addr:#x} is not a function entry"));
            return -EINVAL;
        }
    }
    let r = with_reg(|reg| -> Result<Option<*mut Site>, i32> {
        if reg.by_kp.contains_key(&(kp as usize)) {
            return Err(EEXIST);
        }
        if in_arena(reg, addr) {
            return Err(EINVAL);
        }
        let entry = Entry {
            kp,
            kind,
            dead: Box::leak(Box::new(AtomicBool::new(false))),
        };
        if let Some(&old) = reg.sites.get(&addr) {
            // SAFETY: registry sites are live.
            let o = unsafe { &*old };
            if matches!(kind, EntryKind::J(_))
                && o.probes.iter().any(|e| matches!(e.kind, EntryKind::J(_)))
            {
                return Err(EBUSY);
            }
            let mut probes = o.probes.clone();
            probes.push(entry);
            // A post_handler or a jprobe forces the trap path: take the jump
            // out (int3 back, tail restored) before that snapshot is visible.
            let keep_opt = o.region_slot != 0
                && optimizable(&probes)
                && crate::optprobe::handlers_fit(addr, handlers_known(&probes));
            if !keep_opt {
                crate::optprobe::unoptimize(addr, reg);
                crate::optprobe::forget(addr);
            }
            let ns = Box::into_raw(Box::new(Site {
                addr,
                orig: o.orig,
                prep: o.prep,
                slot: o.slot,
                post_slot: o.post_slot,
                has_ret: probes.iter().any(|e| matches!(e.kind, EntryKind::R(_))),
                probes,
                region_slot: if keep_opt { o.region_slot } else { 0 },
            }));
            reg.sites.insert(addr, ns);
            publish(addr, ns);
            // SAFETY: kp is the user's struct.
            let enabled = unsafe { kprobe_flags(kp) } & KPROBE_FLAG_DISABLED == 0;
            if enabled && reg.disarmed.contains(&addr) && poke(reg, addr, &[0xcc]).is_ok() {
                reg.disarmed.remove(&addr);
                sys::membarrier_sync_core();
                if keep_opt {
                    crate::optprobe::queue(addr);
                }
            }
            reg.by_kp.insert(kp as usize, addr);
            // SAFETY: kp is the user's struct.
            unsafe { (*kp).addr = addr as *mut u8 };
            return Ok(Some(old));
        }
        // Fresh site.
        let mut region_slot = 0;
        let cfi_only = size & CFI_BOUNDS != 0;
        let size = size & !CFI_BOUNDS;
        if func != 0 && size > 0 {
            let code = clean_code(reg, func, size as usize);
            if let Err(e) = ptap_arch::decode::check_boundary(&code, func, addr) {
                set_last_error(format!("{addr:#x}: {e}"));
                return Err(arch_errno(e));
            }
            if !crate::optprobe::enabled() {
            } else if cfi_only {
                crate::optprobe::refuse(
                    addr,
                    "function bounds known from its CFI only (no sized symbol): another entry point may jump into the replaced bytes".into(),
                );
            } else if !optimizable(&[entry]) {
                crate::optprobe::refuse(addr, "a post_handler forces the trap path".into());
            } else if threads::current_is_active() {
                crate::optprobe::refuse(addr, "registered from inside a probe handler".into());
            } else {
                let known = handlers_known(core::slice::from_ref(&entry));
                match crate::optprobe::prepare(addr, func, &code, known, reg) {
                    Ok(rs) => region_slot = rs,
                    Err(why) => crate::optprobe::refuse(addr, why),
                }
            }
        } else if crate::optprobe::enabled() {
            crate::optprobe::refuse(addr, "no function size known for the address".into());
        }
        let n = (seg_end - addr).min(16) as usize;
        let bytes = clean_code(reg, addr, n);
        let slot = alloc_slot(reg, addr).ok_or(ENOMEM)?;
        let prep = xol::prepare(&bytes, addr, slot).map_err(|e| {
            set_last_error(format!("{addr:#x}: {e}"));
            arch_errno(e)
        })?;
        let (slot, post_slot) = if let Kind::Slot = prep.kind {
            poke(reg, slot, prep.slot_bytes())?;
            remember_slot(slot, addr);
            (slot, build_post_slot(reg, &bytes, addr))
        } else {
            (0, 0)
        };
        let mut orig = [0u8; 16];
        orig[..n].copy_from_slice(&bytes);
        let site = Box::into_raw(Box::new(Site {
            addr,
            orig,
            prep,
            slot,
            post_slot,
            has_ret: matches!(kind, EntryKind::R(_)),
            probes: vec![entry],
            region_slot,
        }));
        if !publish(addr, site) {
            // SAFETY: never published.
            drop(unsafe { Box::from_raw(site) });
            return Err(ENOMEM);
        }
        reg.sites.insert(addr, site);
        if crate::optprobe::in_batch() {
            reg.deferred_int3.push(addr);
        } else if let Err(e) = poke(reg, addr, &[0xcc]) {
            publish(addr, core::ptr::null_mut());
            reg.sites.remove(&addr);
            return Err(e);
        }
        // A batch (register_kprobes) serializes every core once at its end.
        if !crate::optprobe::in_batch() {
            sys::membarrier_sync_core();
        }
        if region_slot != 0 {
            crate::optprobe::queue(addr);
        }
        reg.by_kp.insert(kp as usize, addr);
        // SAFETY: kp is the user's struct.
        unsafe { (*kp).addr = addr as *mut u8 };
        Ok(None)
    });
    match r {
        Ok(old) => {
            if let Some(old) = old {
                retire(old);
            }
            0
        }
        Err(e) => -e,
    }
}

/// Free an unpublished site after a grace period. When called from inside
/// a handler (this thread is itself using a site, maybe this one), the site
/// is leaked instead: the grace period cannot include ourselves.
///
/// The grace period is bounded (3 s, `threads::synchronize`) rather than
/// unbounded as in the kernel: an abandoned hit path (a jprobe entry that
/// never calls jprobe_return, a single-step window left by a longjmp) would
/// otherwise hang unregister, and with it exit and detach. What makes the
/// bound safe for the user's struct: the removed entry's runtime-owned
/// `dead` flag is set before the wait, and a thread that outlives it checks
/// that flag before each access to the struct (pre/post/fault handlers,
/// flags, nmissed); the site itself is then leaked, never freed. Remaining
/// window: a thread stalled for the whole bound between that check and the
/// handler call.
fn retire(old: *mut Site) {
    // The jump-optimized hit path marks itself active without a fence; this
    // membarrier orders its store for the scan below (see optprobe::enter).
    sys::membarrier_sync_core();
    if !threads::synchronize() {
        crate::output::diag(
            b"ptap: a thread stayed inside a probe handler for 3 s; its probe data is leaked\n",
        );
        return;
    }
    if threads::current_is_active() {
        return;
    }
    // SAFETY: unpublished and past a grace period; no other reference.
    drop(unsafe { Box::from_raw(old) });
}

fn unregister_entry(kp: *mut Kprobe) -> bool {
    if kp.is_null() {
        return false;
    }
    let old = with_reg(|reg| {
        let addr = reg.by_kp.remove(&(kp as usize))?;
        let old = reg.sites.remove(&addr)?;
        // SAFETY: registry sites are live.
        let o = unsafe { &*old };
        // Dead before the grace period: a thread that outlives it (bounded,
        // see retire) no longer touches this struct after its next check.
        for e in o.probes.iter().filter(|e| e.kp == kp) {
            e.dead.store(true, Ordering::Release);
        }
        let probes: Vec<Entry> = o.probes.iter().copied().filter(|e| e.kp != kp).collect();
        if probes.is_empty() {
            // Restore the byte first, then unpublish: a thread that misses
            // the table then sees the original byte (see trap.rs).
            let b = [o.orig[0]];
            crate::optprobe::forget(addr);
            reg.deferred_int3.retain(|&a| a != addr);
            if !reg.disarmed.remove(&addr) {
                crate::optprobe::unoptimize(addr, reg);
                let _ = poke(reg, addr, &b);
                sys::membarrier_sync_core();
            }
            publish(addr, core::ptr::null_mut());
        } else {
            let ns = Box::into_raw(Box::new(Site {
                addr,
                orig: o.orig,
                prep: o.prep,
                slot: o.slot,
                post_slot: o.post_slot,
                has_ret: probes.iter().any(|e| matches!(e.kind, EntryKind::R(_))),
                region_slot: if optimizable(&probes) {
                    o.region_slot
                } else {
                    0
                },
                probes,
            }));
            reg.sites.insert(addr, ns);
            publish(addr, ns);
            // The probes left may all be disabled: disarm.
            // SAFETY: ns was just published; its probes are registered.
            let all_off = unsafe { &*ns }
                .probes
                .iter()
                // SAFETY: registered probes.
                .all(|e| unsafe { kprobe_flags(e.kp) } & KPROBE_FLAG_DISABLED != 0);
            if all_off && !reg.disarmed.contains(&addr) {
                crate::optprobe::unoptimize(addr, reg);
                crate::optprobe::forget(addr);
                if poke(reg, addr, &[o.orig[0]]).is_ok() {
                    reg.disarmed.insert(addr);
                    sys::membarrier_sync_core();
                }
            }
        }
        Some(old)
    });
    match old {
        Some(old) => {
            retire(old);
            true
        }
        None => false,
    }
}

// ------------------------------------------------------------------ C API

/// # Safety
/// `p` must point to a `struct kprobe` that stays valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_kprobe(p: *mut Kprobe) -> i32 {
    register_entry(p, EntryKind::K)
}

/// # Safety
/// `p` must be NULL or a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_kprobe(p: *mut Kprobe) {
    unregister_entry(p);
}

/// # Safety
/// `kps` must point to `num` kprobe pointers.
#[no_mangle]
pub unsafe extern "C" fn register_kprobes(kps: *mut *mut Kprobe, num: i32) -> i32 {
    if kps.is_null() || num <= 0 {
        return -EINVAL;
    }
    // One optimizer pass (one barrier, three membarriers) for the batch.
    let nested = crate::optprobe::in_batch();
    crate::optprobe::set_batch(true);
    for i in 0..num as usize {
        // SAFETY: caller contract.
        let p = unsafe { *kps.add(i) };
        let r = register_entry(p, EntryKind::K);
        if r < 0 {
            for k in 0..i {
                // SAFETY: caller contract.
                unregister_entry(unsafe { *kps.add(k) });
            }
            crate::optprobe::set_batch(nested);
            return r;
        }
    }
    crate::optprobe::set_batch(nested);
    if !nested {
        sys::membarrier_sync_core();
        flush_optimizer();
    }
    0
}

/// # Safety
/// `kps` must point to `num` kprobe pointers.
#[no_mangle]
pub unsafe extern "C" fn unregister_kprobes(kps: *mut *mut Kprobe, num: i32) {
    if kps.is_null() {
        return;
    }
    for i in 0..num.max(0) as usize {
        // SAFETY: caller contract.
        unregister_entry(unsafe { *kps.add(i) });
    }
}

/// Disable or enable a probe. A site whose probes are all disabled is
/// disarmed (its original byte put back: no trap at all), and re-armed when
/// one of them is enabled again.
fn set_disabled(p: *mut Kprobe, disabled: bool) -> i32 {
    if p.is_null() {
        return -EINVAL;
    }
    with_reg(|reg| {
        let Some(&addr) = reg.by_kp.get(&(p as usize)) else {
            return -EINVAL;
        };
        // SAFETY: registered kprobe; flags is an aligned u32 also read by the hit path.
        let f = unsafe { &*(core::ptr::addr_of_mut!((*p).flags) as *const AtomicU32) };
        if disabled {
            f.fetch_or(KPROBE_FLAG_DISABLED, Ordering::AcqRel);
        } else {
            f.fetch_and(!KPROBE_FLAG_DISABLED, Ordering::AcqRel);
        }
        let Some(&site) = reg.sites.get(&addr) else {
            return 0;
        };
        // SAFETY: registry sites are live.
        let all_off = unsafe { &*site }
            .probes
            .iter()
            // SAFETY: registered probes.
            .all(|e| unsafe { kprobe_flags(e.kp) } & KPROBE_FLAG_DISABLED != 0);
        // SAFETY: as above.
        let orig = unsafe { (*site).orig[0] };
        let armed = !reg.disarmed.contains(&addr);
        if all_off && armed {
            crate::optprobe::unoptimize(addr, reg);
            crate::optprobe::forget(addr);
            if poke(reg, addr, &[orig]).is_ok() {
                reg.disarmed.insert(addr);
                sys::membarrier_sync_core();
            }
        } else if !all_off && !armed && poke(reg, addr, &[0xcc]).is_ok() {
            reg.disarmed.remove(&addr);
            sys::membarrier_sync_core();
            // SAFETY: registry sites are live.
            if unsafe { (*site).region_slot } != 0 {
                crate::optprobe::queue(addr);
                crate::optprobe::optimize_pending(reg);
            }
        }
        0
    })
}

/// # Safety
/// `p` must be a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn enable_kprobe(p: *mut Kprobe) -> i32 {
    set_disabled(p, false)
}

/// # Safety
/// `p` must be a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn disable_kprobe(p: *mut Kprobe) -> i32 {
    set_disabled(p, true)
}

/// # Safety
/// `jp` must point to a `struct jprobe` valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_jprobe(jp: *mut Jprobe) -> i32 {
    if jp.is_null() {
        return -EINVAL;
    }
    // SAFETY: caller contract.
    if unsafe { (*jp).entry.is_null() } {
        return -EINVAL;
    }
    // SAFETY: kp is the first field.
    register_entry(
        unsafe { core::ptr::addr_of_mut!((*jp).kp) },
        EntryKind::J(jp),
    )
}

/// # Safety
/// `jp` must be NULL or a registered jprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_jprobe(jp: *mut Jprobe) {
    if !jp.is_null() {
        // SAFETY: caller contract.
        unregister_entry(unsafe { core::ptr::addr_of_mut!((*jp).kp) });
    }
}

/// Can a site with these probes be jump-optimized? (No post_handler: it
/// needs the trap after the displaced instruction.)
/// Are all these probes' handlers compiled-script code (whose use of vector
/// state ptap knows: see `optprobe::vector_save`)? kretprobes and jprobes
/// sit at function entries, where it does not matter.
fn handlers_known(probes: &[Entry]) -> bool {
    probes.iter().all(|e| match e.kind {
        // SAFETY: registered (or being registered) probes.
        EntryKind::K => unsafe {
            (*e.kp).fault_handler.is_none()
                && (*e.kp)
                    .pre_handler
                    .is_none_or(|f| f as usize == crate::script::attach::kprobe_pre_addr())
        },
        _ => true,
    })
}

fn optimizable(probes: &[Entry]) -> bool {
    probes.iter().all(|e| {
        // SAFETY: registered (or being registered) probes.
        unsafe { (*e.kp).post_handler.is_none() }
    })
}

/// Arm the int3s a batch deferred, then write the jumps of the sites queued
/// for optimization.
fn flush_optimizer() {
    with_reg(|reg| {
        if !reg.deferred_int3.is_empty() {
            let w: Vec<(u64, Vec<u8>)> = core::mem::take(&mut reg.deferred_int3)
                .into_iter()
                .map(|a| (a, vec![0xcc]))
                .collect();
            poke_many(reg, &w);
            sys::membarrier_sync_core();
        }
        crate::optprobe::optimize_pending(reg)
    });
}

/// Write many small pieces of code (registration time): each run of r-x
/// text pages is made writable once (mprotect), written with plain copies
/// and made r-x again, instead of one /proc/self/mem write per piece. Pieces
/// in other mappings (not plain r-x, or mprotect refused) go through `poke`.
fn poke_many(reg: &mut Registry, w: &[(u64, Vec<u8>)]) {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let rx: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (a, b) = it.next()?.split_once('-')?;
            (it.next()? == "r-xp").then_some(())?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by_key(|&i| w[i].0);
    let mut i = 0;
    while i < order.len() {
        let (a, ref b) = w[order[i]];
        let Some(&(ms, me)) = rx.iter().find(|&&(s, e)| a >= s && a + b.len() as u64 <= e) else {
            let _ = poke(reg, a, b);
            i += 1;
            continue;
        };
        // The pieces inside this mapping, and the pages they touch.
        let mut j = i;
        while j < order.len() {
            let (a2, ref b2) = w[order[j]];
            if a2 < ms || a2 + b2.len() as u64 > me {
                break;
            }
            j += 1;
        }
        let lo = a & !0xfff;
        let (la, ref lb) = w[order[j - 1]];
        let hi = (la + lb.len() as u64 + 0xfff) & !0xfff;
        // SAFETY: our own r-x text pages, made r-w-x for the copies and then
        // r-x again (the mapping was r-x, checked above).
        let ok = unsafe { sys::mprotect(lo as usize, (hi - lo) as usize, 7) } == 0;
        for &k in &order[i..j] {
            let (a2, ref b2) = w[k];
            if ok {
                // SAFETY: inside the pages just made writable.
                unsafe { core::ptr::copy_nonoverlapping(b2.as_ptr(), a2 as *mut u8, b2.len()) };
            } else {
                let _ = poke(reg, a2, b2);
            }
        }
        if ok {
            // SAFETY: as above.
            unsafe { sys::mprotect(lo as usize, (hi - lo) as usize, 5) };
        }
        i = j;
    }
}

pub fn default_maxactive() -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (2 * n).max(10)
}

/// # Safety
/// `rp` must point to a `struct kretprobe` valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_kretprobe(rp: *mut Kretprobe) -> i32 {
    if rp.is_null() {
        return -EINVAL;
    }
    // A live struct: refuse before touching it (its nmissed) or allocating.
    // (register_entry checks again under the registry lock.)
    // SAFETY: caller contract; kp is the first field.
    let kp0 = unsafe { core::ptr::addr_of_mut!((*rp).kp) };
    if with_reg(|r| r.by_kp.contains_key(&(kp0 as usize))) {
        set_last_error("this struct is already registered".into());
        // SAFETY: caller contract (a registered struct).
        if unsafe { kprobe_flags(kp0) } & KPROBE_FLAG_QUIET == 0 {
            crate::output::diag(
                format!(
                    "ptap: register_kretprobe({}): this struct is already registered (-17)\n",
                    describe(kp0)
                )
                .as_bytes(),
            );
        }
        return -EEXIST;
    }
    crate::optprobe::ensure_ret_stub();
    // SAFETY: caller contract.
    let (maxactive, data_size) = unsafe { ((*rp).maxactive, (*rp).data_size) };
    let n = if maxactive <= 0 {
        default_maxactive()
    } else {
        maxactive as usize
    };
    if n > 1 << 20 || data_size > 1 << 20 {
        return -EINVAL;
    }
    let stride = (INST_HDR + core::mem::size_of::<KretprobeInstance>() + data_size + 15) & !15;
    let Some(bytes) = n.checked_mul(stride).filter(|&b| b <= 256 << 20) else {
        return -ENOMEM;
    };
    let mem = Box::leak(vec![0u8; bytes + 16].into_boxed_slice());
    let base = (mem.as_mut_ptr() as usize + 15) & !15;
    let rec = Box::leak(Box::new(RetRec {
        rp,
        alive: AtomicBool::new(true),
        mem: base as *mut u8,
        n,
        stride,
        free: FreeHead(AtomicU64::new(0)),
    }));
    for i in 0..n {
        let h = rec.inst(i);
        // SAFETY: h is inside the zeroed block; nothing uses rec yet.
        unsafe {
            (*h).rec = rec;
            (*public(h)).rp = rp;
            // free list 0, 1, ..., n-1 (index 0 on top)
            (*h).free_next
                .store(if i + 1 < n { i as u32 + 2 } else { 0 }, Ordering::Relaxed);
        }
    }
    rec.free.store(if n > 0 { 1 } else { 0 }, Ordering::Release);
    // SAFETY: caller contract.
    unsafe { (*rp).nmissed = 0 };
    // SAFETY: kp is the first field.
    let kp = unsafe { core::ptr::addr_of_mut!((*rp).kp) };
    let r = register_entry(kp, EntryKind::R(rec));
    if r == 0 {
        with_reg(|reg| reg.rets.insert(rp as usize, rec));
    } else {
        rec.alive.store(false, Ordering::Release);
    }
    r
}

/// # Safety
/// `rp` must be NULL or a registered kretprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_kretprobe(rp: *mut Kretprobe) {
    if rp.is_null() {
        return;
    }
    if let Some(rec) = with_reg(|reg| reg.rets.remove(&(rp as usize))) {
        // SAFETY: records are never freed.
        unsafe { (*rec).alive.store(false, Ordering::Release) };
    }
    // SAFETY: kp is the first field; unregister_entry waits for a grace
    // period, after which no handler of rp runs (alive is false).
    unregister_entry(unsafe { core::ptr::addr_of_mut!((*rp).kp) });
}

/// Unregister every probe still registered (Ctrl-C detach, exit).
pub fn unregister_all() {
    let kps: Vec<usize> = with_reg(|r| r.by_kp.keys().copied().collect());
    let rets: Vec<usize> = with_reg(|r| r.rets.keys().copied().collect());
    for rp in rets {
        // SAFETY: registered kretprobe.
        unsafe { unregister_kretprobe(rp as *mut Kretprobe) };
    }
    for kp in kps {
        unregister_entry(kp as *mut Kprobe);
    }
}

/// Number of registered probes (tests, ptap -v).
pub fn registered_count() -> usize {
    with_reg(|r| r.by_kp.len())
}

/// Number of probed addresses (tests, bench).
pub fn site_count() -> usize {
    with_reg(|r| r.sites.len())
}
