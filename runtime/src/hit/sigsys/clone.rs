//! clone, clone3, fork and vfork for an armed thread.
//!
//! Syscall User Dispatch is not inherited by the children of fork or clone,
//! so the SIGSYS handler makes these calls itself and arms the child before
//! it runs any target code.
//!
//! * **No CLONE_VM** (fork, most clone calls): the child is a copy of this
//!   process and resumes inside the SIGSYS handler, on its copy of the
//!   stack: it re-arms itself and returns 0 through the normal path.
//! * **CLONE_VM with a new stack** (pthread_create's clone3, posix_spawn's
//!   CLONE_VM|CLONE_VFORK): the child resumes after the `syscall` of
//!   `ptap_sud_clone` on its new stack, with this handler's registers. It
//!   calls [`child_start`] below its stack pointer (never touching the bytes
//!   at or above it, where glibc's clone left the function and argument),
//!   which copies the target's registers from the parent's snapshot, arms
//!   the thread and tells the parent; then the asm loads those registers,
//!   sets rax = 0, rsp = the new stack, rcx = rip, r11 = rflags (what
//!   `syscall` leaves in a native child) and jumps to the target's code.
//!   The parent waits for that copy before its frame goes away.
//!   The child's MXCSR and x87 control word are the parent's (from the
//!   saved FPU state); vector registers are not carried over (they are
//!   caller-saved across the libc functions that make threads).
//! * **CLONE_VM without a stack and with CLONE_VFORK** (vfork): made with
//!   CLONE_VM dropped (see `handler`).
//! * **CLONE_VM without a stack and without CLONE_VFORK**: two threads on
//!   one stack; refused with -EINVAL while syscall probes are armed.

use core::sync::atomic::{AtomicU32, Ordering};

use ptap_arch::regs::PtRegs;

use super::table;
use super::{raw, NR_CLONE, NR_CLONE3, NR_FORK};
use crate::base::sys;

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;
const SIGCHLD: u64 = 17;
const EINVAL: i64 = 22;

/// Shared between the parent's handler frame and the new child (CLONE_VM).
/// The asm reads `nr`, `args` and `child_fn` at fixed offsets.
#[repr(C)]
pub struct CloneCall {
    nr: u64,         // 0
    args: [u64; 6],  // 8
    child_fn: usize, // 56
    regs: PtRegs,
    mxcsr: u32,
    fcw: u16,
    /// CLONE_THREAD: a thread of this process (always armed), not a new
    /// process sharing memory (armed only when children are followed).
    thread: bool,
    done: AtomicU32,
}

/// Register image the child's asm loads (indices below).
type Out = [u64; 18];
const AX: usize = 0;
const BX: usize = 1;
const CX: usize = 2;
const DX: usize = 3;
const SI: usize = 4;
const DI: usize = 5;
const BP: usize = 6;
const R8: usize = 7;
const R9: usize = 8;
const R10: usize = 9;
const R11: usize = 10;
const R12: usize = 11;
const R13: usize = 12;
const R14: usize = 13;
const R15: usize = 14;
const SP: usize = 15;
const FL: usize = 16;
const IP: usize = 17;

core::arch::global_asm!(
    ".text",
    // i64 ptap_sud_clone(CloneCall *call)
    ".globl ptap_sud_clone",
    ".hidden ptap_sud_clone",
    ".type ptap_sud_clone,@function",
    "ptap_sud_clone:",
    "push rbx",
    "push r12",
    "push r13",
    "mov r12, rdi",
    "mov rax, [r12]",
    "mov rdi, [r12 + 8]",
    "mov rsi, [r12 + 16]",
    "mov rdx, [r12 + 24]",
    "mov r10, [r12 + 32]",
    "mov r8, [r12 + 40]",
    "mov r9, [r12 + 48]",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "pop r13",
    "pop r12",
    "pop rbx",
    "ret",
    // The child: rsp = its new stack, r12 = the parent's CloneCall.
    "2:",
    "mov rbx, rsp",
    "sub rsp, 512",
    "and rsp, -16",
    "mov rdi, r12",
    "mov rsi, rbx",
    "mov rdx, rsp",
    "call qword ptr [r12 + 56]",
    "mov rcx, rsp",
    "push qword ptr [rcx + 128]",
    "popfq",
    "mov rax, [rcx + 0]",
    "mov rbx, [rcx + 8]",
    "mov rdx, [rcx + 24]",
    "mov rsi, [rcx + 32]",
    "mov rdi, [rcx + 40]",
    "mov rbp, [rcx + 48]",
    "mov r8, [rcx + 56]",
    "mov r9, [rcx + 64]",
    "mov r10, [rcx + 72]",
    "mov r12, [rcx + 88]",
    "mov r13, [rcx + 96]",
    "mov r14, [rcx + 104]",
    "mov r15, [rcx + 112]",
    "mov r11, [rcx + 80]",
    "mov rsp, [rcx + 120]",
    "mov rcx, [rcx + 136]",
    "jmp rcx",
    ".size ptap_sud_clone, .-ptap_sud_clone",
);

extern "C" {
    fn ptap_sud_clone(call: *mut CloneCall) -> i64;
}

const _: () = assert!(core::mem::offset_of!(CloneCall, child_fn) == 56);
const _: () = assert!(core::mem::offset_of!(CloneCall, args) == 8);
const _: () = assert!(R11 * 8 == 80 && SP * 8 == 120 && FL * 8 == 128 && IP * 8 == 136);

/// Runs in the new child thread, on its new stack, before any target code.
extern "C" fn child_start(call: *mut CloneCall, newsp: u64, out: *mut Out) {
    // SAFETY: the parent keeps `call` alive until `done` is set; `out` is a
    // buffer on this child's stack reserved by the asm.
    unsafe {
        let c = &*call;
        let r = &c.regs;
        let o = &mut *out;
        o[AX] = 0;
        o[BX] = r.bx;
        o[CX] = r.ip;
        o[DX] = r.dx;
        o[SI] = r.si;
        o[DI] = r.di;
        o[BP] = r.bp;
        o[R8] = r.r8;
        o[R9] = r.r9;
        o[R10] = r.r10;
        o[R12] = r.r12;
        o[R13] = r.r13;
        o[R14] = r.r14;
        o[R15] = r.r15;
        o[SP] = newsp;
        o[FL] = r.flags & !ptap_arch::regs::flags::TF;
        o[R11] = o[FL];
        o[IP] = r.ip;
        let mxcsr = c.mxcsr;
        let fcw = c.fcw;
        core::arch::asm!("ldmxcsr [{0}]", "fldcw [{1}]", in(reg) &mxcsr, in(reg) &fcw, options(nostack));
        if c.thread || super::probes::FOLLOW.load(Ordering::Acquire) {
            if let Some(s) = table::current() {
                if !c.thread {
                    s.vm_child.store(1, Ordering::Release);
                }
                super::probes::arm_slot(s);
            }
        }
        c.done.store(1, Ordering::Release);
        sys::futex_wake(c.done.as_ptr() as *const u32);
    }
}

/// A call that makes a copy of this process: the child resumes here.
fn fork_like(nr: usize, a: &[u64; 6], slot: Option<&'static table::Slot>) -> i64 {
    let r = raw(nr, a);
    if r == 0 {
        // The child: one thread, not armed (fork does not inherit dispatch).
        // A raw fork runs no atfork hook: learn the new pid here.
        crate::hit::threads::note_own_process();
        let s = table::after_fork(slot);
        if !super::probes::FOLLOW.load(Ordering::Acquire) {
            // Only the first process is traced: this child never arms.
            super::probes::SHUT.store(true, Ordering::Release);
        } else if let Some(s) = s {
            super::probes::arm_slot(s);
        }
    }
    r
}

fn fp_control(uc: *mut libc::ucontext_t) -> (u32, u16) {
    // SAFETY: the kernel-provided context; fpregs points into the frame.
    unsafe {
        let f = (*uc).uc_mcontext.fpregs;
        if f.is_null() {
            (0x1f80, 0x37f)
        } else {
            ((*f).mxcsr, (*f).cwd)
        }
    }
}

/// clone / clone3 / fork / vfork for the target (see the module docs).
pub fn clone(
    nr: usize,
    mut a: [u64; 6],
    uc: *mut libc::ucontext_t,
    slot: Option<&'static table::Slot>,
) -> i64 {
    let mut cargs = [0u64; 11];
    let (flags, stack) = match nr {
        NR_CLONE => (a[0], a[1]),
        NR_CLONE3 => {
            if a[0] == 0 || a[1] < 64 || a[1] > 4096 {
                return raw(nr, &a); // let the kernel refuse it
            }
            // The target's struct clone_args (the first 64 bytes are always
            // there: flags .. stack_size .. tls); unreadable: the kernel says -EFAULT.
            let n = (a[1] as usize).min(88) / 8;
            for (i, w) in cargs.iter_mut().enumerate().take(n) {
                match super::read_user_u64(a[0] + 8 * i as u64) {
                    Some(v) => *w = v,
                    None => return raw(nr, &a),
                }
            }
            (cargs[0], cargs[5])
        }
        NR_FORK => (0, 0),
        _ => (CLONE_VM | CLONE_VFORK, 0), // vfork
    };
    if flags & CLONE_VM == 0 {
        return fork_like(nr, &a, slot);
    }
    if stack == 0 {
        if flags & CLONE_VFORK == 0 {
            return -EINVAL;
        }
        return match nr {
            NR_CLONE => {
                a[0] &= !CLONE_VM;
                fork_like(NR_CLONE, &a, slot)
            }
            NR_CLONE3 => {
                cargs[0] &= !CLONE_VM;
                a[0] = cargs.as_ptr() as u64;
                a[1] = a[1].min(88);
                fork_like(NR_CLONE3, &a, slot)
            }
            _ => fork_like(NR_CLONE, &[CLONE_VFORK | SIGCHLD, 0, 0, 0, 0, 0], slot),
        };
    }
    let (mxcsr, fcw) = fp_control(uc);
    let mut call = CloneCall {
        nr: nr as u64,
        args: a,
        child_fn: child_start as *const () as usize,
        regs: crate::hit::regs::regs_from(uc),
        mxcsr,
        fcw,
        thread: flags & CLONE_THREAD != 0,
        done: AtomicU32::new(0),
    };
    // The asm's `syscall` is in the runtime's text, which may be outside the
    // exempt range: the selector is at ALLOW for that call (the new thread
    // does not inherit the dispatch: it arms itself in child_start).
    let allow = super::probes::Untraced::new();
    // SAFETY: the asm performs the call; the child never returns here.
    let r = unsafe { ptap_sud_clone(&mut call) };
    drop(allow);
    if r > 0 {
        // Wait until the child has copied the snapshot (it lives in this frame).
        while call.done.load(Ordering::Acquire) == 0 {
            // SAFETY: futex word in this frame.
            unsafe { sys::futex_wait(call.done.as_ptr() as *const u32, 0, 100) };
            if call.done.load(Ordering::Acquire) == 0
                // SAFETY: kill(pid, 0) probes existence only.
                && unsafe { sys::syscall3(62, r as usize, 0, 0) } == -3
            {
                break; // the child died before copying
            }
        }
    }
    r
}
