//! Running a target's handler for a runtime-managed signal on the stack it
//! asked for. The runtime's SIGTRAP handler runs on the interrupted stack
//! (probe handlers need more room than a typical alternate stack), so when
//! it passes a signal on to a handler the target installed with SA_ONSTACK,
//! it switches to the thread's alternate stack itself, as the kernel would
//! have done. The fault handlers run on the alternate stack (a stack
//! overflow must still be caught); a target handler without SA_ONSTACK is
//! then called back on the interrupted stack.

use core::ffi::{c_int, c_void};

use crate::base::sys;

core::arch::global_asm!(
    ".text",
    // void ptap_rt_call_on_stack(fn, a0, a1, a2, stack_top)
    ".globl ptap_rt_call_on_stack",
    ".hidden ptap_rt_call_on_stack",
    ".type ptap_rt_call_on_stack,@function",
    "ptap_rt_call_on_stack:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "mov rsp, r8",
    "and rsp, -16",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "call rax",
    "mov rsp, rbp",
    ".cfi_def_cfa_register rsp",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    ".cfi_endproc",
    ".size ptap_rt_call_on_stack, .-ptap_rt_call_on_stack",
);

extern "C" {
    fn ptap_rt_call_on_stack(f: usize, a0: usize, a1: usize, a2: usize, top: u64);
}

const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;

#[repr(C)]
struct StackT {
    sp: u64,
    flags: i32,
    size: u64,
}

/// This thread's alternate signal stack (flags say whether it is enabled
/// and whether the thread runs on it now).
fn altstack() -> Option<StackT> {
    let mut cur = StackT {
        sp: 0,
        flags: 0,
        size: 0,
    };
    // SAFETY: sigaltstack(NULL, &cur) only writes `cur`.
    let r = unsafe { sys::syscall3(131, 0, &mut cur as *mut StackT as usize, 0) };
    (r == 0).then_some(cur)
}

/// Where the kernel would have put the target's handler frame, when that
/// is not the current stack: the top of the alternate stack for an
/// SA_ONSTACK handler (unless already on it); for another handler, below
/// the interrupted context's red zone when the runtime's handler runs on
/// the alternate stack (fault handlers) but the interrupted code did not.
fn frame_top(flags: u64, uc: *mut c_void) -> Option<u64> {
    let alt = altstack()?;
    if alt.flags & SS_DISABLE != 0 || alt.size == 0 {
        return None;
    }
    if flags & sys::SA_ONSTACK != 0 {
        return (alt.flags & SS_ONSTACK == 0).then(|| alt.sp.wrapping_add(alt.size) & !15);
    }
    if alt.flags & SS_ONSTACK == 0 || uc.is_null() {
        return None;
    }
    // SAFETY: uc is the kernel's ucontext of the running handler.
    let sp = unsafe { (*(uc as *mut libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] }
        as u64;
    let on_alt = sp >= alt.sp && sp - alt.sp < alt.size;
    (!on_alt).then(|| sp.wrapping_sub(256) & !15)
}

/// Call the target's handler `h` for `sig` (with the three arguments the
/// kernel passes: a one-argument handler ignores the others), on the
/// alternate stack when `flags` has SA_ONSTACK and one is available.
///
/// # Safety
/// `h` is a handler the target installed for `sig`; `info` and `uc` are
/// the kernel's arguments of the running signal handler.
pub unsafe fn call_handler(
    h: usize,
    flags: u64,
    sig: c_int,
    info: *mut libc::siginfo_t,
    uc: *mut c_void,
) {
    if let Some(top) = frame_top(flags, uc) {
        // SAFETY: a fresh frame at the top of the thread's unused alternate
        // stack, or below the interrupted context's red zone on its own
        // stack, where the kernel would have put the handler's frame.
        unsafe { ptap_rt_call_on_stack(h, sig as usize, info as usize, uc as usize, top) };
        return;
    }
    // SAFETY: the target installed h for sig (contract).
    unsafe {
        let f: unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            core::mem::transmute(h);
        f(sig, info, uc);
    }
}
