//! The register file the runtime hands to handlers: Linux x86-64 `struct pt_regs`,
//! plus the two argument conventions (SysV calls vs. system calls), kept apart.

use iced_x86::Register;

/// Linux x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h), field for field:
/// r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss.
/// `#[repr(C)]`, 21 × u64 = 168 bytes, so C probe modules and compiled handlers see
/// the same layout as a kernel module would.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

/// Size of [`PtRegs`] in bytes (what the C header must agree with).
pub const PT_REGS_SIZE: usize = core::mem::size_of::<PtRegs>();
const _: () = assert!(PT_REGS_SIZE == 21 * 8);

/// Byte offsets of the fields, for trampolines and hand-written stubs.
/// The 15 general-purpose registers other than rsp, each with its offset
/// in [`PtRegs`]: what code that saves or loads a pt_regs frame walks.
pub const GPRS: [(Register, usize); 15] = [
    (Register::RAX, offset::AX),
    (Register::RBX, offset::BX),
    (Register::RCX, offset::CX),
    (Register::RDX, offset::DX),
    (Register::RSI, offset::SI),
    (Register::RDI, offset::DI),
    (Register::RBP, offset::BP),
    (Register::R8, offset::R8),
    (Register::R9, offset::R9),
    (Register::R10, offset::R10),
    (Register::R11, offset::R11),
    (Register::R12, offset::R12),
    (Register::R13, offset::R13),
    (Register::R14, offset::R14),
    (Register::R15, offset::R15),
];

pub mod offset {
    use super::PtRegs;
    use core::mem::offset_of;
    pub const R15: usize = offset_of!(PtRegs, r15);
    pub const R14: usize = offset_of!(PtRegs, r14);
    pub const R13: usize = offset_of!(PtRegs, r13);
    pub const R12: usize = offset_of!(PtRegs, r12);
    pub const BP: usize = offset_of!(PtRegs, bp);
    pub const BX: usize = offset_of!(PtRegs, bx);
    pub const R11: usize = offset_of!(PtRegs, r11);
    pub const R10: usize = offset_of!(PtRegs, r10);
    pub const R9: usize = offset_of!(PtRegs, r9);
    pub const R8: usize = offset_of!(PtRegs, r8);
    pub const AX: usize = offset_of!(PtRegs, ax);
    pub const CX: usize = offset_of!(PtRegs, cx);
    pub const DX: usize = offset_of!(PtRegs, dx);
    pub const SI: usize = offset_of!(PtRegs, si);
    pub const DI: usize = offset_of!(PtRegs, di);
    pub const ORIG_AX: usize = offset_of!(PtRegs, orig_ax);
    pub const IP: usize = offset_of!(PtRegs, ip);
    pub const CS: usize = offset_of!(PtRegs, cs);
    pub const FLAGS: usize = offset_of!(PtRegs, flags);
    pub const SP: usize = offset_of!(PtRegs, sp);
    pub const SS: usize = offset_of!(PtRegs, ss);
}

/// RFLAGS bits.
pub mod flags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    /// Trap flag: single-step.
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// SysV AMD64 integer argument registers, in order (function calls).
pub const SYSV_ARG_REGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];
/// Linux x86-64 system-call argument registers, in order: the 4th is r10, not rcx.
pub const SYSCALL_ARG_REGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::R10,
    Register::R8,
    Register::R9,
];

impl PtRegs {
    /// Value of a 64-bit general-purpose register (or RIP). `None` for any other register
    /// (partial registers, segment, vector …).
    pub fn get(&self, r: Register) -> Option<u64> {
        Some(match r {
            Register::RAX => self.ax,
            Register::RCX => self.cx,
            Register::RDX => self.dx,
            Register::RBX => self.bx,
            Register::RSP => self.sp,
            Register::RBP => self.bp,
            Register::RSI => self.si,
            Register::RDI => self.di,
            Register::R8 => self.r8,
            Register::R9 => self.r9,
            Register::R10 => self.r10,
            Register::R11 => self.r11,
            Register::R12 => self.r12,
            Register::R13 => self.r13,
            Register::R14 => self.r14,
            Register::R15 => self.r15,
            Register::RIP => self.ip,
            _ => return None,
        })
    }

    /// Set a 64-bit general-purpose register (or RIP). Returns false for any other register.
    pub fn set(&mut self, r: Register, v: u64) -> bool {
        let slot = match r {
            Register::RAX => &mut self.ax,
            Register::RCX => &mut self.cx,
            Register::RDX => &mut self.dx,
            Register::RBX => &mut self.bx,
            Register::RSP => &mut self.sp,
            Register::RBP => &mut self.bp,
            Register::RSI => &mut self.si,
            Register::RDI => &mut self.di,
            Register::R8 => &mut self.r8,
            Register::R9 => &mut self.r9,
            Register::R10 => &mut self.r10,
            Register::R11 => &mut self.r11,
            Register::R12 => &mut self.r12,
            Register::R13 => &mut self.r13,
            Register::R14 => &mut self.r14,
            Register::R15 => &mut self.r15,
            Register::RIP => &mut self.ip,
            _ => return false,
        };
        *slot = v;
        true
    }

    /// Function argument `n` (0-based) under the SysV convention, for n < 6.
    /// Arguments beyond the 6th live on the stack and are not read here.
    pub fn sysv_arg(&self, n: usize) -> Option<u64> {
        SYSV_ARG_REGS.get(n).and_then(|r| self.get(*r))
    }

    /// Set SysV function argument `n` (0-based, n < 6). Returns false when n >= 6.
    pub fn set_sysv_arg(&mut self, n: usize, v: u64) -> bool {
        SYSV_ARG_REGS.get(n).is_some_and(|r| self.set(*r, v))
    }

    /// System-call argument `n` (0-based, n < 6): rdi rsi rdx r10 r8 r9.
    pub fn syscall_arg(&self, n: usize) -> Option<u64> {
        SYSCALL_ARG_REGS.get(n).and_then(|r| self.get(*r))
    }

    /// Function (or raw system-call) return value: rax.
    pub fn return_value(&self) -> u64 {
        self.ax
    }

    pub fn set_return_value(&mut self, v: u64) {
        self.ax = v;
    }

    /// The stack pointer.
    pub fn stack_pointer(&self) -> u64 {
        self.sp
    }
}

/// Indices into a Linux x86-64 signal frame's `uc_mcontext.gregs` (`greg_t[23]`,
/// from `<sys/ucontext.h>`).
pub mod gregs {
    pub const NGREG: usize = 23;
    pub const R8: usize = 0;
    pub const R9: usize = 1;
    pub const R10: usize = 2;
    pub const R11: usize = 3;
    pub const R12: usize = 4;
    pub const R13: usize = 5;
    pub const R14: usize = 6;
    pub const R15: usize = 7;
    pub const RDI: usize = 8;
    pub const RSI: usize = 9;
    pub const RBP: usize = 10;
    pub const RBX: usize = 11;
    pub const RDX: usize = 12;
    pub const RAX: usize = 13;
    pub const RCX: usize = 14;
    pub const RSP: usize = 15;
    pub const RIP: usize = 16;
    pub const EFL: usize = 17;
    /// cs | gs << 16 | fs << 32 | ss << 48
    pub const CSGSFS: usize = 18;
    pub const ERR: usize = 19;
    pub const TRAPNO: usize = 20;
    pub const OLDMASK: usize = 21;
    pub const CR2: usize = 22;
}

impl PtRegs {
    /// Registers from a signal frame's `uc_mcontext.gregs`. `orig_ax` is -1, as Linux
    /// reports for a trap that is not a system call. Hit-path safe.
    pub fn from_gregs(g: &[i64; gregs::NGREG]) -> PtRegs {
        let r = |i: usize| g[i] as u64;
        PtRegs {
            r15: r(gregs::R15),
            r14: r(gregs::R14),
            r13: r(gregs::R13),
            r12: r(gregs::R12),
            bp: r(gregs::RBP),
            bx: r(gregs::RBX),
            r11: r(gregs::R11),
            r10: r(gregs::R10),
            r9: r(gregs::R9),
            r8: r(gregs::R8),
            ax: r(gregs::RAX),
            cx: r(gregs::RCX),
            dx: r(gregs::RDX),
            si: r(gregs::RSI),
            di: r(gregs::RDI),
            orig_ax: u64::MAX,
            ip: r(gregs::RIP),
            cs: r(gregs::CSGSFS) & 0xffff,
            flags: r(gregs::EFL),
            sp: r(gregs::RSP),
            ss: (r(gregs::CSGSFS) >> 48) & 0xffff,
        }
    }

    /// Write the general-purpose registers, ip and flags back into a signal frame
    /// (`cs`, `ss` and `orig_ax` are not written). Hit-path safe.
    pub fn to_gregs(&self, g: &mut [i64; gregs::NGREG]) {
        let pairs = [
            (gregs::R15, self.r15),
            (gregs::R14, self.r14),
            (gregs::R13, self.r13),
            (gregs::R12, self.r12),
            (gregs::RBP, self.bp),
            (gregs::RBX, self.bx),
            (gregs::R11, self.r11),
            (gregs::R10, self.r10),
            (gregs::R9, self.r9),
            (gregs::R8, self.r8),
            (gregs::RAX, self.ax),
            (gregs::RCX, self.cx),
            (gregs::RDX, self.dx),
            (gregs::RSI, self.si),
            (gregs::RDI, self.di),
            (gregs::RIP, self.ip),
            (gregs::EFL, self.flags),
            (gregs::RSP, self.sp),
        ];
        for (i, v) in pairs {
            g[i] = v as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_linux() {
        // Linux: r15 at 0 … di at 14*8, orig_ax 15*8, ip 16*8, cs 17*8, flags 18*8, sp 19*8, ss 20*8.
        assert_eq!(offset::R15, 0);
        assert_eq!(offset::BP, 4 * 8);
        assert_eq!(offset::AX, 10 * 8);
        assert_eq!(offset::DI, 14 * 8);
        assert_eq!(offset::ORIG_AX, 15 * 8);
        assert_eq!(offset::IP, 16 * 8);
        assert_eq!(offset::FLAGS, 18 * 8);
        assert_eq!(offset::SP, 19 * 8);
        assert_eq!(offset::SS, 20 * 8);
    }

    #[test]
    fn sysv_and_syscall_arguments_differ_in_the_fourth() {
        let r = PtRegs {
            di: 1,
            si: 2,
            dx: 3,
            cx: 4,
            r10: 40,
            r8: 5,
            r9: 6,
            ..Default::default()
        };
        let sysv: Vec<u64> = (0..6).map(|n| r.sysv_arg(n).unwrap()).collect();
        let sys: Vec<u64> = (0..6).map(|n| r.syscall_arg(n).unwrap()).collect();
        assert_eq!(sysv, [1, 2, 3, 4, 5, 6]);
        assert_eq!(sys, [1, 2, 3, 40, 5, 6]);
        assert_eq!(r.sysv_arg(6), None);
        let mut w = r;
        assert!(w.set_sysv_arg(0, 99));
        assert_eq!(w.di, 99);
        assert!(!w.set_sysv_arg(7, 1));
        assert!(!w.set(Register::EAX, 1));
    }

    #[test]
    fn gregs_round_trip() {
        let mut g = [0i64; gregs::NGREG];
        for (k, v) in g.iter_mut().enumerate() {
            *v = 0x100 + k as i64;
        }
        g[gregs::CSGSFS] = 0x002b_0000_0000_0033;
        let r = PtRegs::from_gregs(&g);
        assert_eq!(
            (r.r8, r.di, r.ax, r.sp, r.ip, r.flags),
            (0x100, 0x108, 0x10d, 0x10f, 0x110, 0x111)
        );
        assert_eq!((r.cs, r.ss, r.orig_ax), (0x33, 0x2b, u64::MAX));
        let mut h = [0i64; gregs::NGREG];
        h[gregs::CSGSFS] = g[gregs::CSGSFS];
        r.to_gregs(&mut h);
        assert_eq!(&h[..=gregs::CSGSFS], &g[..=gregs::CSGSFS]);
    }
}
