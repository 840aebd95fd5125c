//! The int3 hooks of moved libc syscall sites (see `crate::syscall::sites`):
//! a thread that traps on one is sent on to the site's trampoline.

use core::sync::atomic::{AtomicU64, Ordering};

/// int3 addresses we own → where the thread goes: (key, trap target, native
/// target). Patchable sites: key = the mov, both targets = its trampoline.
/// int3 sites: key = the syscall, the two stubs. Entries are never removed.
const HOOK_CAP: usize = 4096;

static HOOK_KEY: [AtomicU64; HOOK_CAP] = [const { AtomicU64::new(0) }; HOOK_CAP];

static HOOK_TRAP: [AtomicU64; HOOK_CAP] = [const { AtomicU64::new(0) }; HOOK_CAP];

static HOOK_NATIVE: [AtomicU64; HOOK_CAP] = [const { AtomicU64::new(0) }; HOOK_CAP];

static HOOK_DIRECT: [AtomicU64; HOOK_CAP] = [const { AtomicU64::new(0) }; HOOK_CAP];

fn hslot(addr: u64) -> usize {
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % HOOK_CAP
}

pub(crate) fn add_hook(key: u64, trap: u64, native: u64, direct: u64) -> bool {
    let h = hslot(key);
    for k in 0..HOOK_CAP {
        let i = (h + k) % HOOK_CAP;
        let cur = HOOK_KEY[i].load(Ordering::Acquire);
        if cur == key {
            return true;
        }
        if cur == 0 {
            HOOK_TRAP[i].store(trap, Ordering::Relaxed);
            HOOK_NATIVE[i].store(native, Ordering::Relaxed);
            HOOK_DIRECT[i].store(direct, Ordering::Relaxed);
            HOOK_KEY[i].store(key, Ordering::Release);
            return true;
        }
    }
    false
}

fn find_hook(key: u64) -> Option<(u64, u64, u64)> {
    let h = hslot(key);
    for k in 0..HOOK_CAP {
        let i = (h + k) % HOOK_CAP;
        let cur = HOOK_KEY[i].load(Ordering::Acquire);
        if cur == key {
            return Some((
                HOOK_TRAP[i].load(Ordering::Relaxed),
                HOOK_NATIVE[i].load(Ordering::Relaxed),
                HOOK_DIRECT[i].load(Ordering::Relaxed),
            ));
        }
        if cur == 0 {
            return None;
        }
    }
    None
}

/// SIGTRAP from an int3 at `rip - 1`: one of ours? Then the thread is sent
/// on (see the module docs) and true is returned. Hit path (signal context):
/// atomics only.
///
/// # Safety
/// `uc` is the kernel's context of this SIGTRAP.
pub unsafe fn on_int3(uc: *mut libc::ucontext_t) -> bool {
    // SAFETY: the kernel-provided context.
    let (rip, rax) = unsafe {
        (
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64,
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] as u64,
        )
    };
    let addr = rip.wrapping_sub(1);
    let Some((start, len)) = exempt() else {
        return false;
    };
    if addr < start || addr >= start + len {
        return false;
    }
    let Some((trap, native, direct)) = find_hook(addr) else {
        return false;
    };
    if crate::hit::site::lookup(addr).is_some() {
        return false; // a kprobe owns this int3 now
    }
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
    true
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
