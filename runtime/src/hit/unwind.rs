//! C++ exceptions (and other unwinds) through kretprobed frames.
//!
//! The unwinder reads return addresses from the stack; it must never see
//! the kretprobe trampoline. We interpose the unwinder's entry points that
//! start a (phase 1 + 2) unwind and put back the real return address of
//! every hijacked frame of the current thread, keeping the instances
//! ("unhooked"). Where the exception is caught (`__cxa_begin_catch`, called
//! by the catching frame with its own stack pointer restored), instances of
//! frames below that stack pointer were unwound: they are reclaimed and
//! counted as returns by unwinding (not as misses); the frames above it are
//! alive and get their hijacked return addresses back, so their returns are
//! traced. An unwind that ends elsewhere (a forced unwind, a foreign
//! runtime's catch) leaves unhooked instances that are reclaimed, and
//! counted the same way, once the stack passes them (see `crate::hit::dispatch::reap_below`).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::hit::site::InstHdr;
use crate::hit::site::INST_HOOKED;
use crate::hit::site::INST_UNHOOKED;
use crate::hit::threads::{self, ThreadState};

/// kretprobed frames of this process left by unwinding (exceptions,
/// longjmp): instances reclaimed without a return handler.
pub static UNWOUND: AtomicU64 = AtomicU64::new(0);

/// How much of [`UNWOUND`] this process added to the session's count.
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

/// Count frames left by unwinding (hit path safe: one relaxed add).
pub fn count_unwound(n: u64) {
    UNWOUND.fetch_add(n, Ordering::Relaxed);
}

/// Add this process's new unwound count to the session's (`total`: the
/// count in the globals header).
pub fn publish(total: &AtomicU64) {
    let n = UNWOUND.load(Ordering::Acquire);
    let d = n.saturating_sub(PUBLISHED.fetch_max(n, Ordering::AcqRel));
    if d > 0 {
        total.fetch_add(d, Ordering::Relaxed);
    }
}

/// In a forked child: the parent's count is the parent's to report.
pub fn rebase() {
    PUBLISHED.store(UNWOUND.load(Ordering::Acquire), Ordering::Release);
}

/// An unwind starts on this thread: put back the real return address of
/// every hijacked frame. With `reclaim` (forced unwinds: pthread_exit,
/// thread cancellation; the thread ends) the instances are reclaimed now and
/// counted as unwound; otherwise they stay on the list, unhooked, until the
/// catch ([`after_catch`]) or the stack ([`crate::hit::dispatch::reap_below`]) settles them.
///
/// Runs inside the runtime's hit-path activity (`threads::enter`), so an
/// `unregister_kretprobe` on another thread waits (grace period) until
/// this has finished with the records it reads.
pub fn restore_hijacked(reclaim: bool) {
    let Some(ts) = threads::current() else { return };
    // SAFETY: this thread's slot, from `current()` just above.
    unsafe { threads::enter(ts) };
    // SAFETY: this thread's own list; instances are never freed; the
    // records (`rec`) are kept while we are active (grace periods).
    unsafe {
        (*ts).in_handler += 1;
        let mut link: *mut usize = core::ptr::addr_of_mut!((*ts).kret_head);
        while *link != 0 {
            let h = *link as *mut InstHdr;
            unhook(h);
            if reclaim {
                *link = (*h).next;
                count_unwound(1);
                crate::hit::site::release(h);
            } else {
                link = core::ptr::addr_of_mut!((*h).next);
            }
        }
        (*ts).in_handler -= 1;
    }
    // SAFETY: as for `enter` above.
    unsafe { threads::leave(ts) };
}

/// Put the real return address back in `h`'s frame.
///
/// # Safety
/// `h` is an instance of this thread's list.
unsafe fn unhook(h: *mut InstHdr) {
    // SAFETY: caller contract; the slot is in this thread's stack (the
    // frame is live or was live: the stack memory stays mapped).
    unsafe {
        if (*h).in_use.load(Ordering::Relaxed) != INST_HOOKED {
            return;
        }
        let slot = (*h).sp as *mut u64;
        if crate::hit::asm::is_ret_trampoline(core::ptr::read(slot)) {
            core::ptr::write(slot, (*crate::hit::site::public(h)).ret_addr as u64);
        }
        (*h).in_use.store(INST_UNHOOKED, Ordering::Relaxed);
    }
}

/// # Safety
/// `ts` is this thread's slot, inside `threads::enter`.
pub unsafe fn settle(ts: *mut ThreadState, sp: u64) {
    let alt = crate::base::sys::altstack();
    let on_alt = |p: u64| alt.is_some_and(|(lo, hi)| p >= lo && p < hi);
    let here = on_alt(sp);
    // SAFETY: caller contract; instances are never freed.
    unsafe {
        (*ts).in_handler += 1;
        let mut link: *mut usize = core::ptr::addr_of_mut!((*ts).kret_head);
        while *link != 0 {
            let h = *link as *mut InstHdr;
            let state = (*h).in_use.load(Ordering::Relaxed);
            let slot = (*h).sp;
            let same_stack = on_alt(slot) == here;
            let dead = same_stack && slot < sp;
            if state == INST_UNHOOKED && !dead {
                // The instances that hooked this slot are next to each other,
                // newest first (several kretprobes on one function): the
                // oldest holds the real return address, each newer one the
                // return stub of the one before it.
                let mut last = h;
                while (*last).next != 0 && (*((*last).next as *mut InstHdr)).sp == slot {
                    last = (*last).next as *mut InstHdr;
                }
                let ret = (*crate::hit::site::public(last)).ret_addr as u64;
                if core::ptr::read(slot as *const u64) == ret {
                    let known = (*(*h).rec).known_ret;
                    core::ptr::write(
                        slot as *mut u64,
                        crate::hit::asm::trampoline_addr_for(known),
                    );
                    let mut k = h;
                    loop {
                        (*k).in_use.store(INST_HOOKED, Ordering::Relaxed);
                        if k == last {
                            break;
                        }
                        k = (*k).next as *mut InstHdr;
                    }
                    link = core::ptr::addr_of_mut!((*last).next);
                    continue;
                }
            } else if !dead {
                link = core::ptr::addr_of_mut!((*h).next);
                continue;
            }
            // Unwound (or its frame no longer holds the return address).
            *link = (*h).next;
            count_unwound(1);
            crate::hit::site::release(h);
        }
        (*ts).in_handler -= 1;
    }
}
