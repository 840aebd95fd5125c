//! Functions no probe may go on (Linux keeps such a list too: its kprobe
//! blacklist): code the C library runs with every signal blocked. An int3
//! hit there raises a SIGTRAP the thread has blocked, and the kernel then
//! kills the whole process, before any handler of ptap's can run. The jump
//! path would be safe, but every site is an int3 for a moment while its
//! jump is written, and any site falls back to the trap path when a later
//! probe needs it (a post_handler, a jprobe) or the optimizer refuses its
//! bytes: so these are refused outright.
//!
//! glibc's `start_thread` runs `__ctype_init` and `setjmp` in every new
//! thread before it restores the thread's signal mask (`pthread_create`
//! blocks every signal around `clone`), and the private lock functions when
//! the thread was made with scheduling or affinity attributes; it runs
//! `__getpagesize` and `madvise` (and the lock functions again, when its
//! exit lock is contended) after it blocked every signal again to end the
//! thread. A trap-path probe on them killed any program that starts a
//! thread, the runtime's own control thread included (glibc 2.36:
//! `PTAP_NO_OPTIMIZE=1 ptap -e 'probe kprobe(libc:*)? {}' -c ls` died of
//! SIGTRAP in `__ctype_init`, then, with it refused, in `__getpagesize`).
//! `start_thread` itself, when the symbol index names it, is refused too.
//!
//! Not covered (docs/usage.md says so): what glibc runs in other such
//! windows, which are rarer and call common functions (`posix_spawn`'s
//! parent calls `munmap` with every signal blocked, its child several
//! system call wrappers). A trap-path probe there still kills the process.

use core::sync::atomic::{AtomicPtr, Ordering};

use crate::proc::symbols;

/// libc's functions that every thread may run with every signal blocked,
/// as it starts and as it ends (see the module documentation). `_setjmp`
/// is `__sigsetjmp`'s entry for `setjmp(env)`; aliases at the same address
/// (`getpagesize`) are covered by the address.
const BLOCKED: &[&str] = &[
    "__ctype_init",
    "_setjmp",
    "__sigsetjmp",
    "__lll_lock_wait_private",
    "__lll_lock_wake_private",
    "__getpagesize",
    "madvise",
];

/// Refused only by the name the symbol index gives (not exported).
const BLOCKED_LOCAL: &[&str] = &["start_thread"];

/// A refused range [lo, hi) and what it is.
struct Range {
    lo: u64,
    hi: u64,
    name: &'static str,
    /// The function of `name` ends in a tail jump to this range's start
    /// (`__sigsetjmp` to `__sigjmp_save`, which has no exported name and
    /// no known size: only its first instruction is refused).
    tail_of: bool,
}

/// The refused ranges of this process, looked up at the first
/// registration (libc is loaded before the runtime; fork keeps the
/// mappings, exec starts afresh) and published once. No lock: a fork
/// while another thread looks them up must not leave the child waiting.
static RANGES: AtomicPtr<Vec<Range>> = AtomicPtr::new(core::ptr::null_mut());

fn ranges() -> &'static [Range] {
    let p = RANGES.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: published vectors are leaked, never freed.
        return unsafe { &*p };
    }
    let fresh = Box::into_raw(Box::new(look_up()));
    match RANGES.compare_exchange(
        core::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: just published; leaked from now on.
        Ok(_) => unsafe { &*fresh },
        Err(won) => {
            // SAFETY: ours, never published.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: published by the winner, never freed.
            unsafe { &*won }
        }
    }
}

/// The C library's blocked functions: the object that defines
/// `__ctype_init` (glibc's private symbol, which no program defines) is
/// asked for each name through the dynamic linker, as
/// `symbols::quick_lookup` does, but found without matching file names
/// (another loaded object may be called `libc-something.so`). Empty
/// without glibc.
fn look_up() -> Vec<Range> {
    let mut out = Vec::new();
    // SAFETY: dlsym/dladdr/dlopen(RTLD_NOLOAD) with valid C strings: nothing
    // is loaded and no constructor runs; the handle is closed again after
    // the symbol entries are read. dladdr1 writes only `info` and `ent`.
    unsafe {
        let anchor = libc::dlsym(libc::RTLD_DEFAULT, c"__ctype_init".as_ptr());
        if anchor.is_null() {
            return out;
        }
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(anchor, &mut info) == 0 || info.dli_fname.is_null() {
            return out;
        }
        let h = libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return out;
        }
        for &name in BLOCKED {
            let Ok(c) = std::ffi::CString::new(name) else {
                continue;
            };
            let p = libc::dlsym(h, c.as_ptr());
            if p.is_null() {
                continue;
            }
            let mut ent: *mut libc::c_void = core::ptr::null_mut();
            if libc::dladdr1(p, &mut info, &mut ent, 1 /* RTLD_DL_SYMENT */) == 0 || ent.is_null() {
                continue;
            }
            let size = (*(ent as *const libc::Elf64_Sym)).st_size.max(1);
            let (lo, hi) = (p as u64, p as u64 + size);
            out.push(Range {
                lo,
                hi,
                name,
                tail_of: false,
            });
            if let Some(t) = tail_jump_target(lo, hi) {
                out.push(Range {
                    lo: t,
                    hi: t + 1,
                    name,
                    tail_of: true,
                });
            }
        }
        libc::dlclose(h);
    }
    out
}

/// Where the function [lo, hi) ends in a jump to code outside itself (a
/// tail call), if it does: its last instruction, found by decoding it.
fn tail_jump_target(lo: u64, hi: u64) -> Option<u64> {
    let len = usize::try_from(hi - lo).ok().filter(|&n| n <= 4096)?;
    // SAFETY: [lo, hi) is the code of a function of a loaded library (its
    // symbol's extent), readable while the library is loaded.
    let code = unsafe { core::slice::from_raw_parts(lo as *const u8, len) };
    let info = ptap_arch::decode::decode_function(code, lo).ok()?;
    let last = info.insns.last()?;
    let off = (last.addr - lo) as usize;
    let i = ptap_arch::decode::decode_one(&code[off..], last.addr).ok()?;
    match ptap_arch::decode::classify(&i, &code[off..]) {
        ptap_arch::decode::Class::RelJmp { target } if target < lo || target >= hi => Some(target),
        _ => None,
    }
}

/// Why a probe at `addr` is refused, if it is inside a blocked function.
pub fn why(addr: u64) -> Option<String> {
    let what = if let Some(r) = ranges().iter().find(|r| addr >= r.lo && addr < r.hi) {
        if r.tail_of {
            format!(
                "{addr:#x} is the function libc:{} ends by jumping to",
                r.name
            )
        } else {
            format!("{addr:#x} is libc:{}+{:#x}", r.name, addr - r.lo)
        }
    } else {
        // Only when the symbol index is built (a name it alone knows was
        // resolved through it): the function containing addr, by name.
        let (o, s) = symbols::containing(symbols::current()?, addr)?;
        let libc = ranges()
            .first()
            .is_some_and(|r| o.exec.iter().any(|&(a, b)| r.lo >= a && r.lo < b));
        if !libc || !BLOCKED_LOCAL.contains(&s.name) || addr >= s.addr + s.size.max(1) {
            return None;
        }
        format!("{addr:#x} is libc:{}+{:#x}", s.name, addr - s.addr)
    };
    Some(format!(
        "{what}, which the C library runs with every signal blocked (as each thread starts \
         or ends): a probe hit there would kill the process, so ptap does not probe it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of a blocked function is refused, and named; a function
    /// next to none of them is not.
    #[test]
    fn blocked_functions_are_refused_whole_and_others_not() {
        let f = symbols::quick_lookup("libc:__ctype_init").expect("glibc exports __ctype_init");
        let w = why(f.func).expect("the entry is refused");
        assert!(w.contains("libc:__ctype_init+0x0"), "{w}");
        assert!(why(f.func + f.size - 1).is_some(), "its last byte too");
        assert!(why(f.func + f.size).is_none(), "not past its end");
        let page = symbols::quick_lookup("libc:getpagesize").expect("glibc exports getpagesize");
        assert!(why(page.func).is_some(), "an alias, by its address");
        let lock = symbols::quick_lookup("libc:__lll_lock_wait_private").expect("glibc exports it");
        assert!(why(lock.func).is_some());
        let malloc = symbols::quick_lookup("libc:malloc").expect("glibc exports malloc");
        assert!(why(malloc.func).is_none());
    }

    /// `__sigsetjmp` ends by jumping to `__sigjmp_save`, which has no
    /// exported name: its entry is refused as that jump's target.
    #[test]
    fn a_tail_jump_target_of_a_blocked_function_is_refused() {
        let f = symbols::quick_lookup("libc:__sigsetjmp").expect("glibc exports __sigsetjmp");
        let t =
            tail_jump_target(f.func, f.func + f.size).expect("glibc 2.36's __sigsetjmp tail-jumps");
        assert!(t < f.func || t >= f.func + f.size);
        let w = why(t).expect("refused");
        assert!(w.contains("ends by jumping to"), "{w}");
    }
}
