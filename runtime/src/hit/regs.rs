//! A signal's ucontext to and from `pt_regs`.

use core::ffi::c_int;

use ptap_arch::regs::flags as rf;

use crate::abi::*;

pub(crate) type Uc = libc::ucontext_t;

pub(crate) fn greg(uc: *mut Uc, r: c_int) -> u64 {
    // SAFETY: uc is the kernel-provided context.
    unsafe { (*uc).uc_mcontext.gregs[r as usize] as u64 }
}

pub(crate) fn set_greg(uc: *mut Uc, r: c_int, v: u64) {
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
