//! Functions no probe may go on (Linux keeps such a list too: its kprobe
//! blacklist): code the C library runs with every signal blocked. An int3
//! hit there raises a SIGTRAP the thread has blocked, and the kernel then
//! kills the whole process, before any handler of ptap's can run. The jump
//! path would be safe, but every site is an int3 for a moment while its
//! jump is written, and any site falls back to the trap path when a later
//! probe needs it (a post_handler, a jprobe): so these are refused
//! outright.
//!
//! glibc's `start_thread` runs the first three in every new thread before
//! it restores the thread's signal mask (`pthread_create` blocks every
//! signal around `clone`), and the last two after it blocked every signal
//! again to end the thread. A trap-path probe on them killed any program
//! that starts a thread, the runtime's own control thread included
//! (glibc 2.36: `PTAP_NO_OPTIMIZE=1 ptap -e 'probe kprobe(libc:*)? {}' -c
//! ls` died of SIGTRAP in `__ctype_init`, then, with it refused, in
//! `__getpagesize`).
//!
//! Not covered (docs/usage.md says so): what glibc runs in other such
//! windows, which are rarer and call common functions (`posix_spawn`'s
//! parent calls `munmap` with every signal blocked, its child several
//! system call wrappers; a detached thread frees its stack and TLS). A
//! trap-path probe there still kills the process; the jump path is safe.

use std::sync::OnceLock;

use crate::proc::symbols;

/// libc's functions that every thread runs with every signal blocked, as
/// it starts and as it ends (see the module documentation). `_setjmp` is
/// `__sigsetjmp`'s entry for `setjmp(env)`; aliases at the same address
/// (`getpagesize`) are covered by the address.
const BLOCKED: &[&str] = &[
    // a new thread's first steps
    "libc:__ctype_init",
    "libc:_setjmp",
    "libc:__sigsetjmp",
    // a thread's last steps (giving its stack back)
    "libc:__getpagesize",
    "libc:madvise",
];

/// The blocked functions' [start, end) in this process, looked up at the
/// first registration (libc is loaded before the runtime; fork keeps the
/// mappings, exec starts afresh). Empty without a glibc that exports them.
static RANGES: OnceLock<Vec<(u64, u64, &'static str)>> = OnceLock::new();

/// Why a probe at `addr` is refused, if it is inside a blocked function.
pub fn why(addr: u64) -> Option<String> {
    let r = RANGES.get_or_init(|| {
        BLOCKED
            .iter()
            .filter_map(|n| symbols::quick_lookup(n).map(|f| (f.func, f.func + f.size.max(1), *n)))
            .collect()
    });
    let &(lo, _, name) = r.iter().find(|&&(lo, hi, _)| addr >= lo && addr < hi)?;
    Some(format!(
        "{addr:#x} is {name}+{:#x}, which the C library runs with every signal blocked \
         (as each thread starts or ends): a probe hit there would kill the process, so ptap \
         does not probe it",
        addr - lo
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
        let malloc = symbols::quick_lookup("libc:malloc").expect("glibc exports malloc");
        assert!(why(malloc.func).is_none());
    }
}
