//! libc as the dispatch's exempt range, and libc's syscall sites moved out of
//! it when their calls must be seen ("only probed calls pay").
//!
//! With the exempt range on the runtime's own text (the first design), every
//! system call of an armed thread trapped, probed or not. Here the exempt range
//! is **libc's executable segment**: libc's own `syscall` instructions are not
//! intercepted at all, and only these are:
//!
//! * calls from anywhere else (the executable's inline `syscall`, other
//!   libraries, JIT code): they trap exactly as before;
//! * libc sites that may issue a number that must be seen — a probed number,
//!   or one the SIGSYS handler must always handle ([`SPECIAL`]: clone, clone3,
//!   fork, vfork to arm children, exit to free the thread's slot, the calls
//!   whose signal masks must not block SIGSYS). Such a site is *moved out of
//!   libc*: its `syscall` then runs in our memory, outside the exempt range,
//!   and traps as any other (the SIGSYS handler is unchanged):
//!   - **patchable sites** (`mov eax, imm32` [plain instructions] `syscall`,
//!     see `ptap_arch::syssites`): the `mov` (one whole instruction, 5 or 7
//!     bytes) becomes a `jmp rel32` to a per-site trampoline holding the same
//!     instructions and the `syscall`, then `jmp syscall+2`. Only sites of
//!     intercepted numbers are patched: the others keep their bytes;
//!   - **other sites** (the number is in a register, as in `syscall()`, or is
//!     set by `xor eax, eax` as in `read`, or a branch lands between): an int3
//!     on the `syscall` instruction (only when the number is unknown or
//!     intercepted); the SIGTRAP handler sends the thread to a per-site stub:
//!     `syscall; jmp site+2` (traps) for an intercepted number in rax, or
//!     `call gadget; jmp site+2` (runs natively from libc) for another.
//!
//! The runtime's own raw system calls go through a `syscall; ret` gadget in
//! libc's text (`sys::set_gadget`), its signal handlers return through libc's
//! `__restore_rt` (`sys::set_restorer`); the few `syscall`s in the runtime's
//! own assembly (clone's, int 0x80's) run with the thread's selector at ALLOW.
//!
//! Live patching follows the kprobes protocol: int3 on the first byte,
//! membarrier SYNC_CORE, the jump's tail, membarrier, its head, membarrier
//! (and the reverse to restore). The int3's address is a site of the one
//! site table (`crate::hit::site`, kind `Syscall`) from before the int3 is
//! written until after it is gone: a thread that hits it meanwhile is sent
//! to the trampoline or a stub by the SIGTRAP handler
//! (`crate::hit::sigsys::hooks::redirect`). Trampolines and stubs are never
//! freed, so a thread still inside one always runs valid code. A kprobe at
//! a moved site's int3 address is refused (one int3, one owner).
//! Every patch is taken out when no probe is left and at shutdown: libc's
//! bytes are pristine again after a detach.
//!
//! Limits: libraries other than libc still trap for every call of an armed
//! thread (their calls are few in most programs); libc code whose `syscall`
//! is reached by an indirect branch between its `mov` and the `syscall` (not a
//! pattern of glibc) would not be seen; a site covered by a kprobe of the user
//! is left alone (its calls are not seen while the kprobe is there).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use ptap_arch::syssites::{self, SysSite};
use ptap_arch::trampoline;

use crate::base::sys;
use crate::hit::sigsys::hooks::NR_RT_SIGRETURN;
use crate::hit::site::{insert, kind_at, remove, NewSite, SiteKind, SyscallStub};

pub(crate) use crate::syscall::sigsys::hooks::exempt;
use crate::syscall::sigsys::hooks::intercepted;
use crate::syscall::sigsys::hooks::SPECIAL_BITS;
use crate::syscall::sigsys::hooks::TEXT;
use crate::syscall::sigsys::hooks::TEXT_LEN;
use crate::syscall::sigsys::hooks::TRAP_KIND;

/// Numbers the SIGSYS handler must always see while probes are on: clone,
/// clone3, fork, vfork (children are armed there), exit (the thread's slot
/// is freed), and the calls whose signal masks must not block SIGSYS
/// (rt_sigaction, rt_sigprocmask, rt_sigsuspend, pselect6, ppoll,
/// epoll_pwait, epoll_pwait2).
pub const SPECIAL: [usize; 12] = [13, 14, 56, 57, 58, 60, 130, 270, 271, 281, 435, 441];

static DISCOVERED: AtomicBool = AtomicBool::new(false);

/// Patched sites and int3 sites right now (for tests and `-v`).
pub static PATCHED: AtomicUsize = AtomicUsize::new(0);

pub static INT3: AtomicUsize = AtomicUsize::new(0);

/// Probed numbers at patchable sites take the direct path (no trap) unless
/// `PTAP_SYSCALL_DIRECT=0` (then their moved `syscall` traps, for
/// measurements).
fn direct_enabled() -> bool {
    static V: AtomicUsize = AtomicUsize::new(2);
    match V.load(Ordering::Relaxed) {
        2 => {
            let on = !std::env::var("PTAP_SYSCALL_DIRECT").is_ok_and(|v| v == "0");
            V.store(on as usize, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Is `PTAP_SYSCALL_LIBC=0` set (the old design: every call of an armed
/// thread traps)?
fn disabled() -> bool {
    std::env::var("PTAP_SYSCALL_LIBC").is_ok_and(|v| v == "0")
}

/// Find libc's text, its `syscall; ret` gadget and its signal restorer, and
/// route the runtime's own system calls and signal returns through them.
/// Once, at the runtime's start (before it installs signal handlers).
/// False: libc is not usable as the exempt range.
pub fn discover() -> bool {
    if DISCOVERED.swap(true, Ordering::AcqRel) {
        return TEXT_LEN.load(Ordering::Acquire) != 0;
    }
    for nr in SPECIAL {
        SPECIAL_BITS[nr / 64].fetch_or(1 << (nr % 64), Ordering::Relaxed);
    }
    if disabled() {
        return false;
    }
    let Some((start, len)) = libc_text() else {
        return false;
    };
    // SAFETY: libc's r-x segment, mapped for the process's life.
    let text = unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) };
    let (Some(g), Some(r)) = (
        syssites::find_gadget(text, start),
        syssites::find_restorer(text, start),
    ) else {
        return false;
    };
    sys::set_gadget(g);
    sys::set_restorer(r);
    TEXT.store(start, Ordering::Release);
    TEXT_LEN.store(len, Ordering::Release);
    true
}

/// libc's executable PT_LOAD segment, or None.
fn libc_text() -> Option<(u64, u64)> {
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut core::ffi::c_void,
    ) -> core::ffi::c_int {
        // SAFETY: dl_iterate_phdr hands valid info; data is our (u64, u64).
        unsafe {
            let out = &mut *(data as *mut (u64, u64));
            let name = (*info).dlpi_name;
            if name.is_null() {
                return 0;
            }
            let n = core::ffi::CStr::from_ptr(name).to_bytes();
            let file = n.rsplit(|&c| c == b'/').next().unwrap_or(n);
            if file != b"libc.so.6" {
                return 0;
            }
            let base = (*info).dlpi_addr;
            for i in 0..(*info).dlpi_phnum as usize {
                let ph = &*(*info).dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                    *out = (base + ph.p_vaddr, ph.p_memsz);
                    return 1;
                }
            }
        }
        0
    }
    let mut data = (0u64, 0u64);
    // SAFETY: plain libc iteration (start-up, not the hit path).
    unsafe {
        libc::dl_iterate_phdr(
            Some(cb),
            &mut data as *mut (u64, u64) as *mut core::ffi::c_void,
        );
    }
    (data.1 != 0).then_some(data)
}

struct Site {
    s: SysSite,
    /// Patchable: the trampoline (0 = not built). int3 site: the trap stub.
    code: u64,
    /// Where a thread trapping on the site's int3 goes: published in the
    /// site table (kind `Syscall`, at [`key`]) while the site is moved.
    /// Built with `code`, never freed.
    stub: *const SyscallStub,
    /// The jump (patchable) or the int3 (other) is in place.
    on: bool,
    /// Original bytes of the mov (patchable sites).
    orig: [u8; 5],
    /// Could not be built: left alone for good.
    refused: bool,
}

struct State {
    sites: Vec<Site>,
}

// SAFETY: `stub` points to a leaked, immutable SyscallStub (read by any
// thread's hit path); the rest is plain data under the state's lock.
unsafe impl Send for State {}

/// The address of a site's int3 while it is being patched (or for good):
/// the `mov` of a patchable site, the `syscall` of an int3 site.
fn key(s: &SysSite) -> u64 {
    s.patch.map_or(s.syscall, |p| p.0)
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

static FORK_STATE: crate::base::forklock::MutexSlot<Option<State>> =
    crate::base::forklock::MutexSlot::new(&STATE);

/// The sites' lock for the fork handlers (it nests inside the kprobe
/// registry's lock: [`sync`] takes that one first).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_STATE
}

/// Bring every site in line with the registered probes: sites that must be
/// seen are moved out of libc, the others are put back. Not for the hit path
/// (allocates, locks); `active` = probes are on and the runtime is not shut.
pub fn sync(active: bool) {
    if exempt().is_none() {
        return;
    }
    // Kprobe registration must read our sites' original bytes, not the jumps.
    crate::kprobes::codemem::set_moved_originals(originals_in);
    // The kprobe registry's lock first (the runtime's lock order), then ours.
    crate::kprobes::codemem::with_code_mem(|m| {
        let mut g = match STATE.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        sync_locked(&mut g, m, active);
    });
}

fn sync_locked(g: &mut Option<State>, m: &mut dyn crate::kprobes::codemem::CodeMem, active: bool) {
    let Some((start, len)) = exempt() else {
        return;
    };
    if g.is_none() {
        if !active {
            return;
        }
        // This session's earlier processes swept the same libc (checked
        // site by site); else sweep libc's text with kprobes' int3s and
        // jumps put back (nothing of ours is patched in it yet).
        let t0 = std::time::Instant::now();
        let (found, how) = match super::cache::load(start, len, &|a, n| m.clean(a, n)) {
            Some(f) => (f, "read back from this session's earlier sweep"),
            None => {
                let text = m.clean(start, len as usize);
                let (found, _) = syssites::find(&text, start);
                super::cache::store(start, len, &found);
                (found, "found by sweeping libc's text")
            }
        };
        if crate::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
            crate::session::output::diag(
                format!(
                    "ptap: pid {}: {} system call site(s) of libc {how} in {:.2?}\n",
                    sys::getpid(),
                    found.len(),
                    t0.elapsed()
                )
                .as_bytes(),
            );
        }
        *g = Some(State {
            sites: found
                .into_iter()
                .map(|s| Site {
                    s,
                    code: 0,
                    stub: core::ptr::null(),
                    on: false,
                    orig: [0; 5],
                    refused: false,
                })
                .collect(),
        });
    }
    let Some(st) = g.as_mut() else { return };
    let gadget = sys::gadget();
    let want = |s: &SysSite| -> bool {
        // The runtime's own gadget never gets an int3 (every raw system call
        // of the runtime goes through it); its `mov` may be patched: the
        // gadget's bytes stay.
        if s.patch.is_none() && s.syscall == gadget {
            return false;
        }
        active
            && match s.nr {
                Some(NR_RT_SIGRETURN) => false,
                Some(nr) => intercepted(nr as u64),
                None => s.patch.is_none(),
            }
    };
    apply(st, m, &want);
    PATCHED.store(
        st.sites
            .iter()
            .filter(|s| s.on && s.s.patch.is_some())
            .count(),
        Ordering::Relaxed,
    );
    INT3.store(
        st.sites
            .iter()
            .filter(|s| s.on && s.s.patch.is_none())
            .count(),
        Ordering::Relaxed,
    );
}

fn apply(
    st: &mut State,
    m: &mut dyn crate::kprobes::codemem::CodeMem,
    want: &dyn Fn(&SysSite) -> bool,
) {
    // Build what is missing (trampolines / stubs), near the site.
    for site in st.sites.iter_mut() {
        if site.code != 0 || site.refused || !want(&site.s) {
            continue;
        }
        match build(site, m) {
            Some(c) => site.code = c,
            None => site.refused = true,
        }
    }
    // Patchable sites: int3 first, then tail, then head.
    let kprobed = |a: u64, n: u64| (a..a + n).any(|x| kind_at(x) == Some(SiteKind::Probe));
    let mut on: Vec<usize> = Vec::new();
    let mut off: Vec<usize> = Vec::new();
    let mut int3_on: Vec<usize> = Vec::new();
    let mut int3_off: Vec<usize> = Vec::new();
    for (i, site) in st.sites.iter().enumerate() {
        let w = want(&site.s) && site.code != 0;
        match site.s.patch {
            Some((at, _)) => {
                if w && !site.on && !kprobed(at, site.s.syscall + 2 - at) {
                    on.push(i);
                } else if !w && site.on {
                    off.push(i);
                }
            }
            None => {
                if w && !site.on && !kprobed(site.s.syscall, 2) {
                    int3_on.push(i);
                } else if !w && site.on {
                    int3_off.push(i);
                }
            }
        }
    }
    if on.is_empty() && off.is_empty() && int3_on.is_empty() && int3_off.is_empty() {
        return;
    }
    let at = |i: usize| st.sites[i].s.patch.map_or(0, |p| p.0);
    // Step 0: the sites being moved join the site table (kind Syscall)
    // before their int3 can be hit. The kprobe registry's lock is held and
    // none of these addresses holds a kprobe (checked above), so none is
    // refused; one that were would stay in libc.
    on.retain(|&i| publish(&st.sites[i]));
    int3_on.retain(|&i| publish(&st.sites[i]));
    // The three steps' pieces, written step by step with a membarrier after
    // each (`poke_steps`: libc's text made writable once for all of them,
    // instead of a /proc/self/mem write, and its checks, per piece: a
    // process arming a system call probe wrote ~340 pieces, ~1,400 system
    // calls).
    // Step 1: int3 on every mov to patch or restore, and on the int3 sites.
    let int3s: Vec<(u64, Vec<u8>)> = on
        .iter()
        .chain(off.iter())
        .map(|&i| (at(i), vec![0xcc]))
        .chain(int3_on.iter().map(|&i| (st.sites[i].s.syscall, vec![0xcc])))
        .collect();
    // Step 2: the tails (jump's rel32, or the original bytes).
    let mut tails: Vec<(u64, Vec<u8>)> = Vec::new();
    for &i in &on {
        let a = at(i);
        let rel = (st.sites[i].code as i64 - (a as i64 + 5)) as i32;
        tails.push((a + 1, rel.to_le_bytes().to_vec()));
    }
    for &i in &off {
        tails.push((at(i) + 1, st.sites[i].orig[1..5].to_vec()));
    }
    for &i in &int3_off {
        tails.push((st.sites[i].s.syscall, vec![0x0f]));
    }
    // Step 3: the heads.
    let mut heads: Vec<(u64, Vec<u8>)> = Vec::new();
    for &i in &on {
        heads.push((at(i), vec![0xe9]));
    }
    for &i in &off {
        let a = at(i);
        // A kprobe on the mov (none can be registered there while the site
        // is moved: the table refuses it): its int3 stays.
        if kind_at(a) != Some(SiteKind::Probe) {
            heads.push((a, vec![st.sites[i].orig[0]]));
        }
    }
    m.poke_steps(&[&int3s, &tails, &heads]);
    for &i in on.iter().chain(int3_on.iter()) {
        st.sites[i].on = true;
    }
    // Out of the table once their int3 is gone everywhere (the membarrier
    // above): a trap taken before, whose handler finds nothing, sees the
    // restored byte and re-runs the instruction (`hit::int3`).
    for &i in off.iter().chain(int3_off.iter()) {
        st.sites[i].on = false;
        remove(key(&st.sites[i].s), SiteKind::Syscall);
    }
}

/// Put a site's stubs in the site table at its int3's address.
fn publish(site: &Site) -> bool {
    !site.stub.is_null() && insert(key(&site.s), NewSite::Syscall(site.stub)).is_ok()
}

/// The stubs of a built site, leaked: the table may hand them to a late
/// trap at any time.
fn leak_stub(trap: u64, native: u64, direct: u64) -> *const SyscallStub {
    Box::leak(Box::new(SyscallStub {
        trap,
        native,
        direct,
    }))
}

fn jmp(from_end: u64, to: u64) -> Option<[u8; 4]> {
    let d = to as i64 - from_end as i64;
    i32::try_from(d).ok().map(|d| d.to_le_bytes())
}

/// Write a site's trampoline (patchable) or stubs (int3 site) near it and
/// register its int3 hook. The code address, or None (left alone).
fn build(site: &mut Site, m: &mut dyn crate::kprobes::codemem::CodeMem) -> Option<u64> {
    let (start, len) = exempt()?;
    // SAFETY: libc's text (our own patches are never inside a prefix: a
    // site is built before it is patched, and prefixes do not overlap movs
    // of other sites: each ends at its own syscall; kprobes inside are
    // refused below).
    let text = unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) };
    let ret = site.s.syscall + 2;
    match site.s.patch {
        Some((at, _)) => {
            if (at..ret).any(|x| kind_at(x) == Some(SiteKind::Probe)) {
                return None; // a kprobe's int3 would be copied
            }
            let prefix = site.s.prefix(text, start)?.to_vec();
            if prefix.first() != Some(&0xb8) && prefix.first() != Some(&0x48) {
                return None;
            }
            site.orig.copy_from_slice(&prefix[..5]);
            let nr = site.s.nr? as usize;
            let (code, b) = if TRAP_KIND.contains(&nr) || !direct_enabled() {
                // Trap kind: the prefix, the syscall (outside libc: it traps),
                // back after the original syscall.
                let size = prefix.len() + 2 + 5;
                let code = m.alloc(at, size)?;
                let mut b = prefix;
                b.extend_from_slice(&[0x0f, 0x05, 0xe9]);
                b.extend_from_slice(&jmp(code + size as u64, ret)?);
                (code, b)
            } else {
                // Direct kind: the handlers and the call without a trap.
                let h = trampoline::Handler {
                    func: crate::hit::sigsys::direct_hit as *const () as u64,
                    data: ret,
                };
                // Any vector register may be live across a `syscall` (the
                // kernel keeps them all): the whole state is saved.
                let vs = match trampoline::xsave_size() {
                    Some(size) => trampoline::VectorSave::Xsave { size },
                    None => trampoline::VectorSave::Xmm,
                };
                let size = trampoline::syscall_trampoline(at, &prefix, ret, h, vs)
                    .ok()?
                    .len();
                let code = m.alloc(at, size)?;
                let b = trampoline::syscall_trampoline(code, &prefix, ret, h, vs).ok()?;
                if b.len() != size {
                    return None;
                }
                (code, b)
            };
            // The jump written at the mov must reach the trampoline too.
            jmp(at + 5, code)?;
            if !m.poke(code, &b) {
                return None;
            }
            site.stub = leak_stub(code, code, code);
            Some(code)
        }
        None => {
            // Trap stub: syscall; jmp ret.   Native stub: lea rsp,[rsp-128];
            // call [rip+q]; lea rsp,[rsp+128]; jmp ret; q: .quad gadget.
            // Direct stub (at code + 64): the handlers and the call without a
            // second trap; rax already holds the number.
            let h = trampoline::Handler {
                func: crate::hit::sigsys::direct_hit as *const () as u64,
                data: ret,
            };
            let vs = match trampoline::xsave_size() {
                Some(size) => trampoline::VectorSave::Xsave { size },
                None => trampoline::VectorSave::Xmm,
            };
            let dlen = if direct_enabled() {
                trampoline::syscall_trampoline(site.s.syscall, &[], ret, h, vs)
                    .ok()?
                    .len()
            } else {
                0
            };
            let code = m.alloc(site.s.syscall, 64 + dlen)?;
            let direct = if dlen > 0 {
                let d = trampoline::syscall_trampoline(code + 64, &[], ret, h, vs).ok()?;
                if d.len() != dlen || !m.poke(code + 64, &d) {
                    return None;
                }
                code + 64
            } else {
                0
            };
            let mut b = vec![0x0f, 0x05, 0xe9];
            b.extend_from_slice(&jmp(code + 7, ret)?);
            let native = code + b.len() as u64;
            b.extend_from_slice(&[0x48, 0x8d, 0x64, 0x24, 0x80, 0xff, 0x15]);
            // call [rip + d]: d from the end of the call (native + 11) to q.
            let q = native + 5 + 6 + 8 + 5;
            b.extend_from_slice(&((q - (native + 11)) as i32).to_le_bytes());
            b.extend_from_slice(&[0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0, 0xe9]);
            b.extend_from_slice(&jmp(native + 24, ret)?);
            b.extend_from_slice(&sys::gadget().to_le_bytes());
            if b.len() > 64 || !m.poke(code, &b) {
                return None;
            }
            site.stub = leak_stub(code, native, direct);
            Some(code)
        }
    }
}

/// Original bytes under our patches in [a, a+len) (for kprobes reading code,
/// the kprobe registry's lock held). Whoever holds our lock holds that one
/// too ([`sync`]): a failed try_lock is [`sync`]'s own first sweep, when
/// nothing of ours is patched yet.
pub fn originals_in(a: u64, len: u64) -> Vec<(u64, Vec<u8>)> {
    let g = match STATE.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(_) => return Vec::new(),
    };
    let Some(st) = g.as_ref() else {
        return Vec::new();
    };
    st.sites
        .iter()
        .filter(|s| s.on)
        .filter_map(|s| match s.s.patch {
            Some((at, _)) if at < a + len && at + 5 > a => {
                let skip = a.saturating_sub(at);
                Some((at + skip, s.orig[skip as usize..].to_vec()))
            }
            None if s.s.syscall >= a && s.s.syscall < a + len => Some((s.s.syscall, vec![0x0f])),
            _ => None,
        })
        .collect()
}
