//! Handler code whose use of vector state ptap knows (the vector-state
//! rule of docs/optprobes.md): compiled-script handlers (the runtime's
//! entry points for them), and C modules shown by their own bytes to be
//! as restrained. Such handlers get the lighter trampoline saves.
//!
//! A C module counts when
//! - its code has no VEX, EVEX, XOP or 3DNow! instruction (legacy SSE
//!   writes only bits 0-127 of xmm0-15; a linear sweep of its executable
//!   sections with iced-x86 — compilers put no data there);
//! - it imports nothing but the runtime's functions (whose hit-path code is
//!   the runtime's own: no libc) and the four weak symbols every shared
//!   object carries for its start-up and unload. An import of `memcpy`,
//!   `printf` or anything else of libc, whose CPU-dependent variants use
//!   ymm/zmm registers, makes it unknown.
//!
//! What is not covered: a module that reaches other code through an address
//! it computes itself (not an import). The registration functions allocate
//! through libc: calling them from a handler is refused (as Linux's kprobes
//! do not allow it either).

use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Compiled scripts' kprobe pre_handler and kretprobe entry/return handlers
/// (0: none yet).
static SCRIPT_PRE: AtomicUsize = AtomicUsize::new(0);
static SCRIPT_ENTRY: AtomicUsize = AtomicUsize::new(0);
static SCRIPT_RET: AtomicUsize = AtomicUsize::new(0);

/// Note that handler code ptap does not know may run from now on (until
/// then no handler can call libc, so none can change `errno`: see
/// `crate::hit::asm::guarded`).
pub fn note_unknown() {
    crate::hit::asm::note_unknown_handlers();
}

/// `f` (0: none) as registered handler code: false, and noted, when ptap
/// does not know it.
pub fn check_handler(f: usize) -> bool {
    let k = f == 0 || is_known(f);
    if !k {
        note_unknown();
    }
    k
}

/// Executable ranges of C modules that passed [`add_c_module`].
static RANGES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Tell registration which pre_handler is compiled-script code.
pub fn set_script_pre_handler(addr: usize) {
    SCRIPT_PRE.store(addr, Ordering::Relaxed);
}

/// Tell registration which kretprobe handlers are compiled-script code.
pub fn set_script_kretprobe_handlers(entry: usize, ret: usize) {
    SCRIPT_ENTRY.store(entry, Ordering::Relaxed);
    SCRIPT_RET.store(ret, Ordering::Relaxed);
}

/// Is `f` handler code ptap knows? Registration time (takes a lock).
pub fn is_known(f: usize) -> bool {
    if f == 0 {
        return false;
    }
    if [&SCRIPT_PRE, &SCRIPT_ENTRY, &SCRIPT_RET]
        .iter()
        .any(|k| k.load(Ordering::Relaxed) == f)
    {
        return true;
    }
    let f = f as u64;
    RANGES
        .lock()
        .map(|r| r.iter().any(|&(lo, hi)| f >= lo && f < hi))
        .unwrap_or(false)
}

/// The runtime's functions a C module may import (runtime/include/ptap):
/// those whose code a handler may run touch no libc (`dump_stack` and
/// `kallsyms_lookup_name` may build the symbol index, through malloc: not
/// listed); the registration calls refuse to run inside a handler.
const RUNTIME_API: &[&str] = &[
    "register_kprobe",
    "unregister_kprobe",
    "register_kprobes",
    "unregister_kprobes",
    "enable_kprobe",
    "disable_kprobe",
    "register_jprobe",
    "unregister_jprobe",
    "jprobe_return",
    "register_kretprobe",
    "unregister_kretprobe",
    "printk",
    "ptap_probe_read",
    "ptap_probe_read_str",
    "ptap_write",
    "ptap_emit",
    "ptap_tid",
    "ptap_pid",
    "ptap_execname",
    "register_syscall_probe",
    "unregister_syscall_probe",
    "syscall_probe_data",
];

/// Weak symbols of every shared object's start-up and unload code.
const STARTUP_WEAK: &[&str] = &[
    "__cxa_finalize",
    "__gmon_start__",
    "_ITM_deregisterTMCloneTable",
    "_ITM_registerTMCloneTable",
];

/// Why the module at `path` (its bytes: `data`) is not known code, or its
/// executable sections as (address, size) relative to its load base.
pub fn check_c_module(data: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolKind};
    let file = object::File::parse(data).map_err(|e| format!("not an ELF file ({e})"))?;
    for s in file.dynamic_symbols() {
        if !s.is_undefined() || s.kind() == SymbolKind::Section {
            continue;
        }
        let name = s.name().unwrap_or("");
        if name.is_empty() {
            continue;
        }
        let ok = RUNTIME_API.contains(&name) || (s.is_weak() && STARTUP_WEAK.contains(&name));
        if !ok {
            return Err(format!("it imports `{name}`"));
        }
    }
    let mut ranges = Vec::new();
    for sec in file.sections() {
        let exec = match sec.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0,
            _ => false,
        };
        if !exec || sec.size() == 0 {
            continue;
        }
        let bytes = sec
            .data()
            .map_err(|e| format!("section {} unreadable ({e})", sec.name().unwrap_or("?")))?;
        if let Some(at) = ptap_arch::decode::first_non_legacy(bytes, sec.address()) {
            return Err(format!(
                "its code uses AVX or other VEX/EVEX instructions (at {at:#x})"
            ));
        }
        ranges.push((sec.address(), sec.size()));
    }
    Ok(ranges)
}

/// Record the executable ranges of a C module loaded at `base` whose bytes
/// passed [`check_c_module`].
pub fn add_c_module(base: u64, ranges: &[(u64, u64)]) {
    if let Ok(mut r) = RANGES.lock() {
        r.extend(ranges.iter().map(|&(a, n)| (base + a, base + a + n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_handlers_and_recorded_ranges_are_known_nothing_else() {
        set_script_pre_handler(0x1000);
        assert!(is_known(0x1000));
        assert!(!is_known(0x1001));
        assert!(!is_known(0));
        add_c_module(0x7000_0000, &[(0x1000, 0x200)]);
        assert!(is_known(0x7000_1000));
        assert!(is_known(0x7000_11ff));
        assert!(!is_known(0x7000_1200));
        assert!(!is_known(0x7000_0fff));
    }
}
