//! Jump-optimized probes ("optprobes") and the trap-free kretprobe return
//! trampoline.
//!
//! Where `ptap_arch::optprobe::check_region` allows it (Linux's
//! `can_optimize` rules on the whole decoded function) and no probe of the
//! site has a post_handler or is a jprobe, the int3 at a probe site is
//! replaced by a 5-byte `jmp` to a per-site trampoline built by
//! `ptap_arch::trampoline::optprobe_trampoline`: it skips the red zone, saves
//! the registers into a `pt_regs`, calls [`opt_hit`] (the same handlers, in
//! the same order, under the same reentrancy rule as the trap path), restores
//! the registers, runs the relocated displaced instructions and jumps back.
//!
//! Live patching (see `optimize_pending` / `unoptimize`), as Linux does it:
//! 1. the site is armed as a trap probe first (int3 at byte 0, membarrier
//!    SYNC_CORE); its snapshot routes trap hits through a *region slot* (all
//!    the replaced instructions, relocated, then `jmp region_end`), so no
//!    trap hit ever resumes inside bytes 1..n;
//! 2. a grace period (every thread that was in the trap hit path has left),
//!    then a signal barrier: every other thread reports the ip it was
//!    interrupted at; a thread inside bytes 1..n of a region (or in the
//!    site's old single-instruction slot, which jumps back into the region)
//!    blocks that site; we retry for a while, then leave it on the trap path;
//! 3. the jump's tail bytes (1..5), membarrier, the head byte (0xe9),
//!    membarrier.
//!
//! Unoptimizing is the reverse: int3 over the head, membarrier, original
//! tail bytes, membarrier (no thread can be inside bytes 1..n: the jump was
//! there). Trampolines and region slots are never freed: they are kept per
//! address and reused when the same address is probed again, so no thread
//! can ever be inside freed code and the memory is bounded by the number of
//! distinct probed addresses.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::Mutex;

use ptap_arch::decode;
use ptap_arch::optprobe::{self as aopt, Region};
use ptap_arch::regs::{flags as rf, offset};
use ptap_arch::trampoline::{self, Handler, VectorSave};

use crate::abi::*;
use crate::probes::{self, EntryKind};
use crate::threads::{self, ThreadState};
use crate::{output, sys, trap};

// ------------------------------------------------------------ configuration

/// Jump optimization is on unless `PTAP_NO_OPTIMIZE=1` (read once).
static DISABLED: AtomicU32 = AtomicU32::new(2); // 2 = not read yet

pub fn enabled() -> bool {
    let v = DISABLED.load(Ordering::Relaxed);
    if v != 2 {
        return v == 0;
    }
    let off = std::env::var("PTAP_NO_OPTIMIZE").is_ok_and(|s| !s.is_empty() && s != "0");
    DISABLED.store(off as u32, Ordering::Relaxed);
    !off
}

/// Vector state the trampolines save around handlers (the argument for each
/// choice is in docs/optprobes.md):
/// - at a function entry (and at a return) only argument/return registers
///   can be live (SysV: xmm/ymm/zmm0-7, and everything else is clobbered by
///   a call anyway): their full width is saved, then `vzeroupper`, whatever
///   the handler is;
/// - anywhere else any vector register may be live. For handlers whose code
///   ptap knows (compiled scripts: Cranelift with fixed SSE-only ISA flags,
///   and the runtime, which calls no libc routine on the hit path), 16
///   registers at full width, MXCSR, `vzeroupper`; for other handlers (C
///   modules may call anything, e.g. an AVX-512 memcpy using ymm16-31) the
///   whole XSAVE state.
///
/// `PTAP_OPT_XSAVE=1` forces XSAVE everywhere.
fn vector_save(at_entry: bool, known_handlers: bool) -> VectorSave {
    static FORCE: AtomicU32 = AtomicU32::new(2); // 2 = not read yet
    let mut force = FORCE.load(Ordering::Relaxed);
    if force == 2 {
        force = std::env::var("PTAP_OPT_XSAVE").is_ok_and(|s| s == "1") as u32;
        FORCE.store(force, Ordering::Relaxed);
    }
    let xsave = || match trampoline::xsave_size() {
        Some(size) => VectorSave::Xsave { size },
        None => VectorSave::Xmm,
    };
    if force == 1 {
        return xsave();
    }
    let avx = trampoline::avx_enabled();
    let zmm = trampoline::avx512_enabled();
    match (at_entry, avx) {
        (true, true) => VectorSave::Wide {
            n: 8,
            zmm,
            mxcsr: false,
        },
        (true, false) => VectorSave::Xmm,
        (false, true) if known_handlers => VectorSave::Wide {
            n: 16,
            zmm,
            mxcsr: true,
        },
        _ => xsave(),
    }
}

// ------------------------------------------------------------ per-thread state

// A 32-byte initial-exec TLS block: [ThreadState pointer, its tid, frame of a
// running jump-path jprobe entry (see ptap_rt_jp_call), the value a buggy
// entry returned], then 128 bytes: xmm0-7 of a trap-path jprobe hit. Not
// `thread_local!` (global-dynamic TLS may call malloc on first touch in a
// dlopen'ed object, and malloc may be probed); initial-exec TLS is part of
// the thread's static block, zeroed when a thread starts.
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 4",
    ".globl ptap_rt_tls_thread",
    ".hidden ptap_rt_tls_thread",
    ".type ptap_rt_tls_thread,@object",
    ".size ptap_rt_tls_thread,160",
    "ptap_rt_tls_thread:",
    ".zero 160",
    ".popsection",
);

// Jump-path jprobe: run the entry with the probed function's registers
// (integer and callee-saved from the frame, xmm0-7 from the trampoline's
// vector save area) on a copy of its top 192 stack bytes, whose return slot
// points at ptap_rt_jp_resume. jprobe_return() (trap.rs) jumps to
// ptap_rt_jp_resume when this thread's TLS holds a frame; so does a plain
// return of a buggy entry. The entry's register and stack changes are
// discarded (mirror principle): the trampoline restores its frame.
//   rdi = &pt_regs, rsi = entry, rdx = vector area or 0, rcx = 1 xmm (16-byte
//   stride), 2 ymm (32-byte stride), 3 XSAVE (legacy xmm at +160), 4 zmm
//   (64-byte stride). After a ymm or zmm load the entry ran with dirty upper
//   halves: `vzeroupper` on the way back (the runtime's code is legacy SSE).
core::arch::global_asm!(
    ".text",
    ".globl ptap_rt_jp_call",
    ".hidden ptap_rt_jp_call",
    ".type ptap_rt_jp_call,@function",
    "ptap_rt_jp_call:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 24",
    "mov qword ptr [rbp - 56], rcx",
    "mov r12, qword ptr [rip + ptap_rt_tls_thread@GOTTPOFF]",
    "add r12, qword ptr fs:[0]",
    "mov rax, qword ptr [r12 + 16]",
    "mov qword ptr [rbp - 48], rax",
    "mov qword ptr [r12 + 16], rbp",
    "mov r13, rdi",
    "mov r14, rsi",
    "test rdx, rdx",
    "jz 3f",
    "cmp rcx, 2",
    "je 4f",
    "cmp rcx, 3",
    "je 5f",
    "cmp rcx, 4",
    "je 7f",
    "movups xmm0, [rdx]",
    "movups xmm1, [rdx + 16]",
    "movups xmm2, [rdx + 32]",
    "movups xmm3, [rdx + 48]",
    "movups xmm4, [rdx + 64]",
    "movups xmm5, [rdx + 80]",
    "movups xmm6, [rdx + 96]",
    "movups xmm7, [rdx + 112]",
    "jmp 3f",
    "4:",
    "vmovdqu ymm0, [rdx]",
    "vmovdqu ymm1, [rdx + 32]",
    "vmovdqu ymm2, [rdx + 64]",
    "vmovdqu ymm3, [rdx + 96]",
    "vmovdqu ymm4, [rdx + 128]",
    "vmovdqu ymm5, [rdx + 160]",
    "vmovdqu ymm6, [rdx + 192]",
    "vmovdqu ymm7, [rdx + 224]",
    "jmp 3f",
    "7:",
    "vmovdqu64 zmm0, [rdx]",
    "vmovdqu64 zmm1, [rdx + 64]",
    "vmovdqu64 zmm2, [rdx + 128]",
    "vmovdqu64 zmm3, [rdx + 192]",
    "vmovdqu64 zmm4, [rdx + 256]",
    "vmovdqu64 zmm5, [rdx + 320]",
    "vmovdqu64 zmm6, [rdx + 384]",
    "vmovdqu64 zmm7, [rdx + 448]",
    "jmp 3f",
    "5:",
    "movups xmm0, [rdx + 160]",
    "movups xmm1, [rdx + 176]",
    "movups xmm2, [rdx + 192]",
    "movups xmm3, [rdx + 208]",
    "movups xmm4, [rdx + 224]",
    "movups xmm5, [rdx + 240]",
    "movups xmm6, [rdx + 256]",
    "movups xmm7, [rdx + 272]",
    "3:",
    "sub rsp, 208",
    "and rsp, -16",
    "sub rsp, 8",
    "mov rsi, qword ptr [r13 + {sp}]",
    "mov rdi, rsp",
    "mov ecx, 24",
    "cld",
    "rep movsq",
    "lea rax, [rip + ptap_rt_jp_resume]",
    "mov qword ptr [rsp], rax",
    "mov r11, r14",
    "mov rdi, qword ptr [r13 + {di}]",
    "mov rsi, qword ptr [r13 + {si}]",
    "mov rdx, qword ptr [r13 + {dx}]",
    "mov rcx, qword ptr [r13 + {cx}]",
    "mov r8, qword ptr [r13 + {r8}]",
    "mov r9, qword ptr [r13 + {r9}]",
    "mov rax, qword ptr [r13 + {ax}]",
    "mov rbx, qword ptr [r13 + {bx}]",
    "mov rbp, qword ptr [r13 + {bp}]",
    "mov r10, qword ptr [r13 + {r10}]",
    "mov r12, qword ptr [r13 + {r12}]",
    "mov r14, qword ptr [r13 + {r14}]",
    "mov r15, qword ptr [r13 + {r15}]",
    "mov r13, qword ptr [r13 + {r13}]",
    "jmp r11",
    // The entry returned without jprobe_return(): its value in rax.
    "ptap_rt_jp_resume:",
    "mov rdx, rax",
    "mov ecx, 1",
    "jmp 6f",
    ".globl ptap_rt_jp_resume_ok",
    ".hidden ptap_rt_jp_resume_ok",
    "ptap_rt_jp_resume_ok:",
    "xor edx, edx",
    "xor ecx, ecx",
    "6:",
    "mov rax, qword ptr [rip + ptap_rt_tls_thread@GOTTPOFF]",
    "add rax, qword ptr fs:[0]",
    "mov rbp, qword ptr [rax + 16]",
    "mov qword ptr [rax + 24], rdx",
    "mov rsi, qword ptr [rbp - 56]",
    "cmp rsi, 2",
    "je 8f",
    "cmp rsi, 4",
    "jne 9f",
    "8:",
    "vzeroupper",
    "9:",
    "mov rsi, qword ptr [rbp - 48]",
    "mov qword ptr [rax + 16], rsi",
    "lea rsp, [rbp - 40]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "mov rax, rcx",
    "ret",
    ".size ptap_rt_jp_call, .-ptap_rt_jp_call",
    sp = const offset::SP,
    di = const offset::DI,
    si = const offset::SI,
    dx = const offset::DX,
    cx = const offset::CX,
    r8 = const offset::R8,
    r9 = const offset::R9,
    ax = const offset::AX,
    bx = const offset::BX,
    bp = const offset::BP,
    r10 = const offset::R10,
    r12 = const offset::R12,
    r13 = const offset::R13,
    r14 = const offset::R14,
    r15 = const offset::R15,
);

extern "C" {
    /// 0 after jprobe_return(); 1 if the entry returned (its value in TLS[3]).
    fn ptap_rt_jp_call(regs: *mut PtRegs, entry: u64, vec: u64, mode: u64) -> u64;
}

/// Vector-save mode of function-entry trampolines: 0 none, 1 xmm, 2 ymm,
/// 3 XSAVE, 4 zmm, | area bytes << 8 | alignment << 40 (see
/// `VectorSave::area`). Set when the first one is built; jprobes read it to
/// find the saved argument registers.
static ENTRY_VMODE: AtomicU64 = AtomicU64::new(0);

fn vmode_code(vs: VectorSave) -> u64 {
    let kind = match vs {
        VectorSave::None => 0,
        VectorSave::Xmm => 1,
        VectorSave::Ymm | VectorSave::Wide { zmm: false, .. } => 2,
        VectorSave::Xsave { .. } => 3,
        VectorSave::Wide { zmm: true, .. } => 4,
    };
    let (align, area) = vs.area();
    kind | (area as u64) << 8 | ((-align) as u64) << 40
}

/// Where the trampoline saved the vector registers, for a frame at `regs`
/// (layout of `ptap_arch::trampoline::call_handler`: rsp = &regs, aligned
/// down, area below): (address, kind) for `ptap_rt_jp_call`.
fn vector_area(regs: u64, code: u64) -> (u64, u64) {
    let kind = code & 0xff;
    let area = (code >> 8) & 0xffff_ffff;
    let align = (code >> 40).max(16);
    if kind == 0 {
        return (0, 0);
    }
    ((regs & !(align - 1)) - area, kind)
}

/// This thread's save area for xmm0-7 across a trap-path jprobe entry.
pub fn jp_xmm_area() -> *mut u8 {
    (tls() as u64 + 32) as *mut u8
}

#[inline(always)]
fn tls() -> *mut [u64; 2] {
    let p: u64;
    // SAFETY: computes the address of this thread's copy of ptap_rt_tls_thread
    // (GOT entry holding its offset from the thread pointer, plus fs:0).
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + ptap_rt_tls_thread@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(nostack, readonly),
        );
    }
    p as *mut [u64; 2]
}

/// This thread's state without a system call once it is cached. The cache
/// is checked against the slot's tid: a slot given to another thread (after
/// fork, or reclaimed from a dead thread) is looked up again.
#[inline]
pub fn thread() -> Option<*mut ThreadState> {
    let t = tls();
    // SAFETY: t is this thread's TLS block; a cached slot pointer points
    // into the thread table, which is never unmapped.
    unsafe {
        let p = (*t)[0] as *mut ThreadState;
        if !p.is_null() && (*p).tid.load(Ordering::Relaxed) as u32 as u64 == (*t)[1] {
            return Some(p);
        }
        let ts = threads::current()?;
        (*t)[0] = ts as u64;
        (*t)[1] = (*ts).tid.load(Ordering::Relaxed) as u32 as u64;
        Some(ts)
    }
}

/// This thread's slot, if it has used the jump path (its `defer` count says
/// whether a hit is in progress: see `signals::wrapper`). Only the
/// TLS-cached slot is looked at, checked against the real thread id (a raw
/// CLONE_VM thread without TLS of its own would read its parent's cache).
/// Async-signal-safe; one gettid.
#[inline]
pub fn jump_hit_slot() -> Option<*mut ThreadState> {
    let t = tls();
    // SAFETY: as in [`thread`].
    unsafe {
        let p = (*t)[0] as *mut ThreadState;
        (!p.is_null()
            && (*p).tid.load(Ordering::Relaxed) as u32 as u64 == (*t)[1]
            && (*t)[1] == sys::gettid() as u32 as u64)
            .then_some(p)
    }
}

/// A jump-path hit starts: from here until [`deliver_deferred`], a signal
/// for a target handler is re-queued and blocked instead of run (a handler
/// that siglongjmps must not abandon the hit path with `in_handler`,
/// `active` or the fault guard set). No system call.
#[inline(always)]
fn defer_signals(ts: *mut ThreadState) {
    // SAFETY: this thread's slot; only this thread (and its own signal
    // handlers, which the fences order against) touches these fields.
    unsafe {
        let d = core::ptr::read_volatile(core::ptr::addr_of!((*ts).defer));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ts).defer), d + 1);
    }
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The hit is over: unblock what arrived meanwhile (delivered as this
/// system call returns, to the target's handlers). Costs a system call only
/// when a signal did arrive.
#[inline(always)]
fn deliver_deferred(ts: *mut ThreadState) {
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    // SAFETY: as in defer_signals.
    unsafe {
        let d = core::ptr::read_volatile(core::ptr::addr_of!((*ts).defer)).saturating_sub(1);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ts).defer), d);
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        if d == 0 {
            let m = core::ptr::read_volatile(core::ptr::addr_of!((*ts).deferred));
            if m != 0 {
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*ts).deferred), 0);
                core::sync::atomic::compiler_fence(Ordering::SeqCst);
                sys::rt_sigprocmask(1, Some(&m), None); // SIG_UNBLOCK
            }
        }
    }
}

/// `threads::enter` without the fence: the writers that wait for hit paths
/// (`retire`, `optimize_pending`) issue membarrier() before they scan the
/// thread table, which orders this plain store for them (the asymmetric
/// fence of sys_membarrier-based RCU).
#[inline(always)]
fn enter(ts: *mut ThreadState) {
    // SAFETY: this thread's slot; only this thread writes `active`.
    unsafe {
        let a = (*ts).active.load(Ordering::Relaxed);
        (*ts).active.store(a + 1, Ordering::Relaxed);
    }
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

#[inline(always)]
fn leave(ts: *mut ThreadState) {
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    // SAFETY: this thread's slot; only this thread writes `active`/`gen`.
    unsafe {
        let a = (*ts).active.load(Ordering::Relaxed);
        if a == 1 {
            let g = (*ts).gen.load(Ordering::Relaxed);
            (*ts).gen.store(g + 1, Ordering::Release);
        }
        (*ts).active.store(a.saturating_sub(1), Ordering::Release);
    }
}

// ------------------------------------------------------------ the hit path

/// `orig_ax` value a handler's redirect leaves in the trampoline's frame:
/// the EFLAGS.TF trap after `popfq` finds it there (see [`divert_trap`]).
const DIVERT_MAGIC: u64 = 0x7074_6170_6469_7674;

/// Every signal but the synchronous ones (SIGILL 4, SIGTRAP 5, SIGBUS 7,
/// SIGFPE 8, SIGSEGV 11: the fault guard and kprobes need them), SIGSYS 31
/// (syscall probes), and the unblockable SIGKILL 9 / SIGSTOP 19.
const ASYNC_SIGNALS: u64 =
    !((1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 18) | (1 << 30));

/// Block asynchronous signals on this thread for the duration of a
/// jump-path hit (the trap path runs in a signal handler that already blocks
/// them): a target handler that siglongjmps (SIGALRM + siglongjmp) must not
/// abandon the hit path with `in_handler`, `active` or the fault guard set.
/// Only for handlers the runtime could not wrap (`signals::wrapper` defers
/// the others at no cost): ones installed before the runtime started that
/// it failed to re-install. Returns the previous mask, to be given back to
/// [`unblock_async`]. Two raw rt_sigprocmask calls per hit: ~300 ns here (a
/// counting kprobe went from ~22 to ~320 ns per call).
#[inline(always)]
fn block_async() -> Option<u64> {
    // Without a target handler for an asynchronous signal nothing can
    // interrupt the hit path and jump out of it: skip the two syscalls.
    if !crate::signals::ASYNC_HANDLERS.load(Ordering::Relaxed) {
        return None;
    }
    let mut old = 0u64;
    // SAFETY: SIG_BLOCK on this thread; both pointers are locals.
    let r = unsafe { sys::rt_sigprocmask(0, Some(&ASYNC_SIGNALS), Some(&mut old)) };
    (r == 0).then_some(old)
}

/// Restore exactly the mask [`block_async`] saw (SIG_SETMASK). A signal
/// that arrived meanwhile is delivered now, after the hit path is done.
#[inline(always)]
fn unblock_async(old: Option<u64>) {
    if let Some(m) = old {
        // SAFETY: SIG_SETMASK with this thread's own previous mask.
        unsafe { sys::rt_sigprocmask(2, Some(&m), None) };
    }
}

/// Called by a site's trampoline with the saved registers. Hit path: no
/// allocation, no lock, no libc.
///
/// # Safety
/// Called only by trampolines built here, with their frame.
pub unsafe extern "C" fn opt_hit(regs: *mut PtRegs, addr: u64) {
    let Some(ts) = thread() else { return };
    let mask = block_async();
    defer_signals(ts);
    // SAFETY: as documented on opt_hit_inner.
    unsafe { opt_hit_inner(ts, regs, addr) };
    deliver_deferred(ts);
    unblock_async(mask);
}

/// # Safety
/// As [`opt_hit`]; `ts` is this thread's slot; async signals are blocked.
#[inline(always)]
unsafe fn opt_hit_inner(ts: *mut ThreadState, regs: *mut PtRegs, addr: u64) {
    enter(ts);
    let Some(site) = probes::lookup(addr) else {
        leave(ts);
        return;
    };
    // SAFETY: regs is the trampoline's frame; ts is ours; the site is live
    // until we leave (grace periods).
    unsafe {
        let regs = &mut *regs;
        if (*ts).jp_site != 0 || (*ts).ss_site != 0 {
            trap::recover_abandoned(ts, regs.sp);
        }
        if (*ts).in_handler != 0 {
            for e in &site.probes {
                if e.is_dead() {
                    continue;
                }
                match e.kind {
                    EntryKind::R(rec) => kretprobe_missed((*rec).rp),
                    _ => kprobe_missed(e.kp),
                }
            }
            leave(ts);
            return;
        }
        (*ts).in_handler = 1;
        if site.has_ret {
            trap::reap_at_entry(ts, regs.sp);
        }
        let mut divert = false;
        let mut jp: *mut Jprobe = core::ptr::null_mut();
        for e in &site.probes {
            if e.is_dead() || kprobe_flags(e.kp) & KPROBE_FLAG_DISABLED != 0 {
                continue;
            }
            match e.kind {
                EntryKind::K => {
                    if trap::call_pre(ts, e.kp, regs) != 0 && regs.ip != addr {
                        divert = true;
                        break;
                    }
                }
                EntryKind::R(rec) => trap::kret_entry(ts, rec, regs),
                EntryKind::J(j) => {
                    if jp.is_null() {
                        jp = j;
                    }
                }
            }
        }
        if !divert && !jp.is_null() {
            // All pre_handlers first, then the entry (as on the trap path).
            let (vec, mode) = vector_area(
                regs as *mut PtRegs as u64,
                ENTRY_VMODE.load(Ordering::Relaxed),
            );
            if ptap_rt_jp_call(regs, (*jp).entry as u64, vec, mode) == 1 {
                // As on the trap path: the entry returned in place of the
                // function, whose call is skipped with the entry's value.
                output::diag(b"ptap: a jprobe entry returned without calling jprobe_return(); that call of the probed function was skipped\n");
                let t = tls() as *mut u64;
                regs.ax = *t.add(3);
                regs.ip = core::ptr::read(regs.sp as *const u64);
                regs.sp += 8;
                divert = true;
            }
        }
        if divert {
            // The trampoline always continues with the displaced
            // instructions; to honour a redirect (pre_handler returned 1
            // with a new ip), set TF: the single-step trap right after the
            // trampoline's popfq loads this frame into the context.
            regs.orig_ax = DIVERT_MAGIC;
            regs.flags |= rf::TF;
        } else {
            regs.ip = addr;
        }
        (*ts).in_handler = 0;
        leave(ts);
    }
}

/// SIGTRAP with TRAP_TRACE: is it the single-step after a trampoline's
/// `popfq` that a redirecting pre_handler asked for? If so, load the
/// frame's registers (ip and sp included) into the context.
///
/// # Safety
/// `uc` must be the valid, writable `ucontext_t` the kernel passed to the
/// SIGTRAP handler this is called from.
pub unsafe fn divert_trap(uc: *mut libc::ucontext_t) -> bool {
    // SAFETY: uc is the kernel's context (contract).
    let (rip, rsp) = unsafe {
        let g = &(*uc).uc_mcontext.gregs;
        (
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_RSP as usize] as u64,
        )
    };
    if !in_trampoline(rip) {
        return false;
    }
    // SAFETY: rsp is the trampoline's frame (rsp == &pt_regs right after the
    // handler call), on this thread's stack.
    unsafe {
        let ax = core::ptr::read((rsp + offset::ORIG_AX as u64) as *const u64);
        if ax != DIVERT_MAGIC {
            return false;
        }
        let mut regs: PtRegs = core::ptr::read(rsp as *const PtRegs);
        core::ptr::write((rsp + offset::ORIG_AX as u64) as *mut u64, u64::MAX);
        regs.orig_ax = u64::MAX;
        regs.flags &= !rf::TF;
        trap::regs_to(uc, &regs);
    }
    true
}

/// The kretprobe return trampoline's handler: pop this thread's instance
/// for the returning frame, run the kretprobe's handler with regs->ax = the
/// return value, and set regs->ip to the real return address (the stub
/// jumps there). No trap.
///
/// # Safety
/// Called only by the return stub built here.
pub unsafe extern "C" fn ret_hit(regs: *mut PtRegs, _data: u64) {
    // SAFETY: regs is the stub's frame.
    let regs = unsafe { &mut *regs };
    let Some(ts) = thread() else {
        output::diag(b"ptap: kretprobe return without a thread slot; aborting\n");
        trap::die_now(trap::SIGSEGV);
        return;
    };
    // Async signals wait for the end of the handler (see defer_signals).
    let mask = block_async();
    defer_signals(ts);
    enter(ts);
    // SAFETY: ts is ours. in_handler is raised while the instance list is
    // edited: a signal handler that runs a kretprobed function meanwhile
    // counts a miss instead of pushing onto the list we are editing.
    unsafe {
        let was = (*ts).in_handler;
        (*ts).in_handler = was + 1;
        let ok = trap::kret_return(ts, regs, was == 0);
        (*ts).in_handler = was;
        if !ok {
            output::diag(b"ptap: kretprobe trampoline reached without an instance; aborting\n");
            trap::die_now(trap::SIGSEGV);
        }
    }
    leave(ts);
    deliver_deferred(ts);
    unblock_async(mask);
}

/// Address of the trap-free return stub (0 until built).
static RET_STUB: AtomicU64 = AtomicU64::new(0);

pub fn ret_stub() -> u64 {
    RET_STUB.load(Ordering::Acquire)
}

/// Build the return stub once (registration time, first kretprobe). It is
/// never rebuilt or freed: hijacked return addresses may point at it.
pub fn ensure_ret_stub() {
    static ONCE: Mutex<()> = Mutex::new(());
    if !enabled() || ret_stub() != 0 {
        return;
    }
    let _g = ONCE.lock();
    if ret_stub() != 0 {
        return;
    }
    const LEN: usize = 4096;
    // SAFETY: a fresh private anonymous RW mapping.
    let p = unsafe { sys::mmap(0, LEN, 3, 0x22, -1, 0) };
    if p < 0 {
        return;
    }
    let at = p as u64;
    let h = Handler {
        func: ret_hit as *const () as u64,
        data: 0,
    };
    let Ok(code) = trampoline::return_trampoline(at, h, vector_save(true, true)) else {
        return;
    };
    if code.len() > LEN {
        return;
    }
    // SAFETY: our RW mapping; then made r-x.
    unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len());
        sys::mprotect(at as usize, LEN, 5);
    }
    add_range(at, code.len() as u64, 0, &[], 0);
    RET_STUB.store(at, Ordering::Release);
}

// ------------------------------------------------------------ code ranges

/// A trampoline or region slot, for fault mapping and `in_trampoline`.
/// `insns`: (offset of a relocated instruction, its original address,
/// rsp delta the relocation introduced before it).
const RANGE_CAP: usize = 1 << 15;
const MAX_INSNS: usize = 8;

struct Range {
    start: AtomicU64,
    len: AtomicU64,
    /// Offset in the range where the relocated instructions start (0 = none).
    body: AtomicU64,
    n: AtomicUsize,
    /// The probe address whose code this is.
    site: AtomicU64,
    insns: [(AtomicU64, AtomicU64, AtomicU64); MAX_INSNS],
}

static RANGES: [Range; RANGE_CAP] = [const {
    Range {
        start: AtomicU64::new(0),
        len: AtomicU64::new(0),
        body: AtomicU64::new(0),
        n: AtomicUsize::new(0),
        site: AtomicU64::new(0),
        insns: [const { (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)) }; MAX_INSNS],
    }
}; RANGE_CAP];
static N_RANGES: AtomicUsize = AtomicUsize::new(0);

fn add_range(start: u64, len: u64, body: u64, insns: &[(u64, u64, i64)], site: u64) {
    let i = N_RANGES.load(Ordering::Relaxed);
    if i >= RANGE_CAP {
        return;
    }
    let r = &RANGES[i];
    r.len.store(len, Ordering::Relaxed);
    r.body.store(body, Ordering::Relaxed);
    r.site.store(site, Ordering::Relaxed);
    for (k, &(off, orig, d)) in insns.iter().take(MAX_INSNS).enumerate() {
        r.insns[k].0.store(off, Ordering::Relaxed);
        r.insns[k].1.store(orig, Ordering::Relaxed);
        r.insns[k].2.store(d as u64, Ordering::Relaxed);
    }
    r.n.store(insns.len().min(MAX_INSNS), Ordering::Relaxed);
    r.start.store(start, Ordering::Release);
    N_RANGES.store(i + 1, Ordering::Release);
}

fn find_range(ip: u64) -> Option<&'static Range> {
    let n = N_RANGES.load(Ordering::Acquire).min(RANGE_CAP);
    RANGES[..n].iter().find(|r| {
        let s = r.start.load(Ordering::Acquire);
        s != 0 && ip >= s && ip < s + r.len.load(Ordering::Relaxed)
    })
}

/// Is `ip` inside one of our trampolines or region slots?
pub fn in_trampoline(ip: u64) -> bool {
    find_range(ip).is_some()
}

/// A fault at `ip` inside the relocated instructions of a trampoline or a
/// region slot: (original address of the faulting instruction, rsp delta,
/// probe address).
pub fn fault_owner(ip: u64) -> Option<(u64, i64, u64)> {
    let r = find_range(ip)?;
    let off = ip - r.start.load(Ordering::Acquire);
    let n = r.n.load(Ordering::Relaxed);
    r.insns[..n].iter().find_map(|(o, a, d)| {
        (o.load(Ordering::Relaxed) == off).then(|| {
            (
                a.load(Ordering::Relaxed),
                d.load(Ordering::Relaxed) as i64,
                r.site.load(Ordering::Relaxed),
            )
        })
    })
}

// ------------------------------------------------------------ per-site state

pub struct Opt {
    pub region: Region,
    /// Original bytes of the region.
    pub orig: Vec<u8>,
    pub tramp: u64,
    pub region_slot: u64,
    /// The jump is in place.
    pub optimized: bool,
    /// The trampoline saves only what compiled-script handlers can change
    /// (see [`vector_save`]): a C handler on this site needs the trap path.
    pub known_only: bool,
}

/// Why a C handler added to a site whose trampoline saves only what
/// compiled-script handlers can change stays on the trap path.
pub const UNKNOWN_HANDLER: &str =
    "a C handler in the middle of a function needs the trap path here: this site's trampoline saves only what compiled-script handlers change";

/// May a probe whose handlers are (`known`) or are not compiled-script code
/// join the jump-optimized site at `addr`?
pub fn handlers_fit(addr: u64, known: bool) -> bool {
    known || with_state(|s| s.sites.get(&addr).is_none_or(|o| !o.known_only))
}

pub struct OptState {
    pub sites: HashMap<u64, Opt>,
    /// Why an address stays on the trap path (ptap -v).
    pub refused: HashMap<u64, String>,
    /// Sites armed with int3 and waiting for `optimize_pending`.
    pub pending: Vec<u64>,
    /// Inside register_kprobes: optimize once at the end.
    pub batch: bool,
}

pub static STATE: Mutex<Option<OptState>> = Mutex::new(None);

pub fn with_state<R>(f: impl FnOnce(&mut OptState) -> R) -> R {
    let mut g = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let s = g.get_or_insert_with(|| OptState {
        sites: HashMap::new(),
        refused: HashMap::new(),
        pending: Vec::new(),
        batch: false,
    });
    f(s)
}

/// Is the jump at `addr` in place?
pub fn is_optimized(addr: u64) -> bool {
    with_state(|s| s.sites.get(&addr).is_some_and(|o| o.optimized))
}

/// The region's original bytes of every optimized site inside [a, a+len)
/// (for decoding code that contains our jumps).
pub fn originals_in(a: u64, len: u64) -> Vec<(u64, Vec<u8>)> {
    with_state(|s| {
        if (len as usize) < s.sites.len() {
            (a..a + len)
                .filter_map(|k| Some((k, s.sites.get(&k).filter(|o| o.optimized)?.orig.clone())))
                .collect()
        } else {
            s.sites
                .iter()
                .filter(|(&k, o)| o.optimized && k >= a && k < a + len)
                .map(|(&k, o)| (k, o.orig.clone()))
                .collect()
        }
    })
}

/// What the optimizer needs from the probe registry (its lock held).
pub trait CodeMem {
    /// `len` bytes of executable memory within ±2 GiB of `near`.
    fn alloc(&mut self, near: u64, len: usize) -> Option<u64>;
    /// Write code (any of our text or slot memory).
    fn poke(&mut self, at: u64, bytes: &[u8]) -> bool;
    /// Write many pieces at once (a batch).
    fn poke_many(&mut self, w: &[(u64, Vec<u8>)]);
    /// Is the site at `addr` published, armed with an int3 and routed
    /// through its region slot? Then Some(its single-instruction slot or 0).
    fn armed(&self, addr: u64) -> Option<u64>;
    /// A copy of the code at [addr, addr+len) with the bytes of the
    /// runtime's own probes put back (the caller checked it is mapped).
    fn clean(&self, addr: u64, len: usize) -> Vec<u8> {
        // SAFETY: the caller checked [addr, addr+len) is mapped code.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    }
}

const TRAMP_CAP: usize = 1024;
/// Per vector-save mode: a trampoline's bytes before its relocated region
/// and where the probe address appears in them (as regs->ip and as the
/// handler's data). Everything else in that part is the same for every
/// site: copying it is much cheaper than encoding ~100 instructions. State:
/// None = not built yet; checked against a full build at its second use.
struct Template {
    bytes: Vec<u8>,
    at: Vec<usize>,
    checked: bool,
}

static TEMPLATES: Mutex<[Option<Template>; 6]> = Mutex::new([None, None, None, None, None, None]);
static FORK_TEMPLATES: crate::forklock::MutexSlot<[Option<Template>; 6]> =
    crate::forklock::MutexSlot::new(&TEMPLATES);

/// The trampoline-template cache lock, for the fork handlers (after STATE).
pub(crate) fn templates_fork_lock() -> &'static dyn crate::forklock::ForkLock {
    &FORK_TEMPLATES
}
static NO_TEMPLATES: AtomicBool = AtomicBool::new(false);

/// The trampoline for `addr`, allocated near it: (its address, bytes,
/// offset of the relocated region, that region's relocation).
#[allow(clippy::too_many_arguments)]
fn build_trampoline(
    m: &mut dyn CodeMem,
    addr: u64,
    orig: &[u8],
    region: &Region,
    h: Handler,
    vs: VectorSave,
    mode: usize,
    tail_len: usize,
) -> Result<(u64, Vec<u8>, u64, ptap_arch::xol::Relocated), String> {
    let full = |at: u64| {
        trampoline::optprobe_trampoline(at, orig, region, h, vs)
            .map_err(|e| format!("cannot build the trampoline: {e}"))
    };
    let mut g = match TEMPLATES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let use_template = !NO_TEMPLATES.load(Ordering::Relaxed);
    if g[mode].is_none() || !use_template {
        // Build one for real, near the site, and derive the template from it.
        let probe = full(addr.wrapping_add(0x10000))?;
        let prefix = probe.len().saturating_sub(tail_len);
        let key = addr.to_le_bytes();
        let at: Vec<usize> = (0..prefix.saturating_sub(7))
            .filter(|&i| probe[i..i + 8] == key)
            .collect();
        if at.len() == 2 && use_template {
            g[mode] = Some(Template {
                bytes: probe[..prefix].to_vec(),
                at,
                checked: false,
            });
        } else {
            NO_TEMPLATES.store(true, Ordering::Relaxed);
        }
    }
    let prefix = match &g[mode] {
        Some(t) if !NO_TEMPLATES.load(Ordering::Relaxed) => t.bytes.len(),
        _ => full(addr.wrapping_add(0x10000))?
            .len()
            .saturating_sub(tail_len),
    };
    let size = prefix + tail_len + 16;
    if size > TRAMP_CAP {
        return Err("the trampoline is too large".into());
    }
    let tramp = m
        .alloc(addr, size)
        .ok_or("no room for a trampoline near the address")?;
    let tail = aopt::relocate_region(orig, region, tramp + prefix as u64, 8 * 16)
        .map_err(|e| format!("the replaced instructions do not relocate: {e}"))?;
    let bytes = match &mut g[mode] {
        Some(t) if !NO_TEMPLATES.load(Ordering::Relaxed) => {
            let mut b = t.bytes.clone();
            for &i in &t.at {
                b[i..i + 8].copy_from_slice(&addr.to_le_bytes());
            }
            b.extend_from_slice(&tail.bytes);
            if !t.checked {
                // Once per mode: the copy must equal a full build.
                if full(tramp)? != b {
                    NO_TEMPLATES.store(true, Ordering::Relaxed);
                    return Err("trampoline template mismatch (templates now off)".into());
                }
                t.checked = true;
            }
            b
        }
        _ => full(tramp)?,
    };
    if bytes.len() > size || bytes.get(prefix..) != Some(&tail.bytes[..]) {
        return Err("cannot locate the relocated instructions in the trampoline".into());
    }
    Ok((tramp, bytes, prefix as u64, tail))
}
const REGION_SLOT_CAP: usize = 128;

/// Build (or reuse) the trampoline and region slot for a probe at `addr` in
/// the function [func, func+size) whose bytes (with our probes removed) are
/// `code`. `known_handlers`: every handler of the site is compiled-script
/// code (see [`vector_save`]). Err = the reason it stays on the trap path.
/// Registration time.
pub fn prepare(
    addr: u64,
    func: u64,
    code: &[u8],
    known_handlers: bool,
    m: &mut dyn CodeMem,
) -> Result<u64, String> {
    if let Some((rs, known_only)) = with_state(|s| {
        s.sites.get(&addr).and_then(|o| {
            let off = (addr - func) as usize;
            let cur = code.get(off..off + o.orig.len())?;
            (cur == o.orig.as_slice()).then_some((o.region_slot, o.known_only))
        })
    }) {
        if known_only && !known_handlers {
            return Err(UNKNOWN_HANDLER.into());
        }
        return Ok(rs);
    }
    let info = decode::decode_function(code, func)
        .map_err(|e| format!("the function does not decode: {e}"))?;
    let region = aopt::check_region(&info, addr, aopt::JMP_LEN).map_err(|r| r.to_string())?;
    let off = (addr - func) as usize;
    let orig = code[off..off + region.len].to_vec();
    let slot = m
        .alloc(addr, REGION_SLOT_CAP)
        .ok_or("no room for code near the address")?;
    let rel = aopt::relocate_region(&orig, &region, slot, REGION_SLOT_CAP)
        .map_err(|e| format!("the replaced instructions do not relocate: {e}"))?;
    let steps = |base_off: u64, rel: &ptap_arch::xol::Relocated| -> Vec<(u64, u64, i64)> {
        rel.steps
            .iter()
            .zip(region.insns.iter())
            .map(|(s, i)| (base_off + s.offset as u64, i.addr, s.sp_delta as i64))
            .collect()
    };
    if !m.poke(slot, &rel.bytes) {
        return Err("cannot write the region slot".into());
    }
    let h = Handler {
        func: opt_hit as *const () as u64,
        data: addr,
    };
    let vs = vector_save(addr == func, known_handlers);
    if addr == func {
        ENTRY_VMODE.store(vmode_code(vs), Ordering::Relaxed);
    }
    // Its size: the register save/call/restore part (the same for every
    // trampoline of a vector-save mode; measured once) plus the relocated
    // region (as long as in the region slot: same capacity, rel32 forms).
    let mode = match vs {
        VectorSave::None => 0,
        VectorSave::Xmm => 1,
        VectorSave::Ymm => 2,
        VectorSave::Xsave { .. } => 3,
        VectorSave::Wide { n: 8, .. } => 4,
        VectorSave::Wide { .. } => 5,
    };
    let (tramp, bytes, cut, tail) =
        build_trampoline(m, addr, &orig, &region, h, vs, mode, rel.bytes.len())?;
    if !m.poke(tramp, &bytes) {
        return Err("cannot write the trampoline".into());
    }
    add_range(slot, REGION_SLOT_CAP as u64, 0, &steps(0, &rel), addr);
    add_range(tramp, bytes.len() as u64, cut, &steps(cut, &tail), addr);
    with_state(|s| {
        s.sites.insert(
            addr,
            Opt {
                region,
                orig,
                tramp,
                region_slot: slot,
                optimized: false,
                known_only: addr != func && matches!(vs, VectorSave::Wide { .. }),
            },
        )
    });
    Ok(slot)
}

// ------------------------------------------------------------ the barrier

/// Ranges a barrier asks threads about: [lo, hi) pairs, and a "some thread
/// is inside" flag per pair.
const BAR_CAP: usize = 1 << 15;
static BAR_LO: [AtomicU64; BAR_CAP] = [const { AtomicU64::new(0) }; BAR_CAP];
static BAR_HI: [AtomicU64; BAR_CAP] = [const { AtomicU64::new(0) }; BAR_CAP];
static BAR_HIT: [AtomicBool; BAR_CAP] = [const { AtomicBool::new(false) }; BAR_CAP];
static BAR_N: AtomicUsize = AtomicUsize::new(0);
static BAR_ACKS: AtomicUsize = AtomicUsize::new(0);
/// si_value of barrier signals (with si_code SI_QUEUE and our pid): this
/// tag in the high half, the barrier's round in the low half.
pub const BARRIER_MAGIC: u64 = 0x7074_6170_0000_0000;
/// The current barrier's round: an answer to an earlier round that timed
/// out (a thread that got its CPU back late) must not count as an answer to
/// this one, or the barrier would end with one of this round's signals still
/// pending and restore SIG_DFL under it (the process would die of it).
static BAR_ROUND: AtomicU64 = AtomicU64::new(0);
const SI_QUEUE: i32 = -1;

/// The barrier's signal handler: record where this thread was interrupted.
/// Async-signal-safe: atomics only.
unsafe extern "C" fn barrier_handler(_sig: i32, info: *mut libc::siginfo_t, ucv: *mut c_void) {
    let uc = ucv as *mut libc::ucontext_t;
    // SAFETY: kernel-provided siginfo; for SI_QUEUE the pid is at +16 and
    // the value at +24.
    unsafe {
        if (*info).si_code != SI_QUEUE {
            return;
        }
        let base = info as *const u8;
        let pid = core::ptr::read(base.add(16) as *const i32);
        let val = core::ptr::read(base.add(24) as *const u64);
        let round = BAR_ROUND.load(Ordering::Acquire) & 0xffff_ffff;
        if val != BARRIER_MAGIC | round || pid != sys::getpid() {
            return;
        }
        let rip = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        note_ip(rip);
    }
    BAR_ACKS.fetch_add(1, Ordering::AcqRel);
}

fn note_ip(rip: u64) {
    let n = BAR_N.load(Ordering::Acquire).min(BAR_CAP);
    for k in 0..n {
        if rip >= BAR_LO[k].load(Ordering::Relaxed) && rip < BAR_HI[k].load(Ordering::Relaxed) {
            BAR_HIT[k].store(true, Ordering::Relaxed);
        }
    }
}

fn other_threads() -> Vec<i32> {
    let me = sys::gettid();
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&t| t != me)
                .collect()
        })
        .unwrap_or_default()
}

/// Is `sig` blocked in thread `tid` (SigBlk in /proc)?
fn blocked_in(tid: i32, sig: i32) -> bool {
    let Ok(st) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    st.lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & sys::sigbit(sig) != 0)
}

/// The user-mode ip of a thread that is not running (from
/// /proc/self/task/TID/syscall: "nr args… sp pc" or "-1 sp pc"); None
/// while it runs.
fn stopped_ip(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let last = s.split_whitespace().last()?;
    u64::from_str_radix(last.trim_start_matches("0x"), 16).ok()
}

/// A real-time signal nobody uses (SIG_DFL), with our handler installed for
/// the barrier; SIGTRAP cannot serve: a pending queued SIGTRAP would make
/// the kernel drop the SIGTRAP of an int3 executed meanwhile.
fn claim_signal() -> Option<i32> {
    for sig in (40..=63).rev() {
        let mut old = sys::KSigaction::default();
        // SAFETY: query only.
        unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) };
        if old.handler != 0 && old.handler != barrier_handler as *const () as usize {
            continue;
        }
        let act = sys::KSigaction {
            handler: barrier_handler as *const () as usize,
            flags: sys::SA_SIGINFO | sys::SA_RESTART,
            restorer: 0,
            mask: !0,
        };
        // SAFETY: installing our handler on an unused signal.
        unsafe { sys::rt_sigaction(sig, Some(&act), None) };
        return Some(sig);
    }
    None
}

/// Ask every other thread where it is; returns which ranges some thread was
/// inside. A thread that cannot tell (blocks the signal while running, or
/// does not answer in time) blocks every range.
fn barrier(ranges: &[(u64, u64)]) -> Vec<bool> {
    let all = vec![true; ranges.len()];
    let n = ranges.len().min(BAR_CAP);
    for (k, &(lo, hi)) in ranges.iter().take(n).enumerate() {
        BAR_LO[k].store(lo, Ordering::Relaxed);
        BAR_HI[k].store(hi, Ordering::Relaxed);
        BAR_HIT[k].store(false, Ordering::Relaxed);
    }
    let round = (BAR_ROUND.fetch_add(1, Ordering::AcqRel) + 1) & 0xffff_ffff;
    BAR_N.store(n, Ordering::Release);
    BAR_ACKS.store(0, Ordering::Release);
    let threads = other_threads();
    if threads.is_empty() {
        BAR_N.store(0, Ordering::Release);
        return vec![false; ranges.len()];
    }
    let Some(sig) = claim_signal() else {
        BAR_N.store(0, Ordering::Release);
        return all;
    };
    let pid = sys::getpid();
    let mut sent = Vec::with_capacity(threads.len());
    for tid in threads {
        let mut info = [0u8; 128];
        info[0..4].copy_from_slice(&sig.to_le_bytes());
        info[8..12].copy_from_slice(&SI_QUEUE.to_le_bytes());
        info[16..20].copy_from_slice(&pid.to_le_bytes());
        info[24..32].copy_from_slice(&(BARRIER_MAGIC | round).to_le_bytes());
        // SAFETY: rt_tgsigqueueinfo(tgid, tid, sig, &info) to our own threads.
        let r = unsafe {
            sys::syscall6(
                297,
                pid as usize,
                tid as usize,
                sig as usize,
                info.as_ptr() as usize,
                0,
                0,
            )
        };
        if r == 0 {
            sent.push(tid);
        }
    }
    // A thread inside a runtime signal handler has the signal blocked until
    // it returns (microseconds); one that blocks it for good (sigwait) does
    // not answer: after the timeout its ip is read from /proc if it is not
    // running, else every range counts as blocked.
    // 250 ms of wall time: on a loaded machine a runnable thread can wait
    // tens of milliseconds for a CPU before it runs its handler.
    let t0 = sys::monotonic_ns();
    let mut spins = 0u32;
    let mut timed_out = false;
    while BAR_ACKS.load(Ordering::Acquire) < sent.len() {
        if sys::monotonic_ns().saturating_sub(t0) > 250_000_000 {
            timed_out = true;
            break;
        }
        if spins < 200 {
            sys::sched_yield();
            spins += 1;
        } else {
            sys::sleep_us(50);
        }
    }
    let mut unknown = false;
    if timed_out {
        for &tid in &sent {
            if blocked_in(tid, sig) {
                match stopped_ip(tid) {
                    Some(ip) => note_ip(ip),
                    None => unknown |= sys::thread_alive(tid),
                }
            }
        }
        unknown |= BAR_ACKS.load(Ordering::Acquire)
            + sent.iter().filter(|&&t| blocked_in(t, sig)).count()
            < sent.len();
    }
    let out = if unknown {
        all
    } else {
        (0..ranges.len())
            .map(|k| k >= n || BAR_HIT[k].load(Ordering::Relaxed))
            .collect()
    };
    BAR_N.store(0, Ordering::Release);
    // Late answers find BAR_N = 0 and record nothing. The handler stays
    // installed if some are still due (SIG_DFL would kill the process).
    if !timed_out {
        let dfl = sys::KSigaction::default();
        // SAFETY: restoring the unused signal's default action.
        unsafe { sys::rt_sigaction(sig, Some(&dfl), None) };
    }
    out
}

// ------------------------------------------------------------ patching

/// Queue an armed site for optimization.
pub fn queue(addr: u64) {
    with_state(|s| s.pending.push(addr));
}

/// Start/end a batch (register_kprobes): the barrier runs once for all.
pub fn set_batch(on: bool) {
    with_state(|s| s.batch = on);
}

pub fn in_batch() -> bool {
    with_state(|s| s.batch)
}

/// Optimize every queued site (registry lock held by the caller; `poke`
/// writes code). A site still published with its region slot and armed
/// with an int3 gets its jump; a blocked one stays on the trap path.
pub fn optimize_pending(m: &mut dyn CodeMem) {
    // From inside a handler this thread is itself on a hit path (and the
    // grace period cannot include it): leave the sites queued.
    if threads::current_is_active() {
        return;
    }
    let pending: Vec<u64> = with_state(|s| core::mem::take(&mut s.pending));
    if pending.is_empty() {
        return;
    }
    // Sites still wanting it: (addr, region end, old single slot).
    let mut todo: Vec<(u64, u64, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for a in pending {
        if !seen.insert(a) {
            continue;
        }
        let Some(old_slot) = m.armed(a) else { continue };
        let Some(len) = with_state(|s| {
            s.sites
                .get(&a)
                .filter(|o| !o.optimized)
                .map(|o| o.region.len as u64)
        }) else {
            continue;
        };
        todo.push((a, a + len, old_slot));
    }
    if todo.is_empty() {
        return;
    }
    // Trap hits that started before the region-slot snapshot was published
    // may still resume inside the region: wait for them.
    sys::membarrier_sync_core();
    if !threads::synchronize() {
        for (a, _, _) in &todo {
            with_state(|s| {
                s.refused
                    .insert(*a, "a thread stayed inside a probe handler".into())
            });
        }
        return;
    }
    let mut ok = vec![false; todo.len()];
    for attempt in 0..40 {
        let mut ranges = Vec::new();
        let mut which = Vec::new();
        for (k, &(a, end, slot)) in todo.iter().enumerate() {
            if ok[k] {
                continue;
            }
            ranges.push((a + 1, end));
            which.push(k);
            if slot != 0 {
                ranges.push((slot, slot + ptap_arch::xol::SLOT_SIZE as u64));
                which.push(k);
            }
        }
        if ranges.is_empty() {
            break;
        }
        let hit = barrier(&ranges);
        let mut blocked = vec![false; todo.len()];
        for (r, &k) in which.iter().enumerate() {
            blocked[k] |= hit[r];
        }
        for &k in &which {
            if !blocked[k] {
                ok[k] = true;
            }
        }
        if ok.iter().all(|&b| b) {
            break;
        }
        sys::sleep_us(if attempt < 10 { 200 } else { 2000 });
    }
    let mut tails = Vec::new();
    for (k, &(a, _, _)) in todo.iter().enumerate() {
        if !ok[k] {
            with_state(|s| {
                s.refused.insert(
                    a,
                    "a thread stayed stopped inside the replaced instructions".into(),
                )
            });
            continue;
        }
        let Some(tramp) = with_state(|s| s.sites.get(&a).map(|o| o.tramp)) else {
            continue;
        };
        let Ok(j) = trampoline::jmp_rel32(a, tramp) else {
            continue;
        };
        tails.push((a, j));
    }
    if tails.is_empty() {
        return;
    }
    let w: Vec<(u64, Vec<u8>)> = tails
        .iter()
        .map(|(a, j)| (a + 1, j[1..].to_vec()))
        .collect();
    m.poke_many(&w);
    sys::membarrier_sync_core();
    let w: Vec<(u64, Vec<u8>)> = tails.iter().map(|(a, j)| (*a, vec![j[0]])).collect();
    m.poke_many(&w);
    with_state(|s| {
        for (a, _) in &tails {
            if let Some(o) = s.sites.get_mut(a) {
                o.optimized = true;
            }
            s.refused.remove(a);
        }
    });
    sys::membarrier_sync_core();
}

/// Put the int3 back over an optimized site's jump and restore the tail
/// bytes. Afterwards the site is a plain trap probe again (its snapshot may
/// still route through the region slot, which stays valid).
pub fn unoptimize(addr: u64, m: &mut dyn CodeMem) {
    let Some(orig) = with_state(|s| {
        s.pending.retain(|&a| a != addr);
        s.sites
            .get(&addr)
            .filter(|o| o.optimized)
            .map(|o| o.orig.clone())
    }) else {
        return;
    };
    m.poke(addr, &[0xcc]);
    sys::membarrier_sync_core();
    m.poke(addr + 1, &orig[1..aopt::JMP_LEN]);
    sys::membarrier_sync_core();
    with_state(|s| {
        if let Some(o) = s.sites.get_mut(&addr) {
            o.optimized = false;
        }
    });
}

/// Forget a pending optimization (the site went away before the batch ran).
pub fn forget(addr: u64) {
    with_state(|s| s.pending.retain(|&a| a != addr));
}

/// `ptap -v` text for a site.
pub fn describe(addr: u64) -> String {
    with_state(|s| match s.sites.get(&addr) {
        Some(o) if o.optimized => format!(
            "jump-optimized: {} bytes replaced, trampoline {:#x}",
            o.region.len, o.tramp
        ),
        _ => match s.refused.get(&addr) {
            Some(r) => format!("trap path: not optimized: {r}"),
            None if !enabled() => "trap path (PTAP_NO_OPTIMIZE)".into(),
            None => "trap path".into(),
        },
    })
}

/// Record why `addr` stays on the trap path.
pub fn refuse(addr: u64, why: String) {
    with_state(|s| s.refused.insert(addr, why));
}

/// Number of probe sites on the jump path and on the trap path (bench, -v).
///
/// # Safety
/// Both pointers must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn ptap_rt_opt_stats(optimized: *mut u64, trap: *mut u64) {
    let opt = with_state(|s| s.sites.values().filter(|o| o.optimized).count()) as u64;
    let all = probes::site_count() as u64;
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
