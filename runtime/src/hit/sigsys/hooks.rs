//! Where a thread that traps on a moved libc syscall site goes (see
//! `crate::syscall::sites`), and what the SIGSYS side and the sites share:
//! libc's text as the exempt range and the numbers that must be seen.
//!
//! The int3s themselves are sites of the one site table
//! ([`crate::hit::site`], kind `Syscall`): the SIGTRAP handler finds them
//! with the same single lookup as a kprobe's and calls [`redirect`]. What
//! stays here is not a lookup structure: the exempt range is the dispatch's
//! (SIGSYS), and the number bitmaps are read by the SIGSYS handler, the
//! direct stubs and [`redirect`].

use core::sync::atomic::{AtomicU64, Ordering};

use crate::hit::site::SyscallStub;

/// int3 traps of moved syscall sites sent on so far (tests: `ptap_rt_site_stats`).
pub static INT3_HITS: AtomicU64 = AtomicU64::new(0);

/// SIGTRAP from the int3 of a moved syscall site whose stubs are `stub`:
/// send the thread on. Hit path (signal context): atomics only.
///
/// # Safety
/// `uc` is the kernel's context of this SIGTRAP.
pub unsafe fn redirect(uc: *mut libc::ucontext_t, stub: &SyscallStub) {
    INT3_HITS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel-provided context.
    let rax = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] as u64 };
    let (trap, native, direct) = (stub.trap, stub.native, stub.direct);
    // rt_sigreturn must run at the unchanged rsp: never through the native
    // stub's call (the trap stub's SIGSYS makes it from the gadget); clone,
    // fork, exit only through the SIGSYS handler; other numbers that must be
    // seen (probed, or the mask calls, stripped for every thread) through
    // the direct stub; the rest natively.
    let to = if trap == native || rax == NR_RT_SIGRETURN as u64 {
        trap
    } else if intercepted(rax) {
        if direct != 0 && !TRAP_KIND.contains(&(rax as usize)) {
            direct
        } else {
            trap
        }
    } else {
        native
    };
    // SAFETY: as above.
    unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = to as i64 };
}

/// Of these, the ones only the SIGSYS handler can make (children are armed
/// there, the thread's slot is freed there): their moved sites trap. The
/// mask calls take the direct path, which removes the managed signals from
/// their masks for every thread (armed or not: an unarmed thread, such as
/// a new thread of libc's pthread_create before it restores its mask, must
/// not block SIGTRAP either, or an int3 of ours would kill the process).
pub const TRAP_KIND: [usize; 5] = [56, 57, 58, 60, 435];

/// rt_sigreturn: libc's `__restore_rt` is also the restorer of the runtime's
/// own handlers (SIGSYS included): its sites are never moved (a probe of
/// rt_sigreturn sees the calls made outside libc only).
pub(crate) const NR_RT_SIGRETURN: u32 = 15;

pub(crate) static SPECIAL_BITS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// libc's executable segment (0 = not found).
pub(crate) static TEXT: AtomicU64 = AtomicU64::new(0);

pub(crate) static TEXT_LEN: AtomicU64 = AtomicU64::new(0);

/// libc's text as the exempt range (start, length), when in use.
pub fn exempt() -> Option<(u64, u64)> {
    let len = TEXT_LEN.load(Ordering::Acquire);
    (len != 0).then(|| (TEXT.load(Ordering::Acquire), len))
}

/// Must a call of `nr` be seen by the SIGSYS handler? Hit path.
#[inline]
pub fn intercepted(nr: u64) -> bool {
    if nr >= crate::hit::sigsys::probes::MAX_NR as u64 {
        return false;
    }
    let n = nr as usize;
    SPECIAL_BITS[n / 64].load(Ordering::Relaxed) & (1 << (n % 64)) != 0 || {
        let (e, r) = crate::hit::sigsys::probes::watched(n);
        e || r
    }
}
