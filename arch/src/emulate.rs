//! Emulation of relative control transfers on a [`PtRegs`]: `call rel32`, `jmp rel8/32`,
//! `jcc rel8/32`, `loop`/`loope`/`loopne`, `jrcxz`/`jecxz`.
//!
//! These are never copied into a slot: their target is relative to the original address,
//! and a copied `call` would push the slot's address. [`emulate`] runs on the hit path:
//! no allocation, no panic, no libc.

use crate::regs::{flags, PtRegs};
use crate::ArchError;

/// A jcc condition, in the order of the opcode's low nibble (0x70 + cc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    O,
    No,
    B,
    Ae,
    E,
    Ne,
    Be,
    A,
    S,
    Ns,
    P,
    Np,
    L,
    Ge,
    Le,
    G,
}

impl Cond {
    /// All 16 conditions, index = the condition nibble.
    pub const ALL: [Cond; 16] = [
        Cond::O,
        Cond::No,
        Cond::B,
        Cond::Ae,
        Cond::E,
        Cond::Ne,
        Cond::Be,
        Cond::A,
        Cond::S,
        Cond::Ns,
        Cond::P,
        Cond::Np,
        Cond::L,
        Cond::Ge,
        Cond::Le,
        Cond::G,
    ];

    /// Condition from the low nibble of the opcode (0x70+cc / 0x0f 0x80+cc).
    pub fn from_nibble(cc: u8) -> Cond {
        Cond::ALL[(cc & 15) as usize]
    }

    /// Does the condition hold for these RFLAGS? (Intel SDM Vol. 2, Jcc.)
    pub fn holds(self, f: u64) -> bool {
        let cf = f & flags::CF != 0;
        let zf = f & flags::ZF != 0;
        let sf = f & flags::SF != 0;
        let of = f & flags::OF != 0;
        let pf = f & flags::PF != 0;
        match self {
            Cond::O => of,
            Cond::No => !of,
            Cond::B => cf,
            Cond::Ae => !cf,
            Cond::E => zf,
            Cond::Ne => !zf,
            Cond::Be => cf || zf,
            Cond::A => !cf && !zf,
            Cond::S => sf,
            Cond::Ns => !sf,
            Cond::P => pf,
            Cond::Np => !pf,
            Cond::L => sf != of,
            Cond::Ge => sf == of,
            Cond::Le => zf || sf != of,
            Cond::G => !zf && sf == of,
        }
    }
}

/// The loop-family instructions (opcodes 0xe0..=0xe3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    /// `loopne`/`loopnz`: count -= 1; jump if count != 0 and ZF = 0.
    Loopne,
    /// `loope`/`loopz`: count -= 1; jump if count != 0 and ZF = 1.
    Loope,
    /// `loop`: count -= 1; jump if count != 0.
    Loop,
    /// `jrcxz`/`jecxz`: jump if count == 0; nothing is decremented.
    Jrcxz,
}

/// Which count register: rcx, or ecx with a 0x67 address-size prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountReg {
    Rcx,
    Ecx,
}

/// An emulated instruction. `next` is the original address of the following instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// `call rel32`: push `ret`, jump to `target`.
    Call { target: u64, ret: u64 },
    /// `jmp rel8/rel32`.
    Jmp { target: u64 },
    /// `jcc rel8/rel32`.
    Jcc { cond: Cond, target: u64, next: u64 },
    /// `loop*` / `jrcxz` / `jecxz`.
    Loop {
        kind: LoopKind,
        count: CountReg,
        target: u64,
        next: u64,
    },
}

/// Apply `e` to `regs`: sets `regs.ip` (and sp, rcx as the instruction would).
///
/// `push(addr, value)` must write the 8-byte `value` at `addr` in the target's memory and
/// return false if that faulted; on failure `regs` is left untouched and
/// [`ArchError::StackFault`] is returned (the runtime then delivers the fault as if at the
/// original address). Hit path: no allocation, no panic.
pub fn emulate(
    e: &Emulation,
    regs: &mut PtRegs,
    push: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<(), ArchError> {
    match *e {
        Emulation::Call { target, ret } => {
            let sp = regs.sp.wrapping_sub(8);
            if !push(sp, ret) {
                return Err(ArchError::StackFault);
            }
            regs.sp = sp;
            regs.ip = target;
        }
        Emulation::Jmp { target } => regs.ip = target,
        Emulation::Jcc { cond, target, next } => {
            regs.ip = if cond.holds(regs.flags) { target } else { next };
        }
        Emulation::Loop {
            kind,
            count,
            target,
            next,
        } => {
            let zf = regs.flags & flags::ZF != 0;
            // A 32-bit count register write zero-extends into rcx, as every 32-bit
            // destination does in 64-bit mode (checked against the CPU in the tests).
            let value = match count {
                CountReg::Rcx => regs.cx,
                CountReg::Ecx => regs.cx & 0xffff_ffff,
            };
            let taken = match kind {
                LoopKind::Jrcxz => value == 0,
                _ => {
                    let n = match count {
                        CountReg::Rcx => value.wrapping_sub(1),
                        CountReg::Ecx => value.wrapping_sub(1) & 0xffff_ffff,
                    };
                    regs.cx = n;
                    n != 0
                        && match kind {
                            LoopKind::Loope => zf,
                            LoopKind::Loopne => !zf,
                            _ => true,
                        }
                }
            };
            regs.ip = if taken { target } else { next };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(flags: u64) -> PtRegs {
        PtRegs {
            flags: 0x202 | flags,
            sp: 0x7000_1000,
            ip: 0x1000,
            ..Default::default()
        }
    }

    #[test]
    fn call_pushes_return_address() {
        let e = Emulation::Call {
            target: 0x5000,
            ret: 0x1005,
        };
        let mut r = regs(0);
        let mut pushed = Vec::new();
        emulate(&e, &mut r, &mut |a, v| {
            pushed.push((a, v));
            true
        })
        .unwrap();
        assert_eq!(pushed, [(0x7000_0ff8, 0x1005)]);
        assert_eq!((r.ip, r.sp), (0x5000, 0x7000_0ff8));
    }

    #[test]
    fn call_with_faulting_stack_changes_nothing() {
        let e = Emulation::Call {
            target: 0x5000,
            ret: 0x1005,
        };
        let mut r = regs(0);
        let before = r;
        assert_eq!(
            emulate(&e, &mut r, &mut |_, _| false),
            Err(ArchError::StackFault)
        );
        assert_eq!(r, before);
    }

    #[test]
    fn jcc_truth_table() {
        use flags::*;
        // (condition, flags where it holds, flags where it does not)
        let cases = [
            (Cond::O, OF, 0),
            (Cond::No, 0, OF),
            (Cond::B, CF, 0),
            (Cond::Ae, 0, CF),
            (Cond::E, ZF, 0),
            (Cond::Ne, 0, ZF),
            (Cond::Be, ZF, 0),
            (Cond::A, 0, CF),
            (Cond::S, SF, 0),
            (Cond::Ns, 0, SF),
            (Cond::P, PF, 0),
            (Cond::Np, 0, PF),
            (Cond::L, SF, SF | OF),
            (Cond::Ge, SF | OF, OF),
            (Cond::Le, ZF, 0),
            (Cond::G, SF | OF, SF | OF | ZF),
        ];
        for (cond, yes, no) in cases {
            let e = Emulation::Jcc {
                cond,
                target: 0x2000,
                next: 0x1002,
            };
            let mut r = regs(yes);
            emulate(&e, &mut r, &mut |_, _| unreachable!()).unwrap();
            assert_eq!(r.ip, 0x2000, "{cond:?} should hold for {yes:#x}");
            let mut r = regs(no);
            emulate(&e, &mut r, &mut |_, _| unreachable!()).unwrap();
            assert_eq!(r.ip, 0x1002, "{cond:?} should not hold for {no:#x}");
        }
    }

    #[test]
    fn loops_count_and_test() {
        let run = |kind, count, cx: u64, zf: bool| {
            let mut r = regs(if zf { flags::ZF } else { 0 });
            r.cx = cx;
            let e = Emulation::Loop {
                kind,
                count,
                target: 0x900,
                next: 0x1002,
            };
            emulate(&e, &mut r, &mut |_, _| false).unwrap();
            (r.ip, r.cx)
        };
        assert_eq!(run(LoopKind::Loop, CountReg::Rcx, 3, false), (0x900, 2));
        assert_eq!(run(LoopKind::Loop, CountReg::Rcx, 1, false), (0x1002, 0));
        assert_eq!(
            run(LoopKind::Loop, CountReg::Rcx, 0, false),
            (0x900, u64::MAX)
        );
        assert_eq!(run(LoopKind::Loope, CountReg::Rcx, 3, false), (0x1002, 2));
        assert_eq!(run(LoopKind::Loope, CountReg::Rcx, 3, true), (0x900, 2));
        assert_eq!(run(LoopKind::Loopne, CountReg::Rcx, 3, true), (0x1002, 2));
        assert_eq!(run(LoopKind::Loopne, CountReg::Rcx, 3, false), (0x900, 2));
        assert_eq!(run(LoopKind::Jrcxz, CountReg::Rcx, 0, false), (0x900, 0));
        assert_eq!(
            run(LoopKind::Jrcxz, CountReg::Rcx, 1 << 32, false),
            (0x1002, 1 << 32)
        );
        assert_eq!(
            run(LoopKind::Jrcxz, CountReg::Ecx, 1 << 32, false),
            (0x900, 1 << 32)
        );
        assert_eq!(
            run(LoopKind::Loop, CountReg::Ecx, (7 << 32) | 1, false),
            (0x1002, 0)
        );
    }
}
