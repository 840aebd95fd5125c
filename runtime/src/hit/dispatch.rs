//! Running a site's handlers, on both paths (int3 and jump): pre- and
//! post-handlers under the fault guard, kretprobe entry and return, and
//! the reaping of instances whose frames are gone.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::*;
use crate::base::sys;
use crate::hit::asm::guarded;
use crate::hit::site::InstHdr;
use crate::hit::site::Site;
use crate::hit::threads::ThreadState;
use crate::session::output;

/// Hits that found their probe (all threads), for tests and ptap -v.
pub static HITS: AtomicU64 = AtomicU64::new(0);

/// SIGTRAPs taken by the runtime (int3 + single-step + trampolines).
pub static TRAPS: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub(crate) unsafe fn call_pre(ts: *mut ThreadState, kp: *mut Kprobe, regs: &mut PtRegs) -> i32 {
    // SAFETY: kp is a live probe of a published site.
    let Some(pre) = (unsafe { (*kp).pre_handler }) else {
        return 0;
    };
    // SAFETY: pre is a C handler (kp, regs) -> int.
    match unsafe {
        guarded(
            ts,
            pre as usize,
            kp as usize,
            regs as *mut PtRegs as usize,
            0,
        )
    } {
        Some(r) => r as i32,
        None => {
            // SAFETY: as above.
            unsafe { handler_faulted(ts, kp, regs) };
            0
        }
    }
}

/// A handler of `kp` faulted and was aborted: count, report, and call its fault_handler.
unsafe fn handler_faulted(ts: *mut ThreadState, kp: *mut Kprobe, regs: &mut PtRegs) {
    // SAFETY: ts is ours; kp is live.
    unsafe {
        let trapno = (*ts).guard.fault_trapno as i32;
        let fip = (*ts).guard.fault_ip;
        let faddr = (*ts).guard.fault_addr;
        output::count_handler_fault();
        let mut data = [0u8; 256];
        let mut b = crate::fmt::Buf {
            data: &mut data,
            len: 0,
        };
        b.extend(b"ptap: probe handler at ");
        crate::proc::symbols::symbolize((*kp).addr as u64, &mut b);
        b.extend(b" faulted (trap ");
        output::push_dec(&mut b, trapno as u64);
        b.extend(b", address ");
        output::push_hex(&mut b, faddr);
        b.extend(b", ip ");
        crate::proc::symbols::symbolize(fip, &mut b);
        b.extend(b") and was aborted\n");
        output::diag(b.as_bytes());
        if let Some(fh) = (*kp).fault_handler {
            let _ = guarded(
                ts,
                fh as usize,
                kp as usize,
                regs as *mut PtRegs as usize,
                trapno as usize,
            );
        }
    }
}

pub(crate) unsafe fn call_posts(ts: *mut ThreadState, site: &Site, regs: &mut PtRegs) {
    for e in &site.probes {
        if e.is_dead() {
            continue;
        }
        // SAFETY: live probe.
        unsafe {
            if kprobe_flags(e.kp) & KPROBE_FLAG_DISABLED != 0 {
                continue;
            }
            if let Some(post) = (*e.kp).post_handler {
                if guarded(
                    ts,
                    post as usize,
                    e.kp as usize,
                    regs as *mut PtRegs as usize,
                    0,
                )
                .is_none()
                {
                    handler_faulted(ts, e.kp, regs);
                }
            }
        }
    }
}

pub(crate) fn write_u64(addr: u64, v: u64) -> bool {
    // SAFETY: emulated pushes go to the thread's own stack, which was just
    // used by the instruction stream; a bad sp would have faulted there too.
    unsafe { core::ptr::write_unaligned(addr as *mut u64, v) };
    true
}

/// At the entry of a kretprobed function (`sp` points at its return
/// address): reclaim the instances of frames the thread left without
/// returning (longjmp, unwinding), those at or below `sp`. One at `sp`
/// itself is live when the slot still holds the trampoline: the function
/// was entered by a tail call (`jmp`) from a kretprobed function, whose
/// hijacked return address it inherits. Its own instance then goes on top,
/// and both return in order (as Linux kretprobes chain them).
///
/// # Safety
/// `ts` is this thread's slot; `sp` the stack pointer at a function entry.
#[inline(always)]
pub(crate) unsafe fn reap_at_entry(ts: *mut ThreadState, sp: u64) {
    // SAFETY: ts is this thread's slot. Nothing to reap without instances.
    if unsafe { (*ts).kret_head } == 0 {
        return;
    }
    // SAFETY: `sp` points at the entered function's return address slot.
    let tail_call =
        crate::hit::asm::is_ret_trampoline(unsafe { core::ptr::read(sp as *const u64) });
    // SAFETY: forwarded contract.
    unsafe { reap_below(ts, sp, !tail_call) };
}

/// Reap this thread's instances whose frames are gone: below `sp` (or at
/// it, `inclusive`). Inlined check of the common case (the newest instance
/// is still live); the walk is out of line.
///
/// # Safety
/// `ts` is this thread's slot.
#[inline(always)]
pub(crate) unsafe fn reap_below(ts: *mut ThreadState, sp: u64, inclusive: bool) {
    // SAFETY: this thread's list; instances are never freed.
    unsafe {
        let h = (*ts).kret_head as *mut InstHdr;
        if h.is_null() || (*h).sp > sp || (!inclusive && (*h).sp == sp) {
            return;
        }
        reap_below_slow(ts, sp, inclusive);
    }
}

#[inline(never)]
unsafe fn reap_below_slow(ts: *mut ThreadState, sp: u64, inclusive: bool) {
    // SAFETY: this thread's list; instances are never freed.
    unsafe {
        if (*ts).kret_head == 0 {
            return;
        }
        // Frames on the signal alternate stack and on the thread's stack are
        // not ordered with each other: compare only within one of them. The
        // common case (the head is not below sp) needs no system call.
        let below = |h: *mut InstHdr| {
            if inclusive {
                (*h).sp <= sp
            } else {
                (*h).sp < sp
            }
        };
        if !below((*ts).kret_head as *mut InstHdr) {
            return;
        }
        let alt = sys::altstack();
        let on_alt = |p: u64| alt.is_some_and(|(lo, hi)| p >= lo && p < hi);
        let here = on_alt(sp);
        while (*ts).kret_head != 0 {
            let h = (*ts).kret_head as *mut InstHdr;
            // Only frames of the same stack can have been left by longjmp.
            let below = if inclusive {
                (*h).sp <= sp
            } else {
                (*h).sp < sp
            };
            let dead = below && on_alt((*h).sp) == here;
            if !dead {
                break;
            }
            (*ts).kret_head = (*h).next;
            crate::hit::unwind::count_unwound(1);
            crate::hit::site::release_own(h);
        }
    }
}

/// A kretprobe's entry: take an instance and hijack the return address
/// (the jump path may then route the return through the predicted return
/// stub instead: `crate::hit::jump`). Returns whether it hooked the return
/// (with the return stub for handlers of known code or not).
///
/// # Safety
/// `ts` is this thread's slot; `regs.sp` the stack pointer at the
/// function's entry.
#[inline(always)]
pub(crate) unsafe fn kret_entry(
    ts: *mut ThreadState,
    rec: *const crate::hit::site::RetRec,
    regs: &mut PtRegs,
) -> Option<bool> {
    // SAFETY: rec is never freed; rp is live while rec.alive (grace periods).
    unsafe {
        let rec = &*rec;
        if !rec.alive.load(Ordering::Acquire) {
            return None;
        }
        let rp = rec.rp;
        let Some(h) = rec.take(ts) else {
            kretprobe_missed(rp);
            return None;
        };
        let ri = crate::hit::site::public(h);
        (*h).sp = regs.sp;
        (*ri).ret_addr = core::ptr::read(regs.sp as *const u64) as *mut u8;
        (*ri).task = (*ts).tid.load(Ordering::Relaxed) as u64;
        if let Some(eh) = (*rp).entry_handler {
            match guarded(
                ts,
                eh as usize,
                ri as usize,
                regs as *mut PtRegs as usize,
                0,
            ) {
                Some(0) => {}
                Some(_) => {
                    crate::hit::site::release(h);
                    return None;
                }
                None => {
                    handler_faulted(ts, core::ptr::addr_of_mut!((*rp).kp), regs);
                    crate::hit::site::release(h);
                    return None;
                }
            }
        }
        core::ptr::write(
            regs.sp as *mut u64,
            crate::hit::asm::trampoline_addr_for(rec.known_ret),
        );
        (*h).next = (*ts).kret_head;
        (*ts).kret_head = h as usize;
        Some(rec.known_ret)
    }
}

/// A hijacked return arrived (`regs.sp` just above the popped return
/// address): pop this thread's instance for that frame, run the handler
/// (when `run`; otherwise count a miss) with regs->ax the return value, and
/// set `regs.ip` to the real return address. False if there is no instance.
/// Both the int3 trampoline and the trap-free return stub come here; the
/// caller keeps `in_handler` raised.
///
/// # Safety
/// `ts` is this thread's slot.
#[inline(always)]
pub(crate) unsafe fn kret_return(ts: *mut ThreadState, regs: &mut PtRegs, run: bool) -> bool {
    let sp = regs.sp; // the function's `ret` popped the (hijacked) return address
                      // SAFETY: ts is ours; instances are never freed.
    unsafe {
        reap_below(ts, sp - 8, false);
        // Normally the head; with interleaved stacks (a kretprobed function
        // returning on a signal or coroutine stack) search the list.
        let mut link: *mut usize = core::ptr::addr_of_mut!((*ts).kret_head);
        while *link != 0 && (*(*link as *mut InstHdr)).sp != sp - 8 {
            link = core::ptr::addr_of_mut!((*(*link as *mut InstHdr)).next);
        }
        let h = *link as *mut InstHdr;
        if h.is_null() {
            return false;
        }
        *link = (*h).next;
        let ri = crate::hit::site::public(h);
        let ret = (*ri).ret_addr as u64;
        let rec = &*(*h).rec;
        // The handler sees the real return address; with several kretprobes
        // on one function this instance's is the return stub the older one
        // left, whose instance (same slot, next on the list) has the real one.
        regs.ip = if crate::hit::asm::is_ret_trampoline(ret) {
            crate::hit::site::chained_return((*h).next, (*h).sp).unwrap_or(ret)
        } else {
            ret
        };
        if rec.alive.load(Ordering::Acquire) {
            let rp = rec.rp;
            if !run {
                kretprobe_missed(rp);
            } else if let Some(hd) = (*rp).handler {
                if guarded(
                    ts,
                    hd as usize,
                    ri as usize,
                    regs as *mut PtRegs as usize,
                    0,
                )
                .is_none()
                {
                    handler_faulted(ts, core::ptr::addr_of_mut!((*rp).kp), regs);
                }
            }
        }
        regs.ip = ret;
        crate::hit::site::release_own(h);
        true
    }
}

/// Die of `sig` now (outside a signal handler: no context to edit).
pub fn die_now(sig: i32) {
    let dfl = sys::KSigaction::default();
    // SAFETY: default disposition, unblock, raise: the process dies.
    unsafe {
        sys::rt_sigaction(sig, Some(&dfl), None);
        let m = sys::sigbit(sig);
        sys::rt_sigprocmask(1, Some(&m), None); // SIG_UNBLOCK
    }
    sys::tgkill(sys::getpid(), sys::gettid(), sig);
}
