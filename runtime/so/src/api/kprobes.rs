//! The Kprobes C API (`runtime/include/ptap/kprobes.h`).

use core::sync::atomic::Ordering;
use std::ffi::c_char;

use ptap_rt_core::abi;
use ptap_rt_core::abi::*;
use ptap_rt_core::base::sys;
use ptap_rt_core::fmt;
use ptap_rt_core::fmt::ArgReader;
use ptap_rt_core::fmt::Buf;
use ptap_rt_core::hit::site::EntryKind;
use ptap_rt_core::hit::threads;
use ptap_rt_core::hit::unwind::UNWOUND;
use ptap_rt_core::kprobes::optimize::with_state;
use ptap_rt_core::kprobes::register::flush_optimizer;
use ptap_rt_core::kprobes::register::register_entry;
use ptap_rt_core::kprobes::register::register_kp;
use ptap_rt_core::kprobes::register::register_ret;
use ptap_rt_core::kprobes::register::set_disabled;
use ptap_rt_core::kprobes::register::unregister_entry;
use ptap_rt_core::kprobes::register::unregister_kp;
use ptap_rt_core::kprobes::register::unregister_ret;
use ptap_rt_core::kprobes::register::EINVAL;
use ptap_rt_core::proc::symbols;
use ptap_rt_core::session::output::text;

/// # Safety
/// `p` must point to a `struct kprobe` that stays valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_kprobe(p: *mut Kprobe) -> i32 {
    // SAFETY: the caller's contract, passed on.
    unsafe { register_kp(p) }
}

/// # Safety
/// `p` must be NULL or a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_kprobe(p: *mut Kprobe) {
    // SAFETY: the caller's contract, passed on.
    unsafe { unregister_kp(p) }
}

/// # Safety
/// `kps` must point to `num` kprobe pointers.
#[no_mangle]
pub unsafe extern "C" fn register_kprobes(kps: *mut *mut Kprobe, num: i32) -> i32 {
    if kps.is_null() || num <= 0 {
        return -EINVAL;
    }
    // One optimizer pass (one barrier, three membarriers) for the batch.
    let nested = ptap_rt_core::kprobes::optimize::in_batch();
    ptap_rt_core::kprobes::optimize::set_batch(true);
    for i in 0..num as usize {
        // SAFETY: caller contract.
        let p = unsafe { *kps.add(i) };
        // SAFETY: caller contract (each kprobe valid until unregistered).
        let r = unsafe { register_entry(p, EntryKind::K) };
        if r < 0 {
            for k in 0..i {
                // SAFETY: caller contract.
                unregister_entry(unsafe { *kps.add(k) });
            }
            ptap_rt_core::kprobes::optimize::set_batch(nested);
            return r;
        }
    }
    ptap_rt_core::kprobes::optimize::set_batch(nested);
    if !nested {
        sys::membarrier_sync_core();
        flush_optimizer();
    }
    0
}

/// # Safety
/// `kps` must point to `num` kprobe pointers.
#[no_mangle]
pub unsafe extern "C" fn unregister_kprobes(kps: *mut *mut Kprobe, num: i32) {
    if kps.is_null() {
        return;
    }
    for i in 0..num.max(0) as usize {
        // SAFETY: caller contract.
        unregister_entry(unsafe { *kps.add(i) });
    }
}

/// # Safety
/// `p` must be a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn enable_kprobe(p: *mut Kprobe) -> i32 {
    // SAFETY: caller contract.
    unsafe { set_disabled(p, false) }
}

/// # Safety
/// `p` must be a registered kprobe.
#[no_mangle]
pub unsafe extern "C" fn disable_kprobe(p: *mut Kprobe) -> i32 {
    // SAFETY: caller contract.
    unsafe { set_disabled(p, true) }
}

/// # Safety
/// `jp` must point to a `struct jprobe` valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_jprobe(jp: *mut Jprobe) -> i32 {
    if jp.is_null() {
        return -EINVAL;
    }
    // SAFETY: caller contract.
    if unsafe { (*jp).entry.is_null() } {
        return -EINVAL;
    }
    // SAFETY: kp is the first field of the caller's jprobe, valid until
    // unregistered (caller contract).
    unsafe { register_entry(core::ptr::addr_of_mut!((*jp).kp), EntryKind::J(jp)) }
}

/// # Safety
/// `jp` must be NULL or a registered jprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_jprobe(jp: *mut Jprobe) {
    if !jp.is_null() {
        // SAFETY: caller contract.
        unregister_entry(unsafe { core::ptr::addr_of_mut!((*jp).kp) });
    }
}

/// # Safety
/// `rp` must point to a `struct kretprobe` valid until unregistered.
#[no_mangle]
pub unsafe extern "C" fn register_kretprobe(rp: *mut Kretprobe) -> i32 {
    // SAFETY: the caller's contract, passed on.
    unsafe { register_ret(rp) }
}

/// # Safety
/// `rp` must be NULL or a registered kretprobe.
#[no_mangle]
pub unsafe extern "C" fn unregister_kretprobe(rp: *mut Kretprobe) {
    // SAFETY: the caller's contract, passed on.
    unsafe { unregister_ret(rp) }
}

/// Number of probe sites on the jump path and on the trap path (bench, -v).
///
/// # Safety
/// Both pointers must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_opt_stats(optimized: *mut u64, trap: *mut u64) {
    let opt = with_state(|s| s.sites.values().filter(|o| o.optimized).count()) as u64;
    let all = ptap_rt_core::kprobes::register::site_count() as u64;
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !optimized.is_null() {
            *optimized = opt;
        }
        if !trap.is_null() {
            *trap = all.saturating_sub(opt);
        }
    }
}

/// `ptap_kretprobe_unwound()` (runtime/include/ptap/kprobes.h): this
/// process's [`UNWOUND`].
#[no_mangle]
pub extern "C" fn ptap_kretprobe_unwound() -> core::ffi::c_ulong {
    UNWOUND.load(Ordering::Relaxed) as core::ffi::c_ulong
}

pub const PRINTK_MAX: usize = 1024;

/// `int printk(const char *fmt, ...)`: spills the five integer argument
/// registers after fmt and hands them, with the caller's stack arguments,
/// to [`printk_impl`]. A naked function so it is exported from the cdylib
/// and keeps the SysV variadic register state intact.
///
/// # Safety
/// C varargs contract: the arguments must match `fmt`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn printk() {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "push rbp",
        ".cfi_def_cfa_offset 16",
        ".cfi_offset rbp, -16",
        "mov rbp, rsp",
        ".cfi_def_cfa_register rbp",
        "sub rsp, 48",
        "mov [rsp], rsi",
        "mov [rsp + 8], rdx",
        "mov [rsp + 16], rcx",
        "mov [rsp + 24], r8",
        "mov [rsp + 32], r9",
        "mov rsi, rsp",
        "lea rdx, [rbp + 16]",
        "call {imp}",
        "leave",
        ".cfi_def_cfa rsp, 8",
        "ret",
        ".cfi_endproc",
        imp = sym printk_impl,
    );
}

/// Body of `printk`: `regs` holds the five register arguments after fmt,
/// `stack` the caller's stack arguments.
unsafe extern "C" fn printk_impl(fmt: *const c_char, regs: *const u64, stack: *const u64) -> i32 {
    if fmt.is_null() {
        return 0;
    }
    let mut data = [0u8; PRINTK_MAX];
    let mut out = Buf {
        data: &mut data,
        len: 0,
    };
    let mut f = fmt as *const u8;
    // Kernel log level prefixes: "<N>" or KERN_SOH + level.
    // SAFETY: fmt is a NUL-terminated C string (C caller contract).
    unsafe {
        if *f == b'<' && (*f.add(1)).is_ascii_digit() && *f.add(2) == b'>' {
            f = f.add(3);
        } else if *f == 1 && *f.add(1) != 0 {
            f = f.add(2);
        }
        let mut args = ArgReader::new(regs, 5, stack);
        fmt::format(&mut out, f, &mut args);
    }
    let n = out.len;
    text(out.as_bytes());
    n as i32
}

/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn kallsyms_lookup_name(name: *const c_char) -> u64 {
    if name.is_null() {
        return 0;
    }
    // SAFETY: caller contract.
    let n = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    symbols::lookup(&n).map_or(0, |f| f.addr)
}

/// Symbolized backtrace of the probed context (inside a handler) or of the
/// caller, to ptap's output.
#[no_mangle]
pub extern "C" fn dump_stack() {
    let ts = threads::current();
    if let Some(t) = ts {
        // SAFETY: this thread's slot; cur_regs points to live regs while a handler runs.
        let r = unsafe { (*t).cur_regs };
        if r != 0 {
            // SAFETY: as above.
            let regs = unsafe { &*(r as *const abi::PtRegs) };
            // SAFETY: ts is this thread's own slot.
            unsafe { ptap_rt_core::hit::backtrace::dump_regs(ts, regs, false) };
            return;
        }
    }
    // Not in a handler: unwind from here (this function's own CFI row at
    // the captured ip), and print from our caller on. Outside the hit path
    // the symbol index may be built now.
    symbols::get_or_build();
    let (ip, sp, bp, bx, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: only reads registers.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            "mov {bx}, rbx",
            "mov {r12}, r12",
            "mov {r13}, r13",
            "mov {r14}, r14",
            "mov {r15}, r15",
            ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp, bx = out(reg) bx,
            r12 = out(reg) r12, r13 = out(reg) r13, r14 = out(reg) r14, r15 = out(reg) r15,
            options(nomem, nostack, preserves_flags),
        )
    };
    let regs = abi::PtRegs {
        ip,
        sp,
        bp,
        bx,
        r12,
        r13,
        r14,
        r15,
        ..Default::default()
    };
    // SAFETY: ts is this thread's own slot.
    unsafe { ptap_rt_core::hit::backtrace::dump_regs(ts, &regs, true) };
}
