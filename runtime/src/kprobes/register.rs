//! The register/unregister side of kprobes, jprobes and kretprobes.
//!
//! Readers (the SIGTRAP handler) find a site with a lock-free lookup in an
//! open-addressed table of atomics keyed by address; a site is an immutable
//! snapshot (address, displaced instruction, slot, probes in registration
//! order). Registration builds a new snapshot, publishes it with one atomic
//! store, waits for a grace period (`threads::synchronize`) and frees the old
//! one. Registration itself is serialised by a mutex that the hit path never
//! takes. XOL slots are never freed or reused (a thread may still be running
//! an old slot after its probe is gone; the old slot stays correct).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use ptap_arch::xol::{self, Kind};
use ptap_arch::ArchError;

use crate::abi::*;
use crate::base::sys;
use crate::hit::site::insert;
use crate::hit::site::kind_at;
use crate::hit::site::public;
use crate::hit::site::remember_slot;
use crate::hit::site::remove;
use crate::hit::site::Entry;
use crate::hit::site::EntryKind;
use crate::hit::site::FreeHead;
use crate::hit::site::InsertError;
use crate::hit::site::NewSite;
use crate::hit::site::RetRec;
use crate::hit::site::Site;
use crate::hit::site::SiteKind;
use crate::hit::site::INST_HDR;
use crate::hit::site::PRIVATE_INSTANCES;
use crate::hit::threads;
use crate::hit::threads::OwnWork;
use crate::kprobes::address::{resolve, CFI_BOUNDS};
use crate::kprobes::codemem::alloc_slot;
use crate::kprobes::codemem::build_post_slot;
use crate::kprobes::codemem::clean_code;
use crate::kprobes::codemem::in_arena;
use crate::kprobes::codemem::poke;
use crate::kprobes::codemem::poke_many;
use crate::kprobes::codemem::with_reg;
use crate::kprobes::known;
use crate::proc::symbols;

pub const EINVAL: i32 = 22;

pub const ENOENT: i32 = 2;

pub const EEXIST: i32 = 17;

pub const EILSEQ: i32 = 84;

pub const ENOMEM: i32 = 12;

pub const EBUSY: i32 = 16;

pub const EIO: i32 = 5;

fn arch_errno(e: ArchError) -> i32 {
    match e {
        ArchError::NotBoundary | ArchError::Undecodable | ArchError::Truncated => EILSEQ,
        _ => EINVAL,
    }
}

/// Why the last registration failed (for `ptap -v`-style messages).
pub static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

pub(crate) fn set_last_error(s: String) {
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

/// Why registration from inside a probe handler is refused (it allocates
/// through libc: see `threads::in_probe_handler`).
const IN_HANDLER: &str =
    "called from a probe handler: register probes from init_module() or another thread";

/// # Safety
/// `kp` must be NULL or point to a `struct kprobe` valid until unregistered.
pub unsafe fn register_entry(kp: *mut Kprobe, kind: EntryKind) -> i32 {
    if kp.is_null() {
        return -EINVAL;
    }
    let from_handler = threads::in_probe_handler();
    let _own = OwnWork::start();
    // SAFETY: kp is the caller's non-NULL struct.
    unsafe {
        for f in [
            (*kp).pre_handler.map(|f| f as usize),
            (*kp).post_handler.map(|f| f as usize),
            (*kp).fault_handler.map(|f| f as usize),
        ] {
            known::check_handler(f.unwrap_or(0));
        }
    }
    match kind {
        EntryKind::J(_) => known::note_unknown(),
        // SAFETY: rec and its kretprobe are live (register_ret made them).
        EntryKind::R(rec) => unsafe {
            known::check_handler((*(*rec).rp).entry_handler.map_or(0, |f| f as usize));
        },
        EntryKind::K => {}
    }
    set_last_error(String::new());
    let r = if from_handler {
        set_last_error(IN_HANDLER.into());
        -EBUSY
    } else {
        register_entry_inner(kp, kind)
    };
    if !crate::kprobes::optimize::in_batch() {
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
        crate::session::output::diag(
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
        let opt = crate::kprobes::optimize::describe(addr);
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
        crate::session::output::diag(m.as_bytes());
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
    if let Some(why) = crate::kprobes::blocked::why(addr) {
        set_last_error(why);
        return -EINVAL;
    }
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
    // Sites whose jump covered `addr`, taken back to the trap path.
    let mut demoted: Vec<*mut Site> = Vec::new();
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
                && crate::kprobes::optimize::handlers_fit(addr, handlers_known(&probes));
            if !keep_opt {
                crate::kprobes::optimize::unoptimize(addr, reg);
                crate::kprobes::optimize::forget(addr);
            }
            // The post slot is built when the first post_handler arrives.
            let post_slot = if o.post_slot == 0 && o.slot != 0 && !optimizable(&probes) {
                // orig holds the bytes the site's slot was built from.
                build_post_slot(reg, &o.orig, addr)
            } else {
                o.post_slot
            };
            let region_slot = if keep_opt { o.region_slot } else { 0 };
            publish_successor(reg, o, probes, post_slot, region_slot);
            // SAFETY: kp is the user's struct.
            let enabled = unsafe { kprobe_flags(kp) } & KPROBE_FLAG_DISABLED == 0;
            if enabled && reg.disarmed.contains(&addr) && poke(reg, addr, &[0xcc]).is_ok() {
                reg.disarmed.remove(&addr);
                sys::membarrier_sync_core();
                if keep_opt {
                    crate::kprobes::optimize::queue(addr);
                }
            }
            reg.by_kp.insert(kp as usize, addr);
            // SAFETY: kp is the user's struct.
            unsafe { (*kp).addr = addr as *mut u8 };
            return Ok(Some(old));
        }
        // Fresh site. One int3, one owner: the syscall side's site here (a
        // libc `syscall` site moved out of libc while a syscall probe
        // watches its number) is checked before anything is built. (The
        // syscall side publishes under this same lock.)
        if kind_at(addr) == Some(SiteKind::Syscall) {
            set_last_error(taken_by_syscall(addr));
            return Err(EBUSY);
        }
        let mut region_slot = 0;
        let cfi_only = size & CFI_BOUNDS != 0;
        let size = size & !CFI_BOUNDS;
        if func != 0 && size > 0 {
            let code = clean_code(reg, func, size as usize);
            if let Err(e) = ptap_arch::decode::check_boundary(&code, func, addr) {
                set_last_error(format!("{addr:#x}: {e}"));
                return Err(arch_errno(e));
            }
            if !crate::kprobes::optimize::enabled() {
            } else if cfi_only {
                crate::kprobes::optimize::refuse(
                    addr,
                    "function bounds known from its CFI only (no sized symbol): another entry point may jump into the replaced bytes".into(),
                );
            } else if !optimizable(&[entry]) {
                crate::kprobes::optimize::refuse(
                    addr,
                    "a post_handler forces the trap path".into(),
                );
            } else if threads::current_is_active() {
                crate::kprobes::optimize::refuse(
                    addr,
                    "registered from inside a probe handler".into(),
                );
            } else {
                let known = handlers_known(core::slice::from_ref(&entry));
                match crate::kprobes::optimize::prepare(addr, func, &code, known, reg) {
                    Ok(rs) => region_slot = rs,
                    Err(why) => crate::kprobes::optimize::refuse(addr, why),
                }
            }
        } else if crate::kprobes::optimize::enabled() {
            crate::kprobes::optimize::refuse(addr, "no function size known for the address".into());
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
            // Only a post_handler needs the post slot: building one for every
            // probe was 7% of arming 10,000 of them.
            let post = if optimizable(core::slice::from_ref(&entry)) {
                0
            } else {
                build_post_slot(reg, &bytes, addr)
            };
            (slot, post)
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
        // Sites earlier in the function whose jump (or the jump they are
        // queued for) replaces the bytes at addr: a jump would break the
        // int3 written here, and a region slot would run a copy of this
        // instruction instead of trapping. Back to the trap path with them,
        // now that this probe is sure to go in (as Linux unoptimizes an
        // optimized kprobe that covers a new one). The code read above is
        // the original (`clean_code` puts their jumps' bytes back).
        let live = |k: u64| reg.sites.contains_key(&k);
        for k in crate::kprobes::optimize::covering(addr, live) {
            demoted.extend(demote(reg, k, addr));
        }
        if let Err(e) = insert(addr, NewSite::Probe(site)) {
            // SAFETY: never published.
            drop(unsafe { Box::from_raw(site) });
            return Err(match e {
                InsertError::Taken(_) => {
                    set_last_error(taken_by_syscall(addr));
                    EBUSY
                }
                InsertError::Full => ENOMEM,
            });
        }
        reg.sites.insert(addr, site);
        if crate::kprobes::optimize::in_batch() {
            reg.deferred_int3.push(addr);
        } else if let Err(e) = poke(reg, addr, &[0xcc]) {
            remove(addr, SiteKind::Probe);
            reg.sites.remove(&addr);
            return Err(e);
        }
        // A batch (register_kprobes) serializes every core once at its end.
        if !crate::kprobes::optimize::in_batch() {
            sys::membarrier_sync_core();
        }
        if region_slot != 0 {
            crate::kprobes::optimize::queue(addr);
        }
        reg.by_kp.insert(kp as usize, addr);
        // SAFETY: kp is the user's struct.
        unsafe { (*kp).addr = addr as *mut u8 };
        Ok(None)
    });
    for d in demoted {
        retire(d);
    }
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

/// Take the jump-optimized (or queued) site at `k` back to the trap path,
/// for good, because a new probe at `inner` lies inside the bytes its jump
/// replaces: the jump out, and a snapshot without the region slot (a trap
/// hit at `k` then runs its one instruction and reaches `inner`). Returns
/// the replaced snapshot, to be retired once the registry lock is dropped.
fn demote(reg: &mut crate::kprobes::codemem::Registry, k: u64, inner: u64) -> Option<*mut Site> {
    crate::kprobes::optimize::unoptimize(k, reg);
    crate::kprobes::optimize::forget(k);
    crate::kprobes::optimize::refuse(
        k,
        format!("a probe at {inner:#x} is inside the bytes its jump would replace"),
    );
    let old = *reg.sites.get(&k)?;
    // SAFETY: registry sites are live.
    let o = unsafe { &*old };
    if o.region_slot == 0 {
        return None;
    }
    if VERBOSE.load(Ordering::Relaxed) {
        crate::session::output::diag(
            format!(
                "ptap: the site at {k:#x} goes back to the trap path: a probe at {inner:#x} is inside the bytes its jump replaced\n"
            )
            .as_bytes(),
        );
    }
    publish_successor(reg, o, o.probes.clone(), o.post_slot, 0);
    Some(old)
}

/// Publish the next snapshot of site `o` (in the registry and the site
/// table) with these probes and slots; its address, original bytes,
/// prepared instruction and single-instruction slot stay. The caller
/// retires `o` once the registry lock is dropped.
fn publish_successor(
    reg: &mut crate::kprobes::codemem::Registry,
    o: &Site,
    probes: Vec<Entry>,
    post_slot: u64,
    region_slot: u64,
) -> *mut Site {
    let ns = Box::into_raw(Box::new(Site {
        addr: o.addr,
        orig: o.orig,
        prep: o.prep,
        slot: o.slot,
        post_slot,
        has_ret: probes.iter().any(|e| matches!(e.kind, EntryKind::R(_))),
        probes,
        region_slot,
    }));
    reg.sites.insert(o.addr, ns);
    // Cannot be refused: the table holds this address's probe site.
    let _ = insert(o.addr, NewSite::Probe(ns));
    ns
}

/// Why a kprobe at a moved libc syscall site is refused.
fn taken_by_syscall(addr: u64) -> String {
    format!(
        "{addr:#x} is a libc system call site that a system call probe has moved out of \
         libc (the int3 or jump there is the syscall probe's); probe another instruction"
    )
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
    // membarrier orders its store for the scan below (see crate::hit::jump::enter).
    sys::membarrier_sync_core();
    if !threads::synchronize() {
        crate::session::output::diag(
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

pub fn unregister_entry(kp: *mut Kprobe) -> bool {
    if kp.is_null() {
        return false;
    }
    let _own = OwnWork::start();
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
            crate::kprobes::optimize::forget(addr);
            reg.deferred_int3.retain(|&a| a != addr);
            if !reg.disarmed.remove(&addr) {
                crate::kprobes::optimize::unoptimize(addr, reg);
                let _ = poke(reg, addr, &b);
                sys::membarrier_sync_core();
            }
            remove(addr, SiteKind::Probe);
        } else {
            let region_slot = if optimizable(&probes) {
                o.region_slot
            } else {
                0
            };
            let ns = publish_successor(reg, o, probes, o.post_slot, region_slot);
            // The probes left may all be disabled: disarm.
            // SAFETY: ns was just published; its probes are registered.
            let all_off = unsafe { &*ns }
                .probes
                .iter()
                // SAFETY: registered probes.
                .all(|e| unsafe { kprobe_flags(e.kp) } & KPROBE_FLAG_DISABLED != 0);
            if all_off && !reg.disarmed.contains(&addr) {
                crate::kprobes::optimize::unoptimize(addr, reg);
                crate::kprobes::optimize::forget(addr);
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

/// Disable or enable a probe. A site whose probes are all disabled is
/// disarmed (its original byte put back: no trap at all), and re-armed when
/// one of them is enabled again.
///
/// # Safety
/// `p` must be NULL or point to a `struct kprobe` (registered or not).
pub unsafe fn set_disabled(p: *mut Kprobe, disabled: bool) -> i32 {
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
            crate::kprobes::optimize::unoptimize(addr, reg);
            crate::kprobes::optimize::forget(addr);
            if poke(reg, addr, &[orig]).is_ok() {
                reg.disarmed.insert(addr);
                sys::membarrier_sync_core();
            }
        } else if !all_off && !armed && poke(reg, addr, &[0xcc]).is_ok() {
            reg.disarmed.remove(&addr);
            sys::membarrier_sync_core();
            // SAFETY: registry sites are live.
            if unsafe { (*site).region_slot } != 0 {
                crate::kprobes::optimize::queue(addr);
                crate::kprobes::optimize::optimize_pending(reg);
            }
        }
        0
    })
}

/// Can a site with these probes be jump-optimized? (No post_handler: it
/// needs the trap after the displaced instruction.)
/// Are all the handlers these probes run at the site code whose use of
/// vector state ptap knows (`crate::kprobes::known`; see
/// `crate::kprobes::optimize::vector_save`)? A kretprobe runs its
/// entry_handler there (its return handler runs in the return stub); a
/// jprobe's entry is C code that reads the saved argument registers.
fn handlers_known(probes: &[Entry]) -> bool {
    let known = |f: Option<usize>| f.is_none_or(known::is_known);
    probes.iter().all(|e| match e.kind {
        // SAFETY: registered (or being registered) probes.
        EntryKind::K => unsafe {
            known((*e.kp).fault_handler.map(|f| f as usize))
                && known((*e.kp).pre_handler.map(|f| f as usize))
        },
        // SAFETY: as above; rec and its kretprobe are live.
        EntryKind::R(rec) => unsafe { known((*(*rec).rp).entry_handler.map(|f| f as usize)) },
        EntryKind::J(_) => false,
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
pub fn flush_optimizer() {
    with_reg(|reg| {
        if !reg.deferred_int3.is_empty() {
            let w: Vec<(u64, Vec<u8>)> = core::mem::take(&mut reg.deferred_int3)
                .into_iter()
                .map(|a| (a, vec![0xcc]))
                .collect();
            poke_many(reg, &w);
            sys::membarrier_sync_core();
        }
        crate::kprobes::optimize::optimize_pending(reg)
    });
}

pub fn default_maxactive() -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (2 * n).max(10)
}

/// Unregister every probe still registered (Ctrl-C detach, exit).
pub fn unregister_all() {
    let kps: Vec<usize> = with_reg(|r| r.by_kp.keys().copied().collect());
    let rets: Vec<usize> = with_reg(|r| r.rets.keys().copied().collect());
    for rp in rets {
        // SAFETY: registered kretprobe.
        unsafe { unregister_ret(rp as *mut Kretprobe) };
    }
    for kp in kps {
        unregister_entry(kp as *mut Kprobe);
    }
}

/// Number of registered probes (tests, ptap -v).
pub fn registered_count() -> usize {
    with_reg(|r| r.by_kp.len())
}

/// # Safety
/// `rp` must point to a `struct kretprobe` valid until unregistered.
/// # Safety
/// `rp` must point to a live `struct kretprobe`.
pub unsafe fn register_ret(rp: *mut Kretprobe) -> i32 {
    if rp.is_null() {
        return -EINVAL;
    }
    if threads::in_probe_handler() {
        // Before anything allocates (register_entry would refuse too).
        set_last_error(IN_HANDLER.into());
        return -EBUSY;
    }
    let _own = OwnWork::start();
    // A live struct: refuse before touching it (its nmissed) or allocating.
    // (register_entry checks again under the registry lock.)
    // SAFETY: caller contract; kp is the first field.
    let kp0 = unsafe { core::ptr::addr_of_mut!((*rp).kp) };
    if with_reg(|r| r.by_kp.contains_key(&(kp0 as usize))) {
        set_last_error("this struct is already registered".into());
        // SAFETY: caller contract (a registered struct).
        if unsafe { kprobe_flags(kp0) } & KPROBE_FLAG_QUIET == 0 {
            crate::session::output::diag(
                format!(
                    "ptap: register_kretprobe({}): this struct is already registered (-17)\n",
                    describe(kp0)
                )
                .as_bytes(),
            );
        }
        return -EEXIST;
    }
    crate::kprobes::optimize::ensure_ret_stub();
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
    // An explicit maxactive is exact; with the default (a guess anyway) a
    // few threads also get a private instance each (see RetRec::take).
    let n_private = if maxactive <= 0 { PRIVATE_INSTANCES } else { 0 };
    let all = n + n_private;
    let Some(bytes) = all.checked_mul(stride).filter(|&b| b <= 256 << 20) else {
        return -ENOMEM;
    };
    let mem = Box::leak(vec![0u8; bytes + 16].into_boxed_slice());
    let base = (mem.as_mut_ptr() as usize + 15) & !15;
    // SAFETY: caller contract (a live struct).
    let known_ret = unsafe { (*rp).handler }.is_some_and(|f| known::check_handler(f as usize));
    let rec = Box::leak(Box::new(RetRec {
        rp,
        known_ret,
        alive: AtomicBool::new(true),
        mem: base as *mut u8,
        n,
        n_private,
        stride,
        free: FreeHead(AtomicU64::new(0)),
        private_free: FreeHead(AtomicU64::new(0)),
    }));
    for i in 0..all {
        let h = rec.inst(i);
        // The shared pool is 0..n, the private instances n..all; each list
        // in index order (its first index on top).
        let last = if i < n { n } else { all };
        // SAFETY: h is inside the zeroed block; nothing uses rec yet.
        unsafe {
            (*h).rec = rec;
            (*h).idx = i as u32 + 1;
            (*h).private = (i >= n) as u32;
            (*public(h)).rp = rp;
            (*h).free_next.store(
                if i + 1 < last { i as u32 + 2 } else { 0 },
                Ordering::Relaxed,
            );
        }
    }
    rec.free.store(if n > 0 { 1 } else { 0 }, Ordering::Release);
    rec.private_free
        .store(if all > n { n as u64 + 1 } else { 0 }, Ordering::Release);
    // SAFETY: caller contract.
    unsafe { (*rp).nmissed = 0 };
    // SAFETY: kp is the first field.
    let kp = unsafe { core::ptr::addr_of_mut!((*rp).kp) };
    // SAFETY: rp (caller contract) holds kp until it is unregistered.
    let r = unsafe { register_entry(kp, EntryKind::R(rec)) };
    if r == 0 {
        with_reg(|reg| reg.rets.insert(rp as usize, rec));
    } else {
        rec.alive.store(false, Ordering::Release);
    }
    r
}

/// # Safety
/// `rp` must be NULL or a registered kretprobe.
/// # Safety
/// `rp` must point to a live `struct kretprobe`.
pub unsafe fn unregister_ret(rp: *mut Kretprobe) {
    if rp.is_null() {
        return;
    }
    let _own = OwnWork::start();
    if let Some(rec) = with_reg(|reg| reg.rets.remove(&(rp as usize))) {
        // SAFETY: records are never freed.
        unsafe { (*rec).alive.store(false, Ordering::Release) };
    }
    // SAFETY: kp is the first field; unregister_entry waits for a grace
    // period, after which no handler of rp runs (alive is false).
    unregister_entry(unsafe { core::ptr::addr_of_mut!((*rp).kp) });
}

/// Number of probed addresses (tests, bench).
pub fn site_count() -> usize {
    with_reg(|r| r.sites.len())
}

/// `register_kprobe` (the C API's, for callers inside the runtime).
///
/// # Safety
/// `p` must point to a `struct kprobe` valid until unregistered.
pub unsafe fn register_kp(p: *mut Kprobe) -> i32 {
    // SAFETY: caller contract.
    unsafe { register_entry(p, EntryKind::K) }
}

/// `unregister_kprobe` (the C API's, for callers inside the runtime).
///
/// # Safety
/// `p` must be NULL or a registered kprobe.
pub unsafe fn unregister_kp(p: *mut Kprobe) {
    unregister_entry(p);
}
