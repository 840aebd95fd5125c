//! The hit path's assembly: the guarded handler call (a fault in a handler
//! aborts the handler, not the target), the kretprobe and int3 return
//! trampolines, and `jprobe_return`.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::base::sys;
use crate::hit::regs::greg;
use crate::hit::regs::set_greg;
use crate::hit::regs::Uc;
use crate::hit::threads::{self, ThreadState};

core::arch::global_asm!(
    ".text",
    // u64 ptap_rt_guarded_call(fn, a0, a1, a2, guard, stack): fn runs on
    // `stack` (16-aligned top) unless it is 0; rbx keeps the caller's rsp.
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
    "test r9, r9",
    "jnz 2f",
    "call rax",
    "jmp 3f",
    "2:",
    "mov rbx, rsp",
    ".cfi_def_cfa_register rbx",
    "mov rsp, r9",
    "call rax",
    "mov rsp, rbx",
    ".cfi_def_cfa_register rsp",
    "3:",
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
    pub(crate) fn ptap_rt_jprobe_return_int3();
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
    pub(crate) fn ptap_rt_jp_realign();
}

extern "C" {
    fn ptap_rt_guarded_call(
        f: usize,
        a0: usize,
        a1: usize,
        a2: usize,
        guard: *mut threads::Guard,
        stack: u64,
    ) -> u64;
    pub(crate) fn ptap_rt_guard_recover();
    fn ptap_rt_kretprobe_trampoline();
}

/// The address hijacked return addresses point to: the trap-free return
/// stub (`crate::kprobes::optimize::ensure_ret_stub`, built at the first kretprobe
/// registration unless PTAP_NO_OPTIMIZE=1), else the int3 trampoline.
/// Fixed before the first hijack; never changes afterwards.
pub fn trampoline_addr() -> u64 {
    let s = crate::hit::jump::ret_stub();
    if s != 0 {
        s
    } else {
        int3_trampoline_addr()
    }
}

/// Where a hijacked return address points for a kretprobe whose return
/// handler is code ptap knows (`known`: `crate::kprobes::known`) or not.
pub fn trampoline_addr_for(known: bool) -> u64 {
    let k = crate::hit::jump::known_ret_stub();
    if known && k != 0 {
        k
    } else {
        trampoline_addr()
    }
}

/// Is `a` one of the addresses hijacked return addresses point to?
pub fn is_ret_trampoline(a: u64) -> bool {
    use crate::hit::jump::PRED_RET;
    use core::sync::atomic::Ordering::Relaxed;
    a == trampoline_addr()
        || (a != 0
            && (a == crate::hit::jump::known_ret_stub()
                || a == PRED_RET[0].load(Relaxed)
                || a == PRED_RET[1].load(Relaxed)))
}

/// The int3 kretprobe trampoline (trap path).
pub fn int3_trampoline_addr() -> u64 {
    ptap_rt_kretprobe_trampoline as *const () as u64
}

/// Has a handler of code ptap does not know (`crate::kprobes::known`) been
/// registered in this process? Until then no handler calls libc, so none
/// changes `errno`, and [`guarded`] does not save and restore it.
static UNKNOWN_HANDLERS: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

pub fn note_unknown_handlers() {
    UNKNOWN_HANDLERS.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// The compiled-script glue functions (the script layer sets them when it
/// attaches a module, [`set_stack_glue`]): handlers called through them run
/// on the handler stack, whose use the compiler bounds
/// (compiler/src/codegen/stack.rs). C handlers keep the thread's stack, as
/// before: nothing bounds theirs.
static STACK_GLUE: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

/// Name the script glue functions whose calls run on the handler stack
/// (at most 8; the hottest first: [`guarded`] compares in this order).
pub fn set_stack_glue(fs: &[usize]) {
    for (slot, &f) in STACK_GLUE.iter().zip(fs) {
        slot.store(f, Ordering::Relaxed);
    }
}

#[inline(always)]
fn uses_handler_stack(f: usize) -> bool {
    STACK_GLUE.iter().any(|g| g.load(Ordering::Relaxed) == f)
}

/// Call `f(a0, a1, a2)` so that a fault inside it aborts the call instead of
/// the process; a compiled-script handler runs on this thread's handler
/// stack (a thread with little stack left must not overflow because of a
/// probe). Returns None if it faulted.
///
/// # Safety
/// `f` must be a C function taking up to three integer/pointer arguments.
#[inline(always)]
pub unsafe fn guarded(
    ts: *mut ThreadState,
    f: usize,
    a0: usize,
    a1: usize,
    a2: usize,
) -> Option<u64> {
    let stack = if uses_handler_stack(f) {
        // SAFETY: ts is this thread's slot.
        unsafe { (*ts).hstack }
    } else {
        0
    };
    // SAFETY: forwarded contract.
    unsafe { guarded_on(ts, f, a0, a1, a2, stack) }
}

/// `stack`: the top of the stack `f` runs on (0: the current one). Not
/// when another guarded call runs on this thread (a handler's fault path,
/// a probe hit inside a C module's init or handler): that one may be on it; nor on
/// the thread's signal alternate stack (`threads::on_altstack`).
///
/// # Safety
/// As [`guarded`]; `stack` is 0 or the 16-aligned top of this thread's
/// handler stack.
#[inline(always)]
unsafe fn guarded_on(
    ts: *mut ThreadState,
    f: usize,
    a0: usize,
    a1: usize,
    a2: usize,
    stack: u64,
) -> Option<u64> {
    // SAFETY: ts is this thread's slot; the asm saves/restores callee-saved regs.
    unsafe {
        let g = core::ptr::addr_of_mut!((*ts).guard);
        let outer = core::ptr::read(g);
        let stack = if stack == 0 || outer.active != 0 || threads::on_altstack(ts) {
            0
        } else {
            stack
        };
        let outer_regs = (*ts).cur_regs;
        (*ts).cur_regs = a1;
        (*g).faulted = 0;
        // A handler that calls libc may change errno: the interrupted code
        // must find it as it left it. (Known handler code calls no libc.)
        let errno = if UNKNOWN_HANDLERS.load(core::sync::atomic::Ordering::Relaxed) {
            sys::errno_save()
        } else {
            None
        };
        let r = ptap_rt_guarded_call(f, a0, a1, a2, g, stack);
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
        // A probe handler or the runtime's own work (a registration the
        // module called, holding the registry's lock) on top of it: not
        // now. (`modcall::call` runs init_module() outside any own work.)
        if (*ts).guard.active == 0 || (*ts).in_handler != 0 {
            return false;
        }
        // A raw place, not a reference: see "Who may touch a slot" in
        // hit/threads.rs.
        let g = core::ptr::addr_of_mut!((*ts).guard);
        (*g).active = 0;
        (*g).faulted = 1;
        (*g).fault_trapno = u64::MAX;
        (*g).fault_ip = greg(uc, libc::REG_RIP);
        (*g).fault_addr = 0;
        set_greg(uc, libc::REG_RSP, (*g).saved_rsp);
        set_greg(uc, libc::REG_RIP, ptap_rt_guard_recover as *const () as u64);
        set_greg(uc, libc::REG_RAX, 0);
    }
    true
}
