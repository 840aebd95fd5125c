//! The jump path: the per-site trampolines (built by `kprobes::optimize`)
//! call [`opt_hit`], which runs the same handlers, in the same order, under
//! the same reentrancy rule as the trap path; [`ret_hit`] is the trap-free
//! kretprobe return. Per-thread state lives in an initial-exec TLS block.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ptap_arch::regs::{flags as rf, offset};
use ptap_arch::trampoline::VectorSave;
use ptap_arch::trampoline::SELECT_SLOT;

use crate::abi::*;
use crate::base::sys;
use crate::hit::ranges::in_trampoline;
use crate::hit::site::EntryKind;
use crate::hit::threads::{self, ThreadState};
use crate::session::output;

// A 32-byte initial-exec TLS block: [ThreadState pointer, its tid, frame of a
// running jump-path jprobe entry (see ptap_rt_jp_call), the value a buggy
// entry returned], then 256 bytes: xmm0-15 of a trap-path jprobe hit. Not
// `thread_local!` (global-dynamic TLS may call malloc on first touch in a
// dlopen'ed object, and malloc may be probed); initial-exec TLS is part of
// the thread's static block, zeroed when a thread starts.
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 4",
    ".globl ptap_rt_tls_thread",
    ".hidden ptap_rt_tls_thread",
    ".type ptap_rt_tls_thread,@object",
    ".size ptap_rt_tls_thread,288",
    "ptap_rt_tls_thread:",
    ".zero 288",
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
pub(crate) static ENTRY_VMODE: AtomicU64 = AtomicU64::new(0);

pub(crate) fn vmode_code(vs: VectorSave) -> u64 {
    let kind = match vs {
        VectorSave::None => 0,
        VectorSave::Xmm | VectorSave::Sse { .. } => 1,
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

/// This thread's save area for xmm0-15 across a trap-path jprobe entry
/// ([`JP_XMM_BYTES`]).
pub const JP_XMM_BYTES: usize = 256;

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

/// The two words of this thread's slot cache (slot pointer, its tid), read
/// straight through `fs:` (no load of the thread pointer first: one load
/// less on the way to the slot, which every hit waits for).
#[inline(always)]
fn tls_cache() -> (u64, u64) {
    let (p, tid): (u64, u64);
    // SAFETY: reads this thread's copy of ptap_rt_tls_thread (the GOT entry
    // holds its offset from the thread pointer: initial-exec TLS).
    unsafe {
        core::arch::asm!(
            "mov {o}, qword ptr [rip + ptap_rt_tls_thread@GOTTPOFF]",
            "mov {p}, qword ptr fs:[{o}]",
            "mov {t}, qword ptr fs:[{o} + 8]",
            o = out(reg) _,
            p = out(reg) p,
            t = out(reg) tid,
            options(nostack, readonly, preserves_flags),
        );
    }
    (p, tid)
}

/// This thread's state without a system call once it is cached. The cache
/// is checked against the slot's tid: a slot given to another thread (after
/// fork, or reclaimed from a dead thread) is looked up again.
#[inline]
pub fn thread() -> Option<*mut ThreadState> {
    let (p, tid) = tls_cache();
    // SAFETY: a cached slot pointer points into the thread table, which is
    // never unmapped.
    unsafe {
        let p = p as *mut ThreadState;
        if !p.is_null() && (*p).tid.load(Ordering::Relaxed) as u32 as u64 == tid {
            return Some(p);
        }
        let t = tls();
        let ts = threads::current()?;
        // A clone(CLONE_VM) child shares this TLS block with its parent:
        // it looks its slot up on every hit instead of caching it. (One
        // that finds its parent's slot cached uses it: it cannot tell
        // without a system call per hit. posix_spawn's parent waits
        // meanwhile.)
        if threads::in_own_process() {
            (*t)[0] = ts as u64;
            (*t)[1] = (*ts).tid.load(Ordering::Relaxed) as u32 as u64;
        }
        Some(ts)
    }
}

/// This thread's slot, if it has used the jump path (its `defer` count says
/// whether a hit is in progress: see `crate::hit::wrap::wrapper`). Only the
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
/// Only for handlers the runtime could not wrap (`crate::hit::wrap::wrapper` defers
/// the others at no cost): ones installed before the runtime started that
/// it failed to re-install. Returns the previous mask, to be given back to
/// [`unblock_async`]. Two raw rt_sigprocmask calls per hit: ~300 ns here (a
/// counting kprobe went from ~22 to ~320 ns per call).
#[inline(always)]
fn block_async() -> Option<u64> {
    // Without a target handler for an asynchronous signal nothing can
    // interrupt the hit path and jump out of it: skip the two syscalls.
    if !crate::hit::wrap::ASYNC_HANDLERS.load(Ordering::Relaxed) {
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

/// Called by a site's trampoline with the saved registers (`ip` is the
/// probed address) and the site table's slot for that address
/// (`crate::hit::site::cell`). Hit path: no allocation, no lock, no libc.
///
/// # Safety
/// Called only by trampolines built here, with their frame.
pub unsafe extern "C" fn opt_hit(regs: *mut PtRegs, cell: &'static AtomicUsize) {
    let Some(ts) = thread() else { return };
    let mask = block_async();
    defer_signals(ts);
    // SAFETY: as documented on opt_hit_inner.
    let hooked = unsafe { opt_hit_inner(ts, regs, cell) };
    deliver_deferred(ts);
    unblock_async(mask);
    // Last: a target signal handler delivered just above still finds the
    // hijacked return address (which backtraces know) in the slot; from here
    // to the predicted stub's call, a few instructions, it holds the
    // relocated code's address.
    if let Some((sp, known)) = hooked {
        // SAFETY: regs is this select trampoline's frame, sp the probed
        // function's return address slot (opt_hit_inner).
        unsafe { route_return(&mut *regs, sp, known) };
    }
}

/// Returns the return address slot a kretprobe entry hijacked and whether
/// its return handler is known code, when the return may be routed through
/// the predicted return stub ([`route_return`]).
///
/// # Safety
/// As [`opt_hit`]; `ts` is this thread's slot; async signals are blocked.
#[inline(always)]
unsafe fn opt_hit_inner(
    ts: *mut ThreadState,
    regs: *mut PtRegs,
    cell: &AtomicUsize,
) -> Option<(u64, bool)> {
    enter(ts);
    // SAFETY: the trampoline's frame.
    let addr = unsafe { (*regs).ip };
    let Some(site) = crate::hit::site::probe_in(cell) else {
        leave(ts);
        return None;
    };
    // SAFETY: regs is the trampoline's frame; ts is ours; the site is live
    // until we leave (grace periods).
    unsafe {
        let regs = &mut *regs;
        if (*ts).jp_site != 0 || (*ts).ss_site != 0 {
            crate::hit::int3::recover_abandoned(ts, regs.sp);
        }
        if (*ts).in_handler != 0 {
            threads::count_misses(ts, site);
            leave(ts);
            return None;
        }
        (*ts).in_handler = 1;
        if site.has_ret {
            crate::hit::dispatch::reap_at_entry(ts, regs.sp);
        }
        let sp0 = regs.sp;
        // Whether the last kretprobe entry hijacked the return address (and
        // with which return stub).
        let mut hooked: Option<bool> = None;
        let mut divert = false;
        let mut jp: *mut Jprobe = core::ptr::null_mut();
        for e in &site.probes {
            if e.is_dead() || kprobe_flags(e.kp) & KPROBE_FLAG_DISABLED != 0 {
                continue;
            }
            match e.kind {
                EntryKind::K => {
                    if crate::hit::dispatch::call_pre(ts, e.kp, regs) != 0 && regs.ip != addr {
                        divert = true;
                        break;
                    }
                }
                EntryKind::R(rec) => {
                    if let Some(k) = crate::hit::dispatch::kret_entry(ts, rec, regs) {
                        hooked = Some(k);
                    }
                }
                EntryKind::J(j) => {
                    if jp.is_null() {
                        jp = j;
                    }
                }
            }
        }
        let route = match (hooked, divert, jp.is_null()) {
            (Some(known), false, true) => Some((sp0, known)),
            _ => None,
        };
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
        route
    }
}

/// A kretprobe entry hijacked the return address at `sp` (the stub for
/// return handlers of `known` code), and the thread goes on through the
/// trampoline: route the return through the predicted return stub instead
/// (see `ptap_arch::trampoline::predicted_return_stub` and docs/optprobes.md,
/// "Predicted kretprobe returns"). The address slot gets the relocated
/// instructions' address (the trampoline's resume address, in its frame's
/// select slot, plus the unskip), the select slot the stub's entry, which
/// calls them. The instances stay as they are: the newest returns to T, an
/// older one of the same frame to the return stub its successor saw. Done
/// after every handler of the hit and after the target's deferred signal
/// handlers, so that they all see the hijacked address, which unwinding and
/// backtraces know (redirects and jprobe entries read it too: those hits
/// keep the hijack). Not when something changed the slot since.
///
/// # Safety
/// `regs` is a select trampoline's frame (`ptap_arch::trampoline::Stub::ProbeSelect`
/// or `EntrySelect`); `sp` the probed function's stack pointer at entry.
#[inline(always)]
unsafe fn route_return(regs: &mut PtRegs, sp: u64, known: bool) {
    let Some((entry, _)) = predicted_stub(known) else {
        return;
    };
    // SAFETY: contract: the slot is in the frame; sp is the return address
    // slot of the function entered.
    unsafe {
        if core::ptr::read(sp as *const u64) != crate::hit::asm::trampoline_addr_for(known) {
            return;
        }
        let sel = (regs as *mut PtRegs as *mut u8).add(SELECT_SLOT) as *mut u64;
        core::ptr::write(sp as *mut u64, *sel + ptap_arch::trampoline::RESUME_LEN);
        *sel = entry;
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
        crate::hit::regs::regs_to(uc, &regs);
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
        crate::hit::dispatch::die_now(crate::base::signo::SIGSEGV);
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
        let ok = crate::hit::dispatch::kret_return(ts, regs, was == 0);
        (*ts).in_handler = was;
        if !ok {
            output::diag(b"ptap: kretprobe trampoline reached without an instance; aborting\n");
            crate::hit::dispatch::die_now(crate::base::signo::SIGSEGV);
        }
    }
    leave(ts);
    deliver_deferred(ts);
    unblock_async(mask);
}

/// Address of the trap-free return stub (0 until built).
pub(crate) static RET_STUB: AtomicU64 = AtomicU64::new(0);

pub fn ret_stub() -> u64 {
    RET_STUB.load(Ordering::Acquire)
}

/// The return stub for kretprobes whose return handler is code ptap knows
/// (`crate::kprobes::known`: a lighter vector save; 0 when not built: then [`ret_stub`] serves
/// them too). Stored before [`RET_STUB`].
pub(crate) static KNOWN_RET_STUB: AtomicU64 = AtomicU64::new(0);

pub fn known_ret_stub() -> u64 {
    KNOWN_RET_STUB.load(Ordering::Acquire)
}

/// The predicted return stubs (`ptap_arch::trampoline::predicted_return_stub`),
/// for return handlers of unknown [0] and known [1] code: their entries
/// (what a jump-path kretprobe entry puts in the probe stub's select slot)
/// and their return addresses T (what the function then returns to). 0
/// until built (with [`RET_STUB`], before it is published); [1] is [0]
/// when known handlers need no lighter save.
pub(crate) static PRED_ENTRY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
pub(crate) static PRED_RET: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// (entry, T) of the predicted return stub for return handlers of `known`
/// code, or None when it was not built.
#[inline(always)]
pub fn predicted_stub(known: bool) -> Option<(u64, u64)> {
    let i = known as usize;
    let e = PRED_ENTRY[i].load(Ordering::Acquire);
    (e != 0).then(|| (e, PRED_RET[i].load(Ordering::Relaxed)))
}
