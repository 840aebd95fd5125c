//! Fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE): a fault in a handler
//! aborts the handler; a fault in a displaced instruction is reported at the
//! original address; anything else goes to the target's own handler.

use core::ffi::{c_int, c_void};

use ptap_arch::regs::flags as rf;
use ptap_arch::xol::{self};

use crate::abi::*;
use crate::hit::asm::guarded;
use crate::hit::asm::ptap_rt_guard_recover;
use crate::hit::chain::chain;
use crate::hit::int3::GUARD_STACK_SPAN;
use crate::hit::regs::greg;
use crate::hit::regs::regs_from;
use crate::hit::regs::regs_to;
use crate::hit::regs::set_greg;
use crate::hit::regs::Uc;
use crate::hit::site::Site;
use crate::hit::threads::{self, ThreadState};

/// The handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE.
///
/// # Safety
/// Installed with SA_SIGINFO; called by the kernel only.
pub unsafe extern "C" fn on_fault(sig: c_int, info: *mut libc::siginfo_t, ucv: *mut c_void) {
    let uc = ucv as *mut Uc;
    // SAFETY: kernel-provided pointers.
    let code = unsafe { (*info).si_code };
    // A module's init_module() that overran its time (see loader).
    // SAFETY: kernel-provided pointers.
    if code == -1 && unsafe { crate::hit::abandon::abandon_request(info, uc) } {
        return;
    }
    let rip = greg(uc, libc::REG_RIP);
    let ts = threads::current();
    // SAFETY: ts is ours when Some; uc is the kernel's.
    unsafe {
        if let Some(ts) = ts {
            threads::note_altstack(ts, ucv);
            // 1. A probe handler faulted: abort it. Only when the fault is
            //    in the guarded call's context: below its saved rsp, on
            //    the same stack, or on the thread's handler stack (where
            //    only guarded calls run). A guard left active by a handler
            //    that was abandoned (a target handler that siglongjmp'ed
            //    out of it) must not "recover" an unrelated fault to a
            //    stale stack.
            let sp = greg(uc, libc::REG_RSP);
            let gsp = (*ts).guard.saved_rsp;
            let in_call =
                (sp < gsp && gsp - sp < GUARD_STACK_SPAN) || threads::on_handler_stack(ts, sp);
            if code > 0 && (*ts).guard.active != 0 && in_call {
                // A raw place, not a reference: the watchdog's queued
                // SIGSEGV may nest here (hit/threads.rs, "Who may touch a slot").
                let g = core::ptr::addr_of_mut!((*ts).guard);
                (*g).active = 0;
                (*g).faulted = 1;
                (*g).fault_trapno = greg(uc, libc::REG_TRAPNO);
                (*g).fault_ip = rip;
                (*g).fault_addr = (*info).si_addr() as u64;
                set_greg(uc, libc::REG_RSP, (*g).saved_rsp);
                set_greg(uc, libc::REG_RIP, ptap_rt_guard_recover as *const () as u64);
                set_greg(uc, libc::REG_RAX, 0);
                return;
            }
            // 2. The displaced instruction faulted while single-stepped.
            if code > 0 && (*ts).ss_site != 0 {
                let site = &*((*ts).ss_site as *const Site);
                let in_slot = |base: u64| {
                    base != 0 && rip >= base && rip < base + ptap_arch::xol::SLOT_SIZE as u64
                };
                let base = if in_slot(site.slot) {
                    site.slot
                } else {
                    site.post_slot
                };
                if in_slot(base) {
                    (*ts).ss_site = 0;
                    let mut regs = regs_from(uc);
                    if !xol::fault_fixup(&site.prep, base, &mut regs) {
                        regs.ip = site.addr;
                    }
                    if !(*ts).ss_tf_was_set {
                        regs.flags &= !rf::TF;
                    }
                    let handled =
                        displaced_fault_handlers(ts, site, &mut regs, greg(uc, libc::REG_TRAPNO));
                    regs_to(uc, &regs);
                    (*ts).in_handler = 0;
                    threads::leave(ts);
                    if handled {
                        return;
                    }
                    chain(sig, info, uc, Some(site.addr));
                    return;
                }
            }
        }
        // 3. A relocated instruction in a trampoline or region slot faulted
        //    (jump-optimized sites): as if at its original address.
        if code > 0 {
            if let Some((orig, delta, at)) = crate::hit::ranges::fault_owner(rip) {
                let mut regs = regs_from(uc);
                regs.ip = orig;
                regs.sp = regs.sp.wrapping_sub(delta as u64);
                if let Some(ts) = ts {
                    threads::enter(ts);
                    let handled = crate::hit::site::lookup(at)
                        .is_some_and(|site| outermost_fault_handlers(ts, site, &mut regs, uc));
                    threads::leave(ts);
                    if handled {
                        regs_to(uc, &regs);
                        return;
                    }
                }
                regs_to(uc, &regs);
                chain(sig, info, uc, Some(orig));
                return;
            }
        }
        // 4. A boosted slot faulted.
        if code > 0 {
            if let Some((base, orig)) = crate::hit::site::slot_owner(rip) {
                let mut regs = regs_from(uc);
                regs.ip = orig;
                if let Some(ts) = ts {
                    threads::enter(ts);
                    let handled = crate::hit::site::lookup(orig).is_some_and(|site| {
                        if !xol::fault_fixup(&site.prep, base, &mut regs) {
                            regs.ip = orig;
                        }
                        outermost_fault_handlers(ts, site, &mut regs, uc)
                    });
                    threads::leave(ts);
                    if handled {
                        regs_to(uc, &regs);
                        return;
                    }
                }
                regs_to(uc, &regs);
                chain(sig, info, uc, Some(orig));
                return;
            }
        }
        chain(sig, info, uc, None);
    }
}

/// Call the fault_handlers of a site whose displaced instruction faulted.
/// Returns true if one of them handled it (returned non-zero).
/// Run `site`'s fault handlers for a fault of its displaced instruction,
/// unless this thread is already inside a handler (the Kprobes reentrancy
/// rule). True if a handler dealt with the fault.
///
/// # Safety
/// `ts` is this thread's slot (entered); `uc` is the kernel's context.
unsafe fn outermost_fault_handlers(
    ts: *mut ThreadState,
    site: &Site,
    regs: &mut PtRegs,
    uc: *mut Uc,
) -> bool {
    // SAFETY: ts is this thread's slot (caller contract).
    unsafe {
        if (*ts).in_handler != 0 {
            return false;
        }
        (*ts).in_handler = 1;
        let handled = displaced_fault_handlers(ts, site, regs, greg(uc, libc::REG_TRAPNO));
        (*ts).in_handler = 0;
        handled
    }
}

unsafe fn displaced_fault_handlers(
    ts: *mut ThreadState,
    site: &Site,
    regs: &mut PtRegs,
    trapno: u64,
) -> bool {
    for e in &site.probes {
        if e.is_dead() {
            continue;
        }
        // SAFETY: live probe.
        unsafe {
            if let Some(fh) = (*e.kp).fault_handler {
                let r = guarded(
                    ts,
                    fh as usize,
                    e.kp as usize,
                    regs as *mut PtRegs as usize,
                    trapno as usize,
                );
                if r.is_some_and(|v| v as i32 != 0) {
                    return true;
                }
            }
        }
    }
    false
}
