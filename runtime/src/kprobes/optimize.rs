//! Jump-optimized probes ("optprobes") and the trap-free kretprobe return
//! trampoline.
//!
//! Where `ptap_arch::optprobe::check_region` allows it (Linux's
//! `can_optimize` rules on the whole decoded function) and no probe of the
//! site has a post_handler or is a jprobe, the int3 at a probe site is
//! replaced by a 5-byte `jmp` to a per-site trampoline built by
//! `ptap_arch::trampoline::optprobe_trampoline`: it skips the red zone, saves
//! the registers into a `pt_regs`, calls `hit::jump::opt_hit` (the same handlers, in
//! the same order, under the same reentrancy rule as the trap path), restores
//! the registers, runs the relocated displaced instructions and jumps back.
//!
//! Live patching (see `optimize_pending` / `unoptimize`), as Linux does it:
//! 1. the site is armed as a trap probe first (int3 at byte 0, membarrier
//!    SYNC_CORE); its snapshot routes trap hits through a *region slot* (all
//!    the replaced instructions, relocated, then `jmp region_end`), so no
//!    trap hit ever resumes inside bytes 1..n;
//! 2. a grace period (every thread that was in the trap hit path has left),
//!    then a signal barrier: every other thread reports the ip it was
//!    interrupted at; a thread inside bytes 1..n of a region (or in the
//!    site's old single-instruction slot, which jumps back into the region)
//!    blocks that site; we retry for a while, then leave it on the trap path;
//! 3. the jump's tail bytes (1..5), membarrier, the head byte (0xe9),
//!    membarrier.
//!
//! Unoptimizing is the reverse: int3 over the head, membarrier, original
//! tail bytes, membarrier (no thread can be inside bytes 1..n: the jump was
//! there). Trampolines and region slots are never freed: they are kept per
//! address and reused when the same address is probed again, so no thread
//! can ever be inside freed code and the memory is bounded by the number of
//! distinct probed addresses.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
// FxHash: the registry's keys are addresses and pointers (no untrusted
// input), and SipHash was 8% of arming 10,000 probes.
use rustc_hash::FxHashMap as HashMap;
use std::sync::Mutex;

use ptap_arch::decode;
use ptap_arch::optprobe::{self as aopt, Region};
use ptap_arch::trampoline::{self, Handler, VectorSave};

use crate::base::sys;
use crate::hit::jump::opt_hit;
use crate::hit::jump::ret_hit;
use crate::hit::jump::ret_stub;
use crate::hit::jump::vmode_code;
use crate::hit::jump::ENTRY_VMODE;
use crate::hit::jump::{KNOWN_RET_STUB, PRED_ENTRY, PRED_RET, RET_STUB};
use crate::hit::ranges::add_range;
use crate::hit::threads::{self};
use crate::kprobes::barrier::barrier;
use crate::kprobes::codemem::CodeMem;

/// Jump optimization is on unless `PTAP_NO_OPTIMIZE=1` (read once).
static DISABLED: AtomicU32 = AtomicU32::new(2); // 2 = not read yet

pub fn enabled() -> bool {
    let v = DISABLED.load(Ordering::Relaxed);
    if v != 2 {
        return v == 0;
    }
    let off = std::env::var("PTAP_NO_OPTIMIZE").is_ok_and(|s| !s.is_empty() && s != "0");
    DISABLED.store(off as u32, Ordering::Relaxed);
    !off
}

/// Vector state the trampolines save around handlers (the argument for each
/// choice is in docs/optprobes.md):
/// - for handler code ptap knows (`crate::kprobes::known`), where legacy SSE
///   after AVX costs nothing: the low halves of xmm0-15 (and MXCSR away from
///   an entry), no `vzeroupper` ([`VectorSave::Sse`]);
/// - otherwise, at a function entry (and at a return) the ABI makes only the argument
///   and return registers live, but GCC's inter-procedural register
///   allocation (-fipa-ra, on at -O2) lets the caller of a function in the
///   same file keep values across the call in any vector register that
///   function does not write: xmm/ymm/zmm0-15 are saved at full width, then
///   `vzeroupper`, whatever the handler is (registers 16-31: see
///   docs/optprobes.md);
/// - anywhere else any vector register may be live. For handlers whose code
///   ptap knows (compiled scripts: Cranelift with fixed SSE-only ISA flags,
///   and the runtime, which calls no libc routine on the hit path), 16
///   registers at full width, MXCSR, `vzeroupper`; for other handlers (C
///   modules may call anything, e.g. an AVX-512 memcpy using ymm16-31) the
///   whole XSAVE state.
///
/// `PTAP_OPT_XSAVE=1` forces XSAVE everywhere.
fn vector_save(at_entry: bool, known_handlers: bool) -> VectorSave {
    static FORCE: AtomicU32 = AtomicU32::new(2); // 2 = not read yet
    let mut force = FORCE.load(Ordering::Relaxed);
    if force == 2 {
        force = std::env::var("PTAP_OPT_XSAVE").is_ok_and(|s| s == "1") as u32;
        FORCE.store(force, Ordering::Relaxed);
    }
    let xsave = || match trampoline::xsave_size() {
        Some(size) => VectorSave::Xsave { size },
        None => VectorSave::Xmm,
    };
    if force == 1 {
        return xsave();
    }
    let avx = trampoline::avx_enabled();
    let zmm = trampoline::avx512_enabled();
    // Handlers whose every instruction is legacy SSE never write bits 128
    // and up: the low halves (and MXCSR away from an entry) are enough, and
    // where SSE after AVX costs nothing that is cheaper than the wide save.
    if known_handlers && avx && trampoline::sse_after_avx_is_cheap() {
        return VectorSave::Sse { mxcsr: !at_entry };
    }
    match (at_entry, avx) {
        // All sixteen, not only the argument registers: GCC's -fipa-ra
        // (on at -O2) lets a caller keep values in any register a callee
        // of the same file does not write, across the call (see
        // docs/optprobes.md, "The vector-state rule").
        (true, true) => VectorSave::Wide {
            n: 16,
            zmm,
            mxcsr: false,
        },
        (true, false) => VectorSave::Xmm,
        (false, true) if known_handlers => VectorSave::Wide {
            n: 16,
            zmm,
            mxcsr: true,
        },
        _ => xsave(),
    }
}

/// A save that is enough only for handlers ptap knows (see [`vector_save`]).
fn needs_known(vs: VectorSave) -> bool {
    matches!(vs, VectorSave::Sse { .. })
}

/// Build the return stub once (registration time, first kretprobe). It is
/// never rebuilt or freed: hijacked return addresses may point at it.
pub fn ensure_ret_stub() {
    static ONCE: Mutex<()> = Mutex::new(());
    if !enabled() || ret_stub() != 0 {
        return;
    }
    let _g = ONCE.lock();
    if ret_stub() != 0 {
        return;
    }
    // Four stubs of at most QUARTER bytes each: the return stub, its
    // variant for return handlers of known code (when they can do with a
    // lighter save), and the predicted return stub of each kind.
    const LEN: usize = 8192;
    const QUARTER: usize = LEN / 4;
    // SAFETY: a fresh private anonymous RW mapping.
    let p = unsafe { sys::mmap(0, LEN, 3, 0x22, -1, 0) };
    if p < 0 {
        return;
    }
    let at = p as u64;
    let h = Handler {
        func: ret_hit as *const () as u64,
        data: 0,
    };
    let unknown = vector_save(true, false);
    let known = vector_save(true, true);
    let known = needs_known(known).then_some(known);
    let q = |i: usize| at + (i * QUARTER) as u64;
    let Ok(code) = trampoline::return_trampoline(q(0), h, unknown) else {
        return;
    };
    let known_code = known.and_then(|v| trampoline::return_trampoline(q(1), h, v).ok());
    let pred = trampoline::predicted_return_stub(q(2), h, unknown).ok();
    let known_pred = known.and_then(|v| trampoline::predicted_return_stub(q(3), h, v).ok());
    let mut stubs: Vec<(u64, &[u8])> = vec![(q(0), &code)];
    if let Some(k) = &known_code {
        stubs.push((q(1), k));
    }
    if let Some((p, _)) = &pred {
        stubs.push((q(2), p));
    }
    if let Some((p, _)) = &known_pred {
        stubs.push((q(3), p));
    }
    if stubs.iter().any(|(_, b)| b.len() > QUARTER) {
        return;
    }
    // SAFETY: our RW mapping; then made r-x.
    unsafe {
        for (a, b) in &stubs {
            core::ptr::copy_nonoverlapping(b.as_ptr(), *a as *mut u8, b.len());
        }
        sys::mprotect(at as usize, LEN, 5);
    }
    for (a, b) in &stubs {
        add_range(*a, b.len() as u64, 0, &[], 0);
    }
    if known_code.is_some() {
        KNOWN_RET_STUB.store(q(1), Ordering::Release);
    }
    // Known handlers use the known predicted stub when there is one, the
    // other one otherwise (as with the return stubs).
    if let Some((_, t)) = pred {
        for i in 0..2 {
            PRED_RET[i].store(q(2) + t, Ordering::Relaxed);
            PRED_ENTRY[i].store(q(2), Ordering::Release);
        }
    }
    if let (Some((_, t)), true) = (known_pred, known_code.is_some()) {
        PRED_RET[1].store(q(3) + t, Ordering::Relaxed);
        PRED_ENTRY[1].store(q(3), Ordering::Release);
    }
    RET_STUB.store(at, Ordering::Release);
}

pub struct Opt {
    pub region: Region,
    /// Original bytes of the region.
    pub orig: Vec<u8>,
    pub tramp: u64,
    pub region_slot: u64,
    /// The jump is in place.
    pub optimized: bool,
    /// The trampoline saves only what handler code ptap knows can change
    /// (see [`vector_save`]): any other handler on this site needs the trap
    /// path.
    pub known_only: bool,
}

/// Why a handler of unknown code added to a site whose trampoline saves
/// only what known handler code can change stays on the trap path.
pub const UNKNOWN_HANDLER: &str =
    "a handler ptap does not know (a C module that calls libc or uses AVX) needs the trap path here: this site's trampoline saves only what known handlers change";

/// May a probe whose handlers are (`known`) or are not known code
/// join the jump-optimized site at `addr`?
pub fn handlers_fit(addr: u64, known: bool) -> bool {
    known || with_state(|s| s.sites.get(&addr).is_none_or(|o| !o.known_only))
}

pub struct OptState {
    pub sites: HashMap<u64, Opt>,
    /// Why an address stays on the trap path (ptap -v).
    pub refused: HashMap<u64, String>,
    /// Sites armed with int3 and waiting for `optimize_pending`.
    pub pending: Vec<u64>,
    /// Inside register_kprobes: optimize once at the end.
    pub batch: bool,
}

pub static STATE: Mutex<Option<OptState>> = Mutex::new(None);

pub fn with_state<R>(f: impl FnOnce(&mut OptState) -> R) -> R {
    let mut g = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let s = g.get_or_insert_with(|| OptState {
        sites: HashMap::default(),
        refused: HashMap::default(),
        pending: Vec::new(),
        batch: false,
    });
    f(s)
}

/// Is the jump at `addr` in place?
pub fn is_optimized(addr: u64) -> bool {
    with_state(|s| s.sites.get(&addr).is_some_and(|o| o.optimized))
}

/// The region's original bytes of every optimized site whose jump overlaps
/// [a, a+len), including one that starts up to 4 bytes before `a` (for
/// decoding code that contains our jumps).
pub fn originals_in(a: u64, len: u64) -> Vec<(u64, Vec<u8>)> {
    let from = a.saturating_sub(aopt::JMP_LEN as u64 - 1);
    with_state(|s| {
        if (len as usize) < s.sites.len() {
            (from..a + len)
                .filter_map(|k| Some((k, s.sites.get(&k).filter(|o| o.optimized)?.orig.clone())))
                .collect()
        } else {
            s.sites
                .iter()
                .filter(|(&k, o)| o.optimized && k >= from && k < a + len)
                .map(|(&k, o)| (k, o.orig.clone()))
                .collect()
        }
    })
}

const TRAMP_CAP: usize = 1024;

/// Per vector-save mode: a trampoline's bytes before its relocated region
/// and where the probe address appears in them (as regs->ip and as the
/// handler's data). Everything else in that part is the same for every
/// site: copying it is much cheaper than encoding ~100 instructions. State:
/// None = not built yet; checked against a full build at its second use.
struct Template {
    bytes: Vec<u8>,
    at: Vec<usize>,
    checked: bool,
}

/// Per (vector-save mode, at a function's entry): 2 × 8.
static TEMPLATES: Mutex<[Option<Template>; 16]> = Mutex::new([const { None }; 16]);

static FORK_TEMPLATES: crate::base::forklock::MutexSlot<[Option<Template>; 16]> =
    crate::base::forklock::MutexSlot::new(&TEMPLATES);

/// The trampoline-template cache lock, for the fork handlers (after STATE).
pub fn templates_fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_TEMPLATES
}

static NO_TEMPLATES: AtomicBool = AtomicBool::new(false);

/// A vector-save mode's index in [`TEMPLATES`] (0..8).
fn mode_index(vs: VectorSave) -> usize {
    match vs {
        VectorSave::None => 0,
        VectorSave::Xmm => 1,
        VectorSave::Ymm => 2,
        VectorSave::Xsave { .. } => 3,
        VectorSave::Wide { mxcsr: false, .. } => 4,
        VectorSave::Wide { .. } => 5,
        VectorSave::Sse { mxcsr: false } => 6,
        VectorSave::Sse { .. } => 7,
    }
}

/// The trampoline for `addr`, allocated near it: (its address, bytes,
/// offset of the relocated region, that region's relocation).
#[allow(clippy::too_many_arguments)]
fn build_trampoline(
    m: &mut dyn CodeMem,
    addr: u64,
    orig: &[u8],
    region: &Region,
    h: Handler,
    vs: VectorSave,
    at_entry: bool,
    tail_len: usize,
) -> Result<(u64, Vec<u8>, u64, ptap_arch::xol::Relocated), String> {
    let mode = mode_index(vs) + 8 * at_entry as usize;
    let full = |at: u64| {
        trampoline::optprobe_trampoline(at, orig, region, h, vs, at_entry)
            .map_err(|e| format!("cannot build the trampoline: {e}"))
    };
    let mut g = match TEMPLATES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let use_template = !NO_TEMPLATES.load(Ordering::Relaxed);
    if g[mode].is_none() || !use_template {
        // Build one for real, near the site, and derive the template from it.
        let probe = full(addr.wrapping_add(0x10000))?;
        let prefix = probe.len().saturating_sub(tail_len);
        let key = addr.to_le_bytes();
        let at: Vec<usize> = (0..prefix.saturating_sub(7))
            .filter(|&i| probe[i..i + 8] == key)
            .collect();
        if at.len() == 2 && use_template {
            g[mode] = Some(Template {
                bytes: probe[..prefix].to_vec(),
                at,
                checked: false,
            });
        } else {
            NO_TEMPLATES.store(true, Ordering::Relaxed);
        }
    }
    let prefix = match &g[mode] {
        Some(t) if !NO_TEMPLATES.load(Ordering::Relaxed) => t.bytes.len(),
        _ => full(addr.wrapping_add(0x10000))?
            .len()
            .saturating_sub(tail_len),
    };
    let size = prefix + tail_len + 16;
    if size > TRAMP_CAP {
        return Err("the trampoline is too large".into());
    }
    let tramp = m
        .alloc(addr, size)
        .ok_or("no room for a trampoline near the address")?;
    let tail = aopt::relocate_region(orig, region, tramp + prefix as u64, 8 * 16)
        .map_err(|e| format!("the replaced instructions do not relocate: {e}"))?;
    let bytes = match &mut g[mode] {
        Some(t) if !NO_TEMPLATES.load(Ordering::Relaxed) => {
            let mut b = t.bytes.clone();
            for &i in &t.at {
                b[i..i + 8].copy_from_slice(&addr.to_le_bytes());
            }
            b.extend_from_slice(&tail.bytes);
            if !t.checked {
                // Once per mode: the copy must equal a full build.
                if full(tramp)? != b {
                    NO_TEMPLATES.store(true, Ordering::Relaxed);
                    return Err("trampoline template mismatch (templates now off)".into());
                }
                t.checked = true;
            }
            b
        }
        _ => full(tramp)?,
    };
    if bytes.len() > size || bytes.get(prefix..) != Some(&tail.bytes[..]) {
        return Err("cannot locate the relocated instructions in the trampoline".into());
    }
    Ok((tramp, bytes, prefix as u64, tail))
}

const REGION_SLOT_CAP: usize = 128;

/// Build (or reuse) the trampoline and region slot for a probe at `addr` in
/// the function [func, func+size) whose bytes (with our probes removed) are
/// `code`. `known_handlers`: every handler of the site is code ptap knows
/// (`crate::kprobes::known`, see [`vector_save`]). Err = the reason it stays on the trap path.
/// Registration time.
pub fn prepare(
    addr: u64,
    func: u64,
    code: &[u8],
    known_handlers: bool,
    m: &mut dyn CodeMem,
) -> Result<u64, String> {
    if let Some((rs, known_only)) = with_state(|s| {
        s.sites.get(&addr).and_then(|o| {
            let off = (addr - func) as usize;
            let cur = code.get(off..off + o.orig.len())?;
            (cur == o.orig.as_slice()).then_some((o.region_slot, o.known_only))
        })
    }) {
        if known_only && !known_handlers {
            return Err(UNKNOWN_HANDLER.into());
        }
        let len = with_state(|s| s.sites.get(&addr).map_or(0, |o| o.region.len));
        if let Some(why) = probe_inside(addr, len, m) {
            return Err(why);
        }
        return Ok(rs);
    }
    let info = decode::decode_function(code, func)
        .map_err(|e| format!("the function does not decode: {e}"))?;
    let region = aopt::check_region(&info, addr, aopt::JMP_LEN).map_err(|r| r.to_string())?;
    if let Some(why) = probe_inside(addr, region.len, m) {
        return Err(why);
    }
    let off = (addr - func) as usize;
    let orig = code[off..off + region.len].to_vec();
    let slot = m
        .alloc(addr, REGION_SLOT_CAP)
        .ok_or("no room for code near the address")?;
    let rel = aopt::relocate_region(&orig, &region, slot, REGION_SLOT_CAP)
        .map_err(|e| format!("the replaced instructions do not relocate: {e}"))?;
    let steps = |base_off: u64, rel: &ptap_arch::xol::Relocated| -> Vec<(u64, u64, i64)> {
        rel.steps
            .iter()
            .zip(region.insns.iter())
            .map(|(s, i)| (base_off + s.offset as u64, i.addr, s.sp_delta as i64))
            .collect()
    };
    if !m.poke(slot, &rel.bytes) {
        return Err("cannot write the region slot".into());
    }
    // The trampoline hands opt_hit the site table's slot for `addr` (the
    // probed address itself is in the frame it saves, as `ip`).
    let cell = crate::hit::site::cell(addr).ok_or("the site table is full")?;
    let h = Handler {
        func: opt_hit as *const () as u64,
        data: cell as *const _ as u64,
    };
    let vs = vector_save(addr == func, known_handlers);
    // Jprobes (C entries: never on a known-handlers site) read the layout.
    if addr == func && !needs_known(vs) {
        ENTRY_VMODE.store(vmode_code(vs), Ordering::Relaxed);
    }
    // Its size: the register save/call/restore part (the same for every
    // trampoline of a vector-save mode; measured once) plus the relocated
    // region (as long as in the region slot: same capacity, rel32 forms).

    let (tramp, bytes, cut, tail) = build_trampoline(
        m,
        addr,
        &orig,
        &region,
        h,
        vs,
        addr == func,
        rel.bytes.len(),
    )?;
    if !m.poke(tramp, &bytes) {
        return Err("cannot write the trampoline".into());
    }
    add_range(slot, REGION_SLOT_CAP as u64, 0, &steps(0, &rel), addr);
    add_range(tramp, bytes.len() as u64, cut, &steps(cut, &tail), addr);
    with_state(|s| {
        s.sites.insert(
            addr,
            Opt {
                region,
                orig,
                tramp,
                region_slot: slot,
                optimized: false,
                known_only: (addr != func && matches!(vs, VectorSave::Wide { .. }))
                    || needs_known(vs),
            },
        )
    });
    Ok(slot)
}

/// Why the region of `len` bytes at `addr` may not get its jump: another
/// probe's int3 inside it (Linux: no other kprobe in an optimized region).
/// Asked again when a prepared region is reused (a site registered anew),
/// since probes may have come inside it meanwhile.
fn probe_inside(addr: u64, len: usize, m: &dyn CodeMem) -> Option<String> {
    let k = (addr + 1..addr + len as u64).find(|&k| m.has_probe_site(k))?;
    Some(format!(
        "a probe at {k:#x} is inside the bytes the jump would replace"
    ))
}

/// Queue an armed site for optimization.
pub fn queue(addr: u64) {
    with_state(|s| s.pending.push(addr));
}

/// Start/end a batch (register_kprobes): the barrier runs once for all.
pub fn set_batch(on: bool) {
    with_state(|s| s.batch = on);
}

pub fn in_batch() -> bool {
    with_state(|s| s.batch)
}

/// Optimize every queued site (registry lock held by the caller; `poke`
/// writes code). A site still published with its region slot and armed
/// with an int3 gets its jump; a blocked one stays on the trap path.
pub fn optimize_pending(m: &mut dyn CodeMem) {
    // From inside a handler this thread is itself on a hit path (and the
    // grace period cannot include it): leave the sites queued.
    if threads::current_is_active() {
        return;
    }
    let pending: Vec<u64> = with_state(|s| core::mem::take(&mut s.pending));
    if pending.is_empty() {
        return;
    }
    // Sites still wanting it: (addr, region end, old single slot).
    let mut todo: Vec<(u64, u64, u64)> = Vec::new();
    let mut seen = rustc_hash::FxHashSet::default();
    for a in pending {
        if !seen.insert(a) {
            continue;
        }
        let Some(old_slot) = m.armed(a) else { continue };
        let Some(len) = with_state(|s| {
            s.sites
                .get(&a)
                .filter(|o| !o.optimized)
                .map(|o| o.region.len as u64)
        }) else {
            continue;
        };
        todo.push((a, a + len, old_slot));
    }
    if todo.is_empty() {
        return;
    }
    // Trap hits that started before the region-slot snapshot was published
    // may still resume inside the region: wait for them.
    sys::membarrier_sync_core();
    if !threads::synchronize() {
        for (a, _, _) in &todo {
            with_state(|s| {
                s.refused
                    .insert(*a, "a thread stayed inside a probe handler".into())
            });
        }
        return;
    }
    let mut ok = vec![false; todo.len()];
    for attempt in 0..40 {
        let mut ranges = Vec::new();
        let mut which = Vec::new();
        for (k, &(a, end, slot)) in todo.iter().enumerate() {
            if ok[k] {
                continue;
            }
            ranges.push((a + 1, end));
            which.push(k);
            if slot != 0 {
                ranges.push((slot, slot + ptap_arch::xol::SLOT_SIZE as u64));
                which.push(k);
            }
        }
        if ranges.is_empty() {
            break;
        }
        let hit = barrier(&ranges);
        let mut blocked = vec![false; todo.len()];
        for (r, &k) in which.iter().enumerate() {
            blocked[k] |= hit[r];
        }
        for &k in &which {
            if !blocked[k] {
                ok[k] = true;
            }
        }
        if ok.iter().all(|&b| b) {
            break;
        }
        sys::sleep_us(if attempt < 10 { 200 } else { 2000 });
    }
    let mut tails = Vec::new();
    for (k, &(a, _, _)) in todo.iter().enumerate() {
        if !ok[k] {
            with_state(|s| {
                s.refused.insert(
                    a,
                    "a thread stayed stopped inside the replaced instructions".into(),
                )
            });
            continue;
        }
        let Some(tramp) = with_state(|s| s.sites.get(&a).map(|o| o.tramp)) else {
            continue;
        };
        let Ok(j) = trampoline::jmp_rel32(a, tramp) else {
            continue;
        };
        tails.push((a, j));
    }
    if tails.is_empty() {
        return;
    }
    let w: Vec<(u64, Vec<u8>)> = tails
        .iter()
        .map(|(a, j)| (a + 1, j[1..].to_vec()))
        .collect();
    let h: Vec<(u64, Vec<u8>)> = tails.iter().map(|(a, j)| (*a, vec![j[0]])).collect();
    // The tails (behind the int3s), then the heads.
    m.poke_steps(&[&w, &h]);
    with_state(|s| {
        for (a, _) in &tails {
            if let Some(o) = s.sites.get_mut(a) {
                o.optimized = true;
            }
            s.refused.remove(a);
        }
    });
}

/// Put the int3 back over an optimized site's jump and restore the tail
/// bytes. Afterwards the site is a plain trap probe again (its snapshot may
/// still route through the region slot, which stays valid).
pub fn unoptimize(addr: u64, m: &mut dyn CodeMem) {
    let Some(orig) = with_state(|s| {
        s.pending.retain(|&a| a != addr);
        s.sites
            .get(&addr)
            .filter(|o| o.optimized)
            .map(|o| o.orig.clone())
    }) else {
        return;
    };
    m.poke(addr, &[0xcc]);
    sys::membarrier_sync_core();
    m.poke(addr + 1, &orig[1..aopt::JMP_LEN]);
    sys::membarrier_sync_core();
    with_state(|s| {
        if let Some(o) = s.sites.get_mut(&addr) {
            o.optimized = false;
        }
    });
}

/// The registered sites whose prepared jump region covers `addr` (starting
/// before it), optimized or not yet. (Prepared regions of sites since
/// unregistered stay in the state, to be reused: `live` tells.)
pub fn covering(addr: u64, live: impl Fn(u64) -> bool) -> Vec<u64> {
    // A region is whole instructions covering the jump's 5 bytes: it starts
    // at most 4 + 15 bytes before any address it holds. Looking up those
    // few addresses keeps registration O(1) per probe (iterating every
    // prepared site made arming 10,000 probes 72 -> 163 ms).
    const MAX_REGION: u64 = aopt::JMP_LEN as u64 - 1 + 15;
    with_state(|s| {
        (addr.saturating_sub(MAX_REGION)..addr)
            .filter(|k| {
                s.sites
                    .get(k)
                    .is_some_and(|o| addr < k + o.region.len as u64 && live(*k))
            })
            .collect()
    })
}

/// Forget a pending optimization (the site went away before the batch ran).
pub fn forget(addr: u64) {
    with_state(|s| s.pending.retain(|&a| a != addr));
}

/// `ptap -v` text for a site.
pub fn describe(addr: u64) -> String {
    with_state(|s| match s.sites.get(&addr) {
        Some(o) if o.optimized => format!(
            "jump-optimized: {} bytes replaced, trampoline {:#x}",
            o.region.len, o.tramp
        ),
        _ => match s.refused.get(&addr) {
            Some(r) => format!("trap path: not optimized: {r}"),
            None if !enabled() => "trap path (PTAP_NO_OPTIMIZE)".into(),
            None => "trap path".into(),
        },
    })
}

/// Record why `addr` stays on the trap path.
pub fn refuse(addr: u64, why: String) {
    with_state(|s| s.refused.insert(addr, why));
}
