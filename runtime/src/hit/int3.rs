//! The SIGTRAP handler: int3 probes (boosted or single-stepped displaced
//! instruction), the single step, the kretprobe trampoline's int3 and
//! jprobe_return.

use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;

use ptap_arch::regs::flags as rf;
use ptap_arch::xol::{self, Kind, StepResult};

use crate::abi::*;
use crate::base::signo::SIGSEGV;
use crate::base::signo::SIGTRAP;
use crate::base::sys::altstack;
use crate::hit::asm::int3_trampoline_addr;
use crate::hit::asm::ptap_rt_jp_realign;
use crate::hit::asm::ptap_rt_jprobe_return_int3;
use crate::hit::chain::chain;
use crate::hit::chain::die;
use crate::hit::dispatch::call_posts;
use crate::hit::dispatch::call_pre;
use crate::hit::dispatch::kret_entry;
use crate::hit::dispatch::kret_return;
use crate::hit::dispatch::reap_at_entry;
use crate::hit::dispatch::write_u64;
use crate::hit::dispatch::HITS;
use crate::hit::dispatch::TRAPS;
use crate::hit::regs::greg;
use crate::hit::regs::regs_from;
use crate::hit::regs::regs_to;
use crate::hit::regs::set_greg;
use crate::hit::regs::Uc;
use crate::hit::site::find_raw;
use crate::hit::site::EntryKind;
use crate::hit::site::Found;
use crate::hit::site::Site;
use crate::hit::threads::{self, ThreadState, JPROBE_STACK};
use crate::session::output;

const TRAP_TRACE: i32 = 2;

const SI_KERNEL: i32 = 0x80;

/// Run the displaced instruction of `site` for a context whose pre-handlers
/// are done: emulate it, or send the thread to the slot (boosted, or
/// single-stepped when a post_handler exists). Consumes one `enter`.
unsafe fn run_displaced(
    ts: *mut ThreadState,
    site: &'static Site,
    mut regs: PtRegs,
    uc: *mut Uc,
    posts: bool,
) {
    // SAFETY: ts is ours; uc is the kernel's context.
    unsafe {
        if !posts && site.region_slot != 0 {
            // A site being (or that may be) jump-optimized: run every
            // replaced instruction out of line, so that no thread resumes
            // inside bytes 1..n of the region (see optprobe.rs).
            regs.ip = site.region_slot;
            regs_to(uc, &regs);
            (*ts).in_handler = 0;
            threads::leave(ts);
            return;
        }
        match site.prep.kind {
            Kind::Emulate(e) => {
                if ptap_arch::emulate::emulate(&e, &mut regs, &mut |a, v| write_u64(a, v)).is_err()
                {
                    regs.ip = site.addr;
                }
                if posts {
                    call_posts(ts, site, &mut regs);
                }
                regs_to(uc, &regs);
                (*ts).in_handler = 0;
                threads::leave(ts);
            }
            Kind::Slot if posts && site.post_slot != 0 => {
                // The post slot ends in an int3: see `on_post_int3`.
                regs.ip = site.post_slot;
                (*ts).ss_site = site as *const Site as usize;
                (*ts).ss_sp = regs.sp;
                regs_to(uc, &regs);
            }
            Kind::Slot => {
                regs.ip = site.slot;
                if posts {
                    (*ts).ss_site = site as *const Site as usize;
                    (*ts).ss_sp = regs.sp;
                    (*ts).ss_tf_was_set = regs.flags & rf::TF != 0;
                    regs.flags |= rf::TF;
                    regs_to(uc, &regs);
                    // in_handler and active stay set until the step trap.
                } else {
                    regs_to(uc, &regs);
                    (*ts).in_handler = 0;
                    threads::leave(ts);
                }
            }
        }
    }
}

/// A probe int3 at `addr`, whose site the caller looked up once (`found`,
/// not yet trusted: see `Found`).
unsafe fn on_int3(
    ts: *mut ThreadState,
    addr: u64,
    found: Option<Found>,
    uc: *mut Uc,
    info: *mut libc::siginfo_t,
) {
    // SAFETY: ts is this thread's slot (`current()` in on_sigtrap).
    unsafe { threads::enter(ts) };
    let Some(f) = found else {
        // SAFETY: as for `enter` above.
        unsafe { threads::leave(ts) };
        // SAFETY: forwarding the kernel's arguments.
        unsafe { not_ours(addr, info, uc) };
        return;
    };
    let Some(site) = f.probe_if_current() else {
        // SAFETY: as for `enter` above.
        unsafe { threads::leave(ts) };
        // Changed between the lookup and `enter` (a registration just now):
        // run the instruction again, whatever is there by now.
        set_greg(uc, libc::REG_RIP, addr);
        return;
    };
    HITS.fetch_add(1, Ordering::Relaxed);
    let mut regs = regs_from(uc);
    regs.ip = addr;
    // SAFETY: ts is ours; the site is live until we leave.
    unsafe {
        recover_abandoned(ts, regs.sp);
        if (*ts).in_handler != 0 {
            // The Kprobes reentrancy rule: no handler runs, count a miss.
            threads::count_misses(ts, site);
            (*ts).in_handler += 1; // balanced by run_displaced
            run_displaced_nested(ts, site, regs, uc);
            return;
        }
        (*ts).in_handler = 1;
        if site.has_ret {
            reap_at_entry(ts, regs.sp);
        }
        let mut jp: *mut Jprobe = core::ptr::null_mut();
        let mut skip = false;
        for e in &site.probes {
            if e.is_dead() || kprobe_flags(e.kp) & KPROBE_FLAG_DISABLED != 0 {
                continue;
            }
            match e.kind {
                EntryKind::K => {
                    if call_pre(ts, e.kp, &mut regs) != 0 && regs.ip != addr {
                        skip = true;
                        break;
                    }
                }
                EntryKind::J(j) => {
                    if jp.is_null() {
                        jp = j;
                    }
                }
                EntryKind::R(rec) => {
                    kret_entry(ts, rec, &mut regs);
                }
            }
        }
        if skip {
            regs_to(uc, &regs);
            (*ts).in_handler = 0;
            threads::leave(ts);
            return;
        }
        if !jp.is_null() {
            // Mirror principle: save registers and the top of the stack, run
            // the entry on the same stack with the same registers.
            (*ts).jp_site = site as *const Site as usize;
            (*ts).jp_regs = regs;
            core::ptr::copy_nonoverlapping(
                regs.sp as *const u8,
                core::ptr::addr_of_mut!((*ts).jp_stack).cast::<u8>(),
                JPROBE_STACK,
            );
            // xmm0-15 too: the entry may use them, the FPU state at
            // jprobe_return's trap is the entry's, and besides the float
            // arguments (xmm0-7) the caller may keep values in any of them
            // across the call (GCC's -fipa-ra, docs/optprobes.md).
            let fp = (*uc).uc_mcontext.fpregs;
            if !fp.is_null() {
                core::ptr::copy_nonoverlapping(
                    core::ptr::addr_of!((*fp)._xmm) as *const u8,
                    crate::hit::jump::jp_xmm_area(),
                    crate::hit::jump::JP_XMM_BYTES,
                );
            }
            let mut r2 = regs;
            if regs.sp % 16 == 8 {
                // The ABI's alignment at a function's entry: run the entry
                // on the probed function's own stack.
                r2.ip = (*jp).entry as u64;
            } else {
                // Not aligned: run it on an aligned copy (see the stub).
                r2.ip = ptap_rt_jp_realign as *const () as u64;
                r2.r11 = (*jp).entry as u64;
            }
            regs_to(uc, &r2);
            return; // in_handler and active stay set until jprobe_return
        }
        let posts = site.needs_post();
        run_displaced(ts, site, regs, uc, posts);
    }
}

/// A new hit at stack pointer `sp`: forget runtime activity of this thread
/// that can no longer complete (both hit paths call this first).
///
/// # Safety
/// `ts` is this thread's slot.
#[cold]
pub(crate) unsafe fn recover_abandoned(ts: *mut ThreadState, sp: u64) {
    // SAFETY: ts is ours.
    unsafe {
        if (*ts).jp_site != 0 && on_alt_eq(sp, (*ts).jp_regs.sp) && sp >= (*ts).jp_regs.sp {
            // The jprobe entry returned (or longjmp'ed) without calling
            // jprobe_return(): the probed call was skipped. Forget it.
            output::diag(b"ptap: a jprobe entry returned without calling jprobe_return(); that call of the probed function was skipped\n");
            (*ts).jp_site = 0;
            (*ts).in_handler = 0;
            threads::leave(ts);
        }
        if (*ts).ss_site != 0 && pending_step_abandoned(ts, sp) {
            // A target signal handler longjmp'ed out of the window between a
            // hit and its post trap: that hit is over, forget it.
            (*ts).ss_site = 0;
            (*ts).in_handler = 0;
            threads::leave(ts);
        }
    }
}

/// Are both stack pointers on the same stack (thread stack vs sigaltstack)?
fn on_alt_eq(a: u64, b: u64) -> bool {
    let alt = altstack();
    let on_alt = |p: u64| alt.is_some_and(|(lo, hi)| p >= lo && p < hi);
    on_alt(a) == on_alt(b)
}

/// Is the context that is single-stepping (or running a post slot) gone?
/// It is if this hit is on the same stack at or above its stack pointer: a
/// signal handler nested in the window would run below it.
unsafe fn pending_step_abandoned(ts: *mut ThreadState, sp: u64) -> bool {
    let alt = altstack();
    let on_alt = |p: u64| alt.is_some_and(|(lo, hi)| p >= lo && p < hi);
    // SAFETY: ts is ours.
    let ss_sp = unsafe { (*ts).ss_sp };
    on_alt(sp) == on_alt(ss_sp) && sp >= ss_sp
}

/// A reentrant hit: run the displaced instruction without handlers and
/// without single-stepping.
unsafe fn run_displaced_nested(
    ts: *mut ThreadState,
    site: &'static Site,
    mut regs: PtRegs,
    uc: *mut Uc,
) {
    // SAFETY: as run_displaced.
    unsafe {
        match site.prep.kind {
            _ if site.region_slot != 0 => regs.ip = site.region_slot,
            Kind::Emulate(e) => {
                if ptap_arch::emulate::emulate(&e, &mut regs, &mut |a, v| write_u64(a, v)).is_err()
                {
                    regs.ip = site.addr;
                }
            }
            Kind::Slot => regs.ip = site.slot,
        }
        regs_to(uc, &regs);
        (*ts).in_handler -= 1;
        threads::leave(ts);
    }
}

unsafe fn on_single_step(ts: *mut ThreadState, uc: *mut Uc) {
    // SAFETY: ss_site was set by on_int3 and is live (we are still active).
    unsafe {
        let site = &*((*ts).ss_site as *const Site);
        let mut regs = regs_from(uc);
        if xol::after_step(&site.prep, site.slot, &mut regs) == StepResult::Continue {
            regs_to(uc, &regs);
            return;
        }
        (*ts).ss_site = 0;
        if !(*ts).ss_tf_was_set {
            regs.flags &= !rf::TF;
        }
        call_posts(ts, site, &mut regs);
        regs_to(uc, &regs);
        (*ts).in_handler = 0;
        threads::leave(ts);
    }
}

/// The int3 at the end of a post slot: the displaced instruction is done.
unsafe fn on_post_int3(ts: *mut ThreadState, site: &'static Site, uc: *mut Uc) {
    // SAFETY: ts is ours; the site is live (still active since the hit).
    unsafe {
        let mut regs = regs_from(uc);
        regs.ip = site.prep.next();
        (*ts).ss_site = 0;
        call_posts(ts, site, &mut regs);
        regs_to(uc, &regs);
        (*ts).in_handler = 0;
        threads::leave(ts);
    }
}

unsafe fn on_kret_trampoline(ts: *mut ThreadState, uc: *mut Uc) {
    // SAFETY: ts is this thread's slot (`current()` in on_sigtrap).
    unsafe { threads::enter(ts) };
    let mut regs = regs_from(uc);
    // SAFETY: ts is ours; signals are blocked in this handler.
    unsafe {
        let run = (*ts).in_handler == 0;
        (*ts).in_handler += 1;
        let ok = kret_return(ts, &mut regs, run);
        (*ts).in_handler -= 1;
        if !ok {
            output::diag(b"ptap: kretprobe trampoline reached without an instance; aborting\n");
            die(SIGSEGV, uc);
            threads::leave(ts);
            return;
        }
    }
    regs_to(uc, &regs);
    // SAFETY: as for `enter` above.
    unsafe { threads::leave(ts) };
}

unsafe fn on_jprobe_return(ts: *mut ThreadState, uc: *mut Uc, info: *mut libc::siginfo_t) {
    // SAFETY: ts is ours; jp_site is live (we stayed active since the hit).
    unsafe {
        if (*ts).jp_site == 0 {
            chain(SIGTRAP, info, uc, None);
            return;
        }
        let site = &*((*ts).jp_site as *const Site);
        (*ts).jp_site = 0;
        let regs = (*ts).jp_regs;
        core::ptr::copy_nonoverlapping(
            core::ptr::addr_of!((*ts).jp_stack).cast::<u8>(),
            regs.sp as *mut u8,
            JPROBE_STACK,
        );
        let fp = (*uc).uc_mcontext.fpregs;
        if !fp.is_null() {
            core::ptr::copy_nonoverlapping(
                crate::hit::jump::jp_xmm_area() as *const u8,
                core::ptr::addr_of_mut!((*fp)._xmm) as *mut u8,
                crate::hit::jump::JP_XMM_BYTES,
            );
        }
        let posts = site.needs_post();
        run_displaced(ts, site, regs, uc, posts);
    }
}

/// How far below a guarded call's saved rsp a fault still counts as the
/// guarded handler's own (its frames plus anything it calls; larger than a
/// default 8 MiB thread stack would be a different stack).
pub(crate) const GUARD_STACK_SPAN: u64 = 8 << 20;

/// The SIGTRAP handler.
///
/// # Safety
/// Installed with SA_SIGINFO; called by the kernel only.
pub unsafe extern "C" fn on_sigtrap(sig: c_int, info: *mut libc::siginfo_t, ucv: *mut c_void) {
    let uc = ucv as *mut Uc;
    TRAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: kernel-provided pointers.
    let code = unsafe { (*info).si_code };
    // A redirecting pre_handler on a jump-optimized probe (see optprobe.rs).
    // SAFETY: uc is the kernel's context for this SIGTRAP.
    if code == TRAP_TRACE && unsafe { crate::hit::jump::divert_trap(uc) } {
        return;
    }
    let rip = greg(uc, libc::REG_RIP);
    // Any int3 but the runtime's two fixed ones: one lookup in the site
    // table, then a dispatch on the site's kind. A moved libc syscall site
    // needs no thread slot (its stubs are never freed): the thread is sent
    // on at once. A probe site is trusted only after `enter` (`on_int3`).
    let int3_at = rip.wrapping_sub(1);
    let found = if code == SI_KERNEL
        && int3_at != int3_trampoline_addr()
        && int3_at != ptap_rt_jprobe_return_int3 as *const () as u64
    {
        find_raw(int3_at)
    } else {
        None
    };
    if let Some(stub) = found.and_then(|f| f.syscall()) {
        // SAFETY: uc is the kernel's context for this SIGTRAP.
        unsafe { crate::hit::sigsys::hooks::redirect(uc, stub) };
        return;
    }
    let Some(ts) = threads::current() else {
        // No thread slot: cannot run handlers; execute the instruction as if
        // unprobed (count nothing: no probe known).
        // SAFETY: forwarding.
        unsafe { no_slot_fallback(sig, code, info, uc, rip, found) };
        return;
    };
    // SAFETY: ts is this thread's slot; ucv the kernel's ucontext.
    unsafe { threads::note_altstack(ts, ucv) };
    // SAFETY: ts is this thread's slot.
    unsafe {
        if code == TRAP_TRACE
            && (*ts).ss_site != 0
            && (*((*ts).ss_site as *const Site)).post_slot == 0
        {
            on_single_step(ts, uc);
            return;
        }
        if code == SI_KERNEL {
            let addr = rip.wrapping_sub(1);
            if addr == int3_trampoline_addr() {
                on_kret_trampoline(ts, uc);
                return;
            }
            if addr == ptap_rt_jprobe_return_int3 as *const () as u64 {
                on_jprobe_return(ts, uc, info);
                return;
            }
            if (*ts).ss_site != 0 {
                let site = &*((*ts).ss_site as *const Site);
                if site.post_slot != 0 && addr == crate::hit::site::post_int3(site) {
                    on_post_int3(ts, site, uc);
                    return;
                }
            }
            on_int3(ts, addr, found, uc, info);
            return;
        }
        chain(sig, info, uc, None);
    }
}

/// A trap of a thread without a slot (`found`: the int3's lookup in
/// on_sigtrap, a syscall site already handled there): no handler.
unsafe fn no_slot_fallback(
    sig: c_int,
    code: i32,
    info: *mut libc::siginfo_t,
    uc: *mut Uc,
    rip: u64,
    found: Option<Found>,
) {
    let addr = rip.wrapping_sub(1);
    // Without a slot there is no grace-period section to enter: the site is
    // used as found (a probe unregistered at this instant is the known
    // window of this fallback).
    let site = if code == SI_KERNEL {
        found.and_then(|f| f.probe_if_current())
    } else {
        crate::hit::site::lookup(addr)
    };
    if let Some(site) = site {
        let mut regs = regs_from(uc);
        regs.ip = addr;
        match site.prep.kind {
            _ if site.region_slot != 0 => regs.ip = site.region_slot,
            Kind::Emulate(e) => {
                let _ = ptap_arch::emulate::emulate(&e, &mut regs, &mut |a, v| write_u64(a, v));
            }
            Kind::Slot => regs.ip = site.slot,
        }
        regs_to(uc, &regs);
        return;
    }
    if code == SI_KERNEL {
        // SAFETY: forwarding the kernel's arguments.
        unsafe { not_ours(addr, info, uc) };
        return;
    }
    // SAFETY: forwarding.
    unsafe { chain(sig, info, uc, None) };
}

/// An int3 at `addr` the table does not know (any more): if its byte was
/// restored meanwhile (a site removed between the trap and this handler),
/// re-run the instruction; otherwise it is the target's own.
unsafe fn not_ours(addr: u64, info: *mut libc::siginfo_t, uc: *mut Uc) {
    // SAFETY: addr is the int3 that just executed: mapped.
    if unsafe { core::ptr::read_volatile(addr as *const u8) } != 0xcc {
        set_greg(uc, libc::REG_RIP, addr);
    } else {
        // SAFETY: forwarding the kernel's arguments.
        unsafe { chain(SIGTRAP, info, uc, None) };
    }
}
