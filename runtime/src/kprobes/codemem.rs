//! Code memory: XOL slot and trampoline arenas near the code they serve,
//! and patching the target's text (/proc/self/mem, or mprotect and plain
//! copies for a batch).

// FxHash: the registry's keys are addresses and pointers (no untrusted
// input), and SipHash was 8% of arming 10,000 probes.
use rustc_hash::FxHashMap as HashMap;
use std::sync::Mutex;

use ptap_arch::xol::{self, Kind, SLOT_SIZE};

use crate::base::sys;
use crate::hit::site::remember_slot;
use crate::hit::site::RetRec;
use crate::hit::site::Site;
use crate::kprobes::register::EIO;

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

pub(crate) struct Registry {
    pub(crate) by_kp: HashMap<usize, u64>,
    pub(crate) sites: HashMap<u64, *mut Site>,
    arenas: Vec<Arena>,
    pub(crate) rets: HashMap<usize, *const RetRec>,
    /// Sites whose probes are all disabled: original byte in place.
    pub(crate) disarmed: rustc_hash::FxHashSet<u64>,
    mem_fd: i32,
    mem_id: crate::base::fds::Ident,
    /// int3s of a batch (register_kprobes), written together at its end.
    pub(crate) deferred_int3: Vec<u64>,
}

// SAFETY: the raw pointers are only touched with the registry lock held.
unsafe impl Send for Registry {}

static REG: Mutex<Option<Registry>> = Mutex::new(None);

static FORK_REG: crate::base::forklock::MutexSlot<Option<Registry>> =
    crate::base::forklock::MutexSlot::new(&REG);

/// The registry lock, for the fork handlers (taken first: every other
/// runtime lock nests inside it).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_REG
}

pub(crate) fn with_reg<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    crate::base::forklock::yield_to_fork();
    let mut g = match REG.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let r = g.get_or_insert_with(|| Registry {
        by_kp: HashMap::default(),
        sites: HashMap::default(),
        arenas: Vec::new(),
        rets: HashMap::default(),
        disarmed: rustc_hash::FxHashSet::default(),
        mem_fd: -1,
        mem_id: Default::default(),
        deferred_int3: Vec::new(),
    });
    f(r)
}

/// Write `bytes` at `addr` in this process's text: /proc/self/mem first
/// (works on r-x pages), mprotect as a fallback.
pub(crate) fn poke(reg: &mut Registry, addr: u64, bytes: &[u8]) -> Result<(), i32> {
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
    reg.mem_fd = crate::base::fds::proc_self_mem(reg.mem_fd, &mut reg.mem_id);
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
    let text = crate::proc::maps::read_self();
    let mut v: Vec<(u64, u64)> = crate::proc::maps::parse(&text)
        .map(|m| (m.start, m.end))
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

pub(crate) fn alloc_slot(reg: &mut Registry, addr: u64) -> Option<u64> {
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
pub(crate) fn with_code_mem<R>(
    f: impl FnOnce(&mut dyn crate::kprobes::codemem::CodeMem) -> R,
) -> R {
    with_reg(|r| f(r))
}

impl crate::kprobes::codemem::CodeMem for Registry {
    fn alloc(&mut self, near: u64, len: usize) -> Option<u64> {
        alloc_code(self, near, len)
    }
    fn poke(&mut self, at: u64, bytes: &[u8]) -> bool {
        poke(self, at, bytes).is_ok()
    }
    fn poke_steps(&mut self, steps: &[&[(u64, Vec<u8>)]]) {
        poke_steps(self, steps)
    }
    fn clean(&self, addr: u64, len: usize) -> Vec<u8> {
        clean_code(self, addr, len)
    }
    fn has_probe_site(&self, addr: u64) -> bool {
        self.sites.contains_key(&addr)
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

/// Build the int3-terminated slot used for post_handlers (see `Site::post_slot`).
/// Only for instructions that always fall through to the next one.
pub(crate) fn build_post_slot(reg: &mut Registry, bytes: &[u8], addr: u64) -> u64 {
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

/// Is `addr` inside one of our slot arenas?
pub(crate) fn in_arena(reg: &Registry, addr: u64) -> bool {
    reg.arenas
        .iter()
        .any(|a| addr >= a.base && addr < a.base + a.size)
}

/// Copy `len` bytes of code at `addr`, with int3s of our own probes replaced
/// by the original bytes.
pub(crate) fn clean_code(reg: &Registry, addr: u64, len: usize) -> Vec<u8> {
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
    // and syscall sites moved out of libc (crate::syscall::sites).
    let moved = MOVED_ORIGINALS
        .get()
        .map_or_else(Vec::new, |f| f(addr, len as u64));
    for (a, orig) in crate::kprobes::optimize::originals_in(addr, len as u64)
        .into_iter()
        .chain(moved)
    {
        // A jump that starts before addr overlaps its first bytes.
        let (src, dst) = if a < addr {
            ((addr - a) as usize, 0)
        } else {
            (0, (a - addr) as usize)
        };
        if src >= orig.len() || dst >= len {
            continue;
        }
        let n = (orig.len() - src).min(len - dst);
        v[dst..dst + n].copy_from_slice(&orig[src..src + n]);
    }
    v
}

/// Write many small pieces of code (registration time): each run of r-x
/// text pages is made writable once (mprotect), written with plain copies
/// and made r-x again, instead of one /proc/self/mem write per piece. Pieces
/// in other mappings (not plain r-x, or mprotect refused) go through `poke`.
pub(crate) fn poke_many(reg: &mut Registry, w: &[(u64, Vec<u8>)]) {
    write_steps(reg, &[w], false);
}

/// [`poke_many`] for the steps of cross-modifying code (int3 first, then
/// the tails, then the heads), with `membarrier(SYNC_CORE)` after each
/// step: the pages stay writable through all of them, so a process arming
/// libc's ~110 system call sites makes them writable and r-x again once,
/// not once per step (each mprotect of libc's text rewrites ~350 page
/// table entries and shoots down the other CPUs' TLBs).
pub(crate) fn poke_steps(reg: &mut Registry, steps: &[&[(u64, Vec<u8>)]]) {
    write_steps(reg, steps, true);
}

fn write_steps(reg: &mut Registry, steps: &[&[(u64, Vec<u8>)]], barrier: bool) {
    // A few pieces (a process of a followed tree arming its probes): one
    // write each is cheaper than reading and parsing /proc/self/maps.
    if steps.iter().map(|s| s.len()).sum::<usize>() <= 4 {
        for s in steps {
            for (a, b) in s.iter() {
                let _ = poke(reg, *a, b);
            }
            if barrier {
                sys::membarrier_sync_core();
            }
        }
        return;
    }
    let text = crate::proc::maps::read_self();
    let rx: Vec<(u64, u64)> = crate::proc::maps::parse(&text)
        .filter(|m| m.private_text())
        .map(|m| (m.start, m.end))
        .collect();
    // The pages each r-x mapping has pieces in, made writable once.
    let mut runs: Vec<(u64, u64, bool)> = Vec::new(); // (lo, hi, writable)
    for (a, b) in steps.iter().flat_map(|s| s.iter()) {
        let end = a + b.len() as u64;
        let Some(&(ms, me)) = rx.iter().find(|&&(s, e)| *a >= s && end <= e) else {
            continue;
        };
        let (lo, hi) = (a & !0xfff, (end + 0xfff) & !0xfff);
        match runs.iter_mut().find(|r| r.0 >= ms && r.1 <= me) {
            Some(r) => {
                r.0 = r.0.min(lo);
                r.1 = r.1.max(hi);
            }
            None => runs.push((lo, hi, false)),
        }
    }
    for r in &mut runs {
        // SAFETY: our own r-x text pages, made r-w-x for the copies and then
        // r-x again (the mapping was r-x, checked above).
        r.2 = unsafe { sys::mprotect(r.0 as usize, (r.1 - r.0) as usize, 7) } == 0;
    }
    for s in steps {
        for (a, b) in s.iter() {
            let end = a + b.len() as u64;
            if runs.iter().any(|r| r.2 && *a >= r.0 && end <= r.1) {
                // SAFETY: inside pages just made writable.
                unsafe { core::ptr::copy_nonoverlapping(b.as_ptr(), *a as *mut u8, b.len()) };
            } else {
                let _ = poke(reg, *a, b);
            }
        }
        if barrier {
            sys::membarrier_sync_core();
        }
    }
    for r in runs.iter().filter(|r| r.2) {
        // SAFETY: as above.
        unsafe { sys::mprotect(r.0 as usize, (r.1 - r.0) as usize, 5) };
    }
}

/// What the optimizer needs from the probe registry (its lock held).
pub trait CodeMem {
    /// `len` bytes of executable memory within ±2 GiB of `near`.
    fn alloc(&mut self, near: u64, len: usize) -> Option<u64>;
    /// Write code (any of our text or slot memory).
    fn poke(&mut self, at: u64, bytes: &[u8]) -> bool;
    /// Write pieces in steps, each followed by `membarrier(SYNC_CORE)`
    /// (see `poke_steps`).
    fn poke_steps(&mut self, steps: &[&[(u64, Vec<u8>)]]);
    /// Is the site at `addr` published, armed with an int3 and routed
    /// through its region slot? Then Some(its single-instruction slot or 0).
    fn armed(&self, addr: u64) -> Option<u64>;
    /// Is a probe site registered at `addr` (armed or not)?
    fn has_probe_site(&self, addr: u64) -> bool;
    /// A copy of the code at [addr, addr+len) with the bytes of the
    /// runtime's own probes put back (the caller checked it is mapped).
    fn clean(&self, addr: u64, len: usize) -> Vec<u8> {
        // SAFETY: the caller checked [addr, addr+len) is mapped code.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    }
}

/// Original bytes under code moved by a layer above (syscall sites moved out
/// of libc: `crate::syscall::sites::originals_in`), set by it before it moves
/// any.
type OriginalsIn = fn(u64, u64) -> Vec<(u64, Vec<u8>)>;
static MOVED_ORIGINALS: std::sync::OnceLock<OriginalsIn> = std::sync::OnceLock::new();

/// Register where [`clean_code`] finds the original bytes of code that
/// another part of the runtime patched (once; later calls are ignored).
pub fn set_moved_originals(f: OriginalsIn) {
    let _ = MOVED_ORIGINALS.set(f);
}
