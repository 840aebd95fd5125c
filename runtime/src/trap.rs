//! The hit path: SIGTRAP (int3 probes, single-step, kretprobe trampoline,
//! jprobe_return) and fault signals (handler faults, faults in displaced
//! instructions, chaining to the target's own handlers).
//!
//! Everything here runs in signal context: no allocation, no locks, no libc
//! calls a user might probe (raw syscalls only).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, Ordering};

use ptap_arch::regs::flags as rf;
use ptap_arch::xol::{self, Kind, StepResult};

use crate::abi::*;
use crate::probes::{self, EntryKind, InstHdr, Site};
use crate::threads::{self, ThreadState, JPROBE_STACK};
use crate::{output, sys};

pub const SIGILL: i32 = 4;
pub const SIGTRAP: i32 = 5;
pub const SIGBUS: i32 = 7;
pub const SIGFPE: i32 = 8;
pub const SIGSEGV: i32 = 11;
// SIGSYS: syscall probes (runtime/src/syscall/) trap with it; it must never be blocked or displaced.
pub const MANAGED: [i32; 6] = [
    SIGTRAP,
    SIGSEGV,
    SIGBUS,
    SIGILL,
    SIGFPE,
    crate::syscall::handler::SIGSYS,
];

pub fn managed(sig: i32) -> bool {
    MANAGED.contains(&sig)
}

/// Bit mask of the managed signals (never blocked by the target).
pub fn managed_mask() -> u64 {
    MANAGED.iter().fold(0, |m, &s| m | sys::sigbit(s))
}

const TRAP_TRACE: i32 = 2;
const SI_KERNEL: i32 = 0x80;

// ------------------------------------------------------------ asm helpers

core::arch::global_asm!(
    ".text",
    // u64 ptap_rt_guarded_call(fn, a0, a1, a2, guard)
    ".globl ptap_rt_guarded_call",
    ".hidden ptap_rt_guarded_call",
    ".type ptap_rt_guarded_call,@function",
    "ptap_rt_guarded_call:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    "push rbx",
    ".cfi_adjust_cfa_offset 8",
    "push r12",
    ".cfi_adjust_cfa_offset 8",
    "push r13",
    ".cfi_adjust_cfa_offset 8",
    "push r14",
    ".cfi_adjust_cfa_offset 8",
    "push r15",
    ".cfi_adjust_cfa_offset 8",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "mov r12, r8",
    "mov [r12], rsp",
    "mov dword ptr [r12 + 8], 1",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "call rax",
    "mov dword ptr [r12 + 8], 0",
    ".globl ptap_rt_guard_recover",
    ".hidden ptap_rt_guard_recover",
    "ptap_rt_guard_recover:",
    // A fault inside a backward copy (std) must not leak DF=1 into Rust code.
    "cld",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    ".cfi_adjust_cfa_offset -56",
    "ret",
    ".cfi_endproc",
    ".size ptap_rt_guarded_call, .-ptap_rt_guarded_call",
    // The kretprobe trampoline: a hijacked return lands here.
    ".globl ptap_rt_kretprobe_trampoline",
    ".hidden ptap_rt_kretprobe_trampoline",
    ".type ptap_rt_kretprobe_trampoline,@function",
    "ptap_rt_kretprobe_trampoline:",
    "int3",
    "ud2",
    ".size ptap_rt_kretprobe_trampoline, .-ptap_rt_kretprobe_trampoline",
);

/// `void jprobe_return(void)`: the end of a jprobe entry; traps back into
/// the runtime, which restores the probed function's registers and stack.
///
/// # Safety
/// Only valid at the end of a jprobe entry handler.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn jprobe_return() {
    // A jump-path jprobe entry (optprobe.rs, ptap_rt_jp_call) is running on
    // this thread when its TLS holds a frame: resume there, no trap.
    core::arch::naked_asm!(
        "mov rax, qword ptr [rip + ptap_rt_tls_thread@GOTTPOFF]",
        "mov rax, qword ptr fs:[rax + 16]",
        "test rax, rax",
        "jnz ptap_rt_jp_resume_ok",
        ".globl ptap_rt_jprobe_return_int3",
        ".hidden ptap_rt_jprobe_return_int3",
        "ptap_rt_jprobe_return_int3:",
        "int3",
        "ud2"
    );
}

extern "C" {
    fn ptap_rt_jprobe_return_int3();
}

// Trap-path jprobe entry with a stack that is not 16-byte aligned at the
// call (rsp % 16 == 0 at the probed function's first instruction: GCC omits
// the alignment when it calls a local function it knows does not need it).
// The entry, compiled separately, expects the ABI's alignment (movaps on its
// frame faulted). Entered from the SIGTRAP handler's sigreturn with the
// probed function's registers and rsp, r11 = the entry: copy the top 192
// stack bytes 8 bytes lower plus the copy's size (push [rsp+192] reads
// the next older qword at a constant offset), so that the entry sees its
// stack arguments at the usual offsets with rsp % 16 == 8; the copy's return
// slot points at jprobe_return's int3, so an entry that returns without
// jprobe_return() still comes back to the runtime. The stub itself runs in
// thread context after the signal frame is gone, so it may use the stack
// below the probed function's rsp (free at a function's entry).
// Clobbers r11 and flags only (neither carries an argument).
core::arch::global_asm!(
    ".pushsection .text.ptap_rt_jp_realign,\"ax\",@progbits",
    ".globl ptap_rt_jp_realign",
    ".hidden ptap_rt_jp_realign",
    ".type ptap_rt_jp_realign,@function",
    "ptap_rt_jp_realign:",
    "sub rsp, 8",
    ".rept 24",
    "push qword ptr [rsp + 192]",
    ".endr",
    "push r11",
    "lea r11, [rip + ptap_rt_jprobe_return_int3]",
    "mov qword ptr [rsp + 8], r11",
    "pop r11",
    "jmp r11",
    ".size ptap_rt_jp_realign, .-ptap_rt_jp_realign",
    ".popsection",
);

extern "C" {
    fn ptap_rt_jp_realign();
}

extern "C" {
    fn ptap_rt_guarded_call(
        f: usize,
        a0: usize,
        a1: usize,
        a2: usize,
        guard: *mut threads::Guard,
    ) -> u64;
    fn ptap_rt_guard_recover();
    fn ptap_rt_kretprobe_trampoline();
}

/// The address hijacked return addresses point to: the trap-free return
/// stub (`optprobe::ensure_ret_stub`, built at the first kretprobe
/// registration unless PTAP_NO_OPTIMIZE=1), else the int3 trampoline.
/// Fixed before the first hijack; never changes afterwards.
pub fn trampoline_addr() -> u64 {
    let s = crate::optprobe::ret_stub();
    if s != 0 {
        s
    } else {
        int3_trampoline_addr()
    }
}

/// The int3 kretprobe trampoline (trap path).
pub fn int3_trampoline_addr() -> u64 {
    ptap_rt_kretprobe_trampoline as *const () as u64
}

/// Call `f(a0, a1, a2)` so that a fault inside it aborts the call instead of
/// the process. Returns None if it faulted.
///
/// # Safety
/// `f` must be a C function taking up to three integer/pointer arguments.
pub unsafe fn guarded(
    ts: *mut ThreadState,
    f: usize,
    a0: usize,
    a1: usize,
    a2: usize,
) -> Option<u64> {
    // SAFETY: ts is this thread's slot; the asm saves/restores callee-saved regs.
    unsafe {
        let g = core::ptr::addr_of_mut!((*ts).guard);
        let outer = core::ptr::read(g);
        let outer_regs = (*ts).cur_regs;
        (*ts).cur_regs = a1;
        (*g).faulted = 0;
        // A handler that calls libc may change errno: the interrupted code
        // must find it as it left it.
        let errno = sys::errno_save();
        let r = ptap_rt_guarded_call(f, a0, a1, a2, g);
        sys::errno_restore(errno);
        (*ts).cur_regs = outer_regs;
        let faulted = (*g).faulted != 0;
        // Restore an outer guard (a handler running inside a handler's fault path).
        (*g).saved_rsp = outer.saved_rsp;
        (*g).active = outer.active;
        (*g).faulted = 0;
        if faulted {
            None
        } else {
            Some(r)
        }
    }
}

/// Abandon the guarded call running on this thread, from a signal handler
/// that interrupted it: `uc` resumes at the guard's recovery point, as
/// after a fault (the guarded call returns None). Not while a probe
/// handler runs on top of it (false: ask again later).
///
/// # Safety
/// `ts` is this thread's slot; `uc` the kernel's context of the running
/// signal handler.
pub(crate) unsafe fn abandon_guarded(ts: *mut ThreadState, uc: *mut Uc) -> bool {
    // SAFETY: contract.
    unsafe {
        if (*ts).guard.active == 0 || (*ts).in_handler != 0 {
            return false;
        }
        let g = &mut (*ts).guard;
        g.active = 0;
        g.faulted = 1;
        g.fault_trapno = u64::MAX;
        g.fault_ip = greg(uc, libc::REG_RIP);
        g.fault_addr = 0;
        set_greg(uc, libc::REG_RSP, g.saved_rsp);
        set_greg(uc, libc::REG_RIP, ptap_rt_guard_recover as *const () as u64);
        set_greg(uc, libc::REG_RAX, 0);
    }
    true
}

// ------------------------------------------------------------ ucontext <-> regs

type Uc = libc::ucontext_t;

fn greg(uc: *mut Uc, r: c_int) -> u64 {
    // SAFETY: uc is the kernel-provided context.
    unsafe { (*uc).uc_mcontext.gregs[r as usize] as u64 }
}

fn set_greg(uc: *mut Uc, r: c_int, v: u64) {
    // SAFETY: uc is the kernel-provided context.
    unsafe { (*uc).uc_mcontext.gregs[r as usize] = v as i64 }
}

pub fn regs_from(uc: *mut Uc) -> PtRegs {
    use libc::*;
    PtRegs {
        r15: greg(uc, REG_R15),
        r14: greg(uc, REG_R14),
        r13: greg(uc, REG_R13),
        r12: greg(uc, REG_R12),
        bp: greg(uc, REG_RBP),
        bx: greg(uc, REG_RBX),
        r11: greg(uc, REG_R11),
        r10: greg(uc, REG_R10),
        r9: greg(uc, REG_R9),
        r8: greg(uc, REG_R8),
        ax: greg(uc, REG_RAX),
        cx: greg(uc, REG_RCX),
        dx: greg(uc, REG_RDX),
        si: greg(uc, REG_RSI),
        di: greg(uc, REG_RDI),
        orig_ax: u64::MAX,
        ip: greg(uc, REG_RIP),
        cs: greg(uc, REG_CSGSFS) & 0xffff,
        flags: greg(uc, REG_EFL),
        sp: greg(uc, REG_RSP),
        ss: 0x2b,
    }
}

pub fn regs_to(uc: *mut Uc, r: &PtRegs) {
    use libc::*;
    set_greg(uc, REG_R15, r.r15);
    set_greg(uc, REG_R14, r.r14);
    set_greg(uc, REG_R13, r.r13);
    set_greg(uc, REG_R12, r.r12);
    set_greg(uc, REG_RBP, r.bp);
    set_greg(uc, REG_RBX, r.bx);
    set_greg(uc, REG_R11, r.r11);
    set_greg(uc, REG_R10, r.r10);
    set_greg(uc, REG_R9, r.r9);
    set_greg(uc, REG_R8, r.r8);
    set_greg(uc, REG_RAX, r.ax);
    set_greg(uc, REG_RCX, r.cx);
    set_greg(uc, REG_RDX, r.dx);
    set_greg(uc, REG_RSI, r.si);
    set_greg(uc, REG_RDI, r.di);
    set_greg(uc, REG_RIP, r.ip);
    // Only the status flags, DF and TF may be changed by handlers.
    let keep = greg(uc, REG_EFL) & !(rf::STATUS | rf::DF | rf::TF);
    set_greg(
        uc,
        REG_EFL,
        keep | (r.flags & (rf::STATUS | rf::DF | rf::TF)),
    );
    set_greg(uc, REG_RSP, r.sp);
}

// ------------------------------------------------------------ counters

/// Hits that found their probe (all threads), for tests and ptap -v.
pub static HITS: AtomicU64 = AtomicU64::new(0);
/// SIGTRAPs taken by the runtime (int3 + single-step + trampolines).
pub static TRAPS: AtomicU64 = AtomicU64::new(0);

// ------------------------------------------------------------ the hit path

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
        crate::symbols::symbolize((*kp).addr as u64, &mut b);
        b.extend(b" faulted (trap ");
        output::push_dec(&mut b, trapno as u64);
        b.extend(b", address ");
        output::push_hex(&mut b, faddr);
        b.extend(b", ip ");
        crate::symbols::symbolize(fip, &mut b);
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

unsafe fn call_posts(ts: *mut ThreadState, site: &Site, regs: &mut PtRegs) {
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

fn write_u64(addr: u64, v: u64) -> bool {
    // SAFETY: emulated pushes go to the thread's own stack, which was just
    // used by the instruction stream; a bad sp would have faulted there too.
    unsafe { core::ptr::write_unaligned(addr as *mut u64, v) };
    true
}

/// Reap kretprobe instances whose frames are gone: entries deeper than (or
/// at) `sp` when a new call starts at `sp` (longjmp left them behind).
/// This thread's signal alternate stack, if one is set: [lo, hi).
pub(crate) fn altstack() -> Option<(u64, u64)> {
    #[repr(C)]
    struct StackT {
        sp: u64,
        flags: i32,
        size: u64,
    }
    let mut old = StackT {
        sp: 0,
        flags: 0,
        size: 0,
    };
    // SAFETY: sigaltstack(NULL, &old) only writes `old`.
    let r = unsafe { sys::syscall3(131, 0, &mut old as *mut StackT as usize, 0) };
    if r != 0 || old.flags & 2 != 0 || old.size == 0 {
        return None; // SS_DISABLE
    }
    Some((old.sp, old.sp + old.size))
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
pub(crate) unsafe fn reap_at_entry(ts: *mut ThreadState, sp: u64) {
    // SAFETY: `sp` points at the entered function's return address slot.
    let tail_call = unsafe { core::ptr::read(sp as *const u64) } == trampoline_addr();
    // SAFETY: forwarded contract.
    unsafe { reap_below(ts, sp, !tail_call) };
}

pub(crate) unsafe fn reap_below(ts: *mut ThreadState, sp: u64, inclusive: bool) {
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
        let alt = altstack();
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
            crate::unwind::count_unwound(1);
            probes::release(h);
        }
    }
}

pub(crate) unsafe fn kret_entry(
    ts: *mut ThreadState,
    rec: *const probes::RetRec,
    regs: &mut PtRegs,
) {
    // SAFETY: rec is never freed; rp is live while rec.alive (grace periods).
    unsafe {
        let rec = &*rec;
        if !rec.alive.load(Ordering::Acquire) {
            return;
        }
        let rp = rec.rp;
        let Some(h) = rec.alloc() else {
            kretprobe_missed(rp);
            return;
        };
        let ri = probes::public(h);
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
                    probes::release(h);
                    return;
                }
                None => {
                    handler_faulted(ts, core::ptr::addr_of_mut!((*rp).kp), regs);
                    probes::release(h);
                    return;
                }
            }
        }
        core::ptr::write(regs.sp as *mut u64, trampoline_addr());
        (*h).next = (*ts).kret_head;
        (*ts).kret_head = h as usize;
    }
}

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

unsafe fn on_int3(ts: *mut ThreadState, addr: u64, uc: *mut Uc, info: *mut libc::siginfo_t) {
    threads::enter(ts);
    let Some(site) = probes::lookup(addr) else {
        threads::leave(ts);
        // Not ours (any more). If the byte was restored, re-run it.
        // SAFETY: addr is the int3 that just executed: mapped.
        if unsafe { core::ptr::read_volatile(addr as *const u8) } != 0xcc {
            set_greg(uc, libc::REG_RIP, addr);
        } else {
            // SAFETY: forwarding the kernel's arguments.
            unsafe { chain(SIGTRAP, info, uc, None) };
        }
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
            for e in &site.probes {
                if e.is_dead() {
                    continue;
                }
                match e.kind {
                    EntryKind::R(rec) => kretprobe_missed((*rec).rp),
                    _ => kprobe_missed(e.kp),
                }
            }
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
                EntryKind::R(rec) => kret_entry(ts, rec, &mut regs),
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
                (*ts).jp_stack.as_mut_ptr(),
                JPROBE_STACK,
            );
            // xmm0-7 (float arguments) too: the entry may use them, and the
            // FPU state at jprobe_return's trap is the entry's.
            let fp = (*uc).uc_mcontext.fpregs;
            if !fp.is_null() {
                core::ptr::copy_nonoverlapping(
                    core::ptr::addr_of!((*fp)._xmm) as *const u8,
                    crate::optprobe::jp_xmm_area(),
                    128,
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
    threads::enter(ts);
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
    threads::leave(ts);
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
        let ri = probes::public(h);
        let ret = (*ri).ret_addr as u64;
        let rec = &*(*h).rec;
        regs.ip = ret;
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
        probes::release(h);
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
        core::ptr::copy_nonoverlapping((*ts).jp_stack.as_ptr(), regs.sp as *mut u8, JPROBE_STACK);
        let fp = (*uc).uc_mcontext.fpregs;
        if !fp.is_null() {
            core::ptr::copy_nonoverlapping(
                crate::optprobe::jp_xmm_area() as *const u8,
                core::ptr::addr_of_mut!((*fp)._xmm) as *mut u8,
                128,
            );
        }
        let posts = site.needs_post();
        run_displaced(ts, site, regs, uc, posts);
    }
}

/// How far below a guarded call's saved rsp a fault still counts as the
/// guarded handler's own (its frames plus anything it calls; larger than a
/// default 8 MiB thread stack would be a different stack).
const GUARD_STACK_SPAN: u64 = 8 << 20;

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
    if code == TRAP_TRACE && unsafe { crate::optprobe::divert_trap(uc) } {
        return;
    }
    // An int3 of a libc syscall site being moved out of libc (syscall probes).
    // SAFETY: uc is the kernel's context for this SIGTRAP.
    if code == SI_KERNEL && unsafe { crate::syscall::sites::on_int3(uc) } {
        return;
    }
    let rip = greg(uc, libc::REG_RIP);
    let Some(ts) = threads::current() else {
        // No thread slot: cannot run handlers; execute the instruction as if
        // unprobed (count nothing: no probe known).
        // SAFETY: forwarding.
        unsafe { no_slot_fallback(sig, info, uc, rip) };
        return;
    };
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
                if site.post_slot != 0 && addr == probes::post_int3(site) {
                    on_post_int3(ts, site, uc);
                    return;
                }
            }
            on_int3(ts, addr, uc, info);
            return;
        }
        chain(sig, info, uc, None);
    }
}

unsafe fn no_slot_fallback(sig: c_int, info: *mut libc::siginfo_t, uc: *mut Uc, rip: u64) {
    let addr = rip.wrapping_sub(1);
    if let Some(site) = probes::lookup(addr) {
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
    // SAFETY: forwarding.
    unsafe { chain(sig, info, uc, None) };
}

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
    if code == -1 && unsafe { crate::loader::modcall::abandon_request(info, uc) } {
        return;
    }
    let rip = greg(uc, libc::REG_RIP);
    let ts = threads::current();
    // SAFETY: ts is ours when Some; uc is the kernel's.
    unsafe {
        if let Some(ts) = ts {
            // 1. A probe handler faulted: abort it. Only when the fault is
            //    in the guarded call's context: below its saved rsp, on
            //    the same stack. A guard left active by a handler that was
            //    abandoned (a target handler that siglongjmp'ed out of it)
            //    must not "recover" an unrelated fault to a stale stack.
            let sp = greg(uc, libc::REG_RSP);
            let gsp = (*ts).guard.saved_rsp;
            if code > 0 && (*ts).guard.active != 0 && sp < gsp && gsp - sp < GUARD_STACK_SPAN {
                let g = &mut (*ts).guard;
                g.active = 0;
                g.faulted = 1;
                g.fault_trapno = greg(uc, libc::REG_TRAPNO);
                g.fault_ip = rip;
                g.fault_addr = (*info).si_addr() as u64;
                set_greg(uc, libc::REG_RSP, g.saved_rsp);
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
            if let Some((orig, delta, at)) = crate::optprobe::fault_owner(rip) {
                let mut regs = regs_from(uc);
                regs.ip = orig;
                regs.sp = regs.sp.wrapping_sub(delta as u64);
                if let Some(ts) = ts {
                    threads::enter(ts);
                    let handled = probes::lookup(at)
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
            if let Some((base, orig)) = probes::slot_owner(rip) {
                let mut regs = regs_from(uc);
                regs.ip = orig;
                if let Some(ts) = ts {
                    threads::enter(ts);
                    let handled = probes::lookup(orig).is_some_and(|site| {
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

// ------------------------------------------------------------ chaining

/// The target's own actions for the managed signals (handler, flags, mask).
pub static USER_ACT: [[AtomicU64; 3]; 65] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; 65];

/// Die of `sig` as if we were not there: default disposition, re-raise.
///
/// # Safety
/// `uc` must be the valid, writable `ucontext_t` the kernel passed to the
/// signal handler this is called from (its signal mask is edited).
pub unsafe fn die(sig: i32, uc: *mut Uc) {
    let dfl = sys::KSigaction::default();
    // SAFETY: resetting a disposition and unblocking sig in the context we
    // return to (uc valid by contract); the pending signal then kills the
    // process.
    unsafe {
        sys::rt_sigaction(sig, Some(&dfl), None);
        let m = core::ptr::addr_of_mut!((*uc).uc_sigmask) as *mut u64;
        *m &= !sys::sigbit(sig);
    }
    sys::tgkill(sys::getpid(), sys::gettid(), sig);
}

fn signame(sig: i32) -> &'static [u8] {
    match sig {
        SIGSEGV => b"SIGSEGV",
        SIGBUS => b"SIGBUS",
        SIGILL => b"SIGILL",
        SIGFPE => b"SIGFPE",
        SIGTRAP => b"SIGTRAP",
        _ => b"signal",
    }
}

/// Deliver `sig` to the target's own handler, with its flags and mask, or
/// apply the default action. `orig` is set when the fault happened in a
/// displaced instruction (its original address), for the death report.
///
/// # Safety
/// Kernel-provided signal arguments.
pub unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, uc: *mut Uc, orig: Option<u64>) {
    let a = &USER_ACT[sig as usize];
    let handler = a[0].load(Ordering::Acquire) as usize;
    let flags = a[1].load(Ordering::Acquire);
    let mask = a[2].load(Ordering::Acquire);
    match handler {
        0 => {
            if let Some(o) = orig {
                let mut data = [0u8; 256];
                let mut b = crate::fmt::Buf {
                    data: &mut data,
                    len: 0,
                };
                b.extend(b"ptap: target ");
                b.extend(signame(sig));
                b.extend(b" at ");
                crate::symbols::symbolize(o, &mut b);
                b.extend(b"\n");
                output::diag(b.as_bytes());
            }
            // SAFETY: uc is the kernel's context (chain's contract).
            unsafe { die(sig, uc) };
        }
        1 => {
            if sig != SIGTRAP {
                // SAFETY: as above.
                unsafe { die(sig, uc) };
            }
        }
        h => {
            // SAFETY: uc_sigmask is the mask the interrupted code had.
            let mut m = unsafe { *(core::ptr::addr_of!((*uc).uc_sigmask) as *const u64) } | mask;
            if flags & sys::SA_NODEFER == 0 {
                m |= sys::sigbit(sig);
            }
            // The managed signals stay deliverable while the target's
            // handler runs (a probe hit in it with SIGTRAP blocked would be
            // fatal, a trapped system call with SIGSYS blocked too), even
            // in the target's own SIGTRAP or SIGSYS handler: it behaves as
            // if installed with SA_NODEFER. The fault signals keep their
            // own block (a fault in the target's fault handler is fatal,
            // as without ptap).
            let syscall_trap = crate::syscall::handler::SIGSYS;
            let own = if sig == SIGTRAP || sig == syscall_trap {
                0
            } else {
                sys::sigbit(sig)
            };
            m &= !managed_mask() | own;
            // SAFETY: setting our own mask for the duration of the target's handler.
            unsafe { sys::rt_sigprocmask(2, Some(&m), None) };
            if flags & sys::SA_RESETHAND != 0 {
                a[0].store(0, Ordering::Release);
            }
            // SAFETY: the target installed this handler for this signal;
            // on its alternate stack if it asked for one (SA_ONSTACK).
            unsafe {
                crate::signals::onstack::call_handler(h, flags, sig, info, uc as *mut c_void)
            };
        }
    }
}

/// Install the runtime's handlers, remembering whatever was installed before.
pub fn install() {
    for &sig in &MANAGED {
        let mut old = sys::KSigaction::default();
        // SAFETY: query only.
        unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) };
        let a = &USER_ACT[sig as usize];
        a[0].store(old.handler as u64, Ordering::Release);
        a[1].store(old.flags, Ordering::Release);
        a[2].store(old.mask, Ordering::Release);
        let handler = if sig == SIGTRAP {
            on_sigtrap as *const () as usize
        } else {
            on_fault as *const () as usize
        };
        // Block asynchronous signals while our handler runs (the target's
        // handlers could otherwise run in the middle of the hit path); the
        // synchronous ones stay open (a handler may fault, nest, or step).
        // SIGTRAP runs on the thread's own stack: handlers (printk buffers,
        // dump_stack) need more room than a typical sigaltstack (Rust and Go
        // give every thread one of ~8 KiB). Faults keep SA_ONSTACK so that
        // the target's stack-overflow handlers still work.
        let onstack = if sig == SIGTRAP { 0 } else { sys::SA_ONSTACK };
        let act = sys::KSigaction {
            handler,
            flags: sys::SA_SIGINFO | sys::SA_NODEFER | onstack | sys::SA_RESTART,
            restorer: 0,
            mask: !managed_mask(),
        };
        // SAFETY: installing our handler.
        unsafe { sys::rt_sigaction(sig, Some(&act), None) };
    }
}
