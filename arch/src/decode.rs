//! Decoding: one instruction ([`decode_one`]), a whole function by linear sweep
//! ([`decode_function`]), instruction boundaries ([`check_boundary`]) and the
//! classification every other module works from ([`Class`], the `read_one` of
//! frida-gum's relocator).
//!
//! All code handed in must be the ORIGINAL bytes: a copy with any int3 or jump that
//! ptap itself planted already put back, or the linear sweep desynchronizes.

use iced_x86::{
    Code, ConditionCode, Decoder, DecoderError, DecoderOptions, FlowControl, Formatter,
    GasFormatter, Instruction, OpKind, Register,
};

use crate::emulate::{Cond, CountReg, LoopKind};
use crate::ArchError;

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// One instruction: where it starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub addr: u64,
    pub len: u8,
}

impl Insn {
    pub fn end(&self) -> u64 {
        self.addr.wrapping_add(self.len as u64)
    }
}

/// What an instruction needs in order to run somewhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Position independent: copied byte for byte.
    Plain,
    /// Has a RIP-relative memory operand: re-encoded for the new address.
    RipRelative,
    /// `call rel32`: emulated.
    RelCall { target: u64 },
    /// `jmp rel8/rel32`: emulated.
    RelJmp { target: u64 },
    /// `jcc rel8/rel32`: emulated.
    Jcc { cond: Cond, target: u64 },
    /// `loop*`, `jrcxz`, `jecxz`: emulated.
    Loop {
        kind: LoopKind,
        count: CountReg,
        target: u64,
    },
    /// `call r/m64`: rewritten so that it pushes the ORIGINAL return address.
    IndirectCall,
    /// `jmp r/m64`: copied (re-encoded if RIP-relative).
    IndirectJmp,
    /// `ret`, `ret imm16`: copied.
    Ret,
    /// `syscall`: copied (rcx gets the slot's next address instead of the original's).
    Syscall,
    /// Cannot run out of line and is not emulated.
    Refused(&'static str),
}

impl Class {
    /// Is this a call of any kind (the optprobe rules forbid calls in a region)?
    pub fn is_call(&self) -> bool {
        matches!(self, Class::RelCall { .. } | Class::IndirectCall)
    }

    /// Branch target of a relative branch or call.
    pub fn target(&self) -> Option<u64> {
        match *self {
            Class::RelCall { target }
            | Class::RelJmp { target }
            | Class::Jcc { target, .. }
            | Class::Loop { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// A decoded instruction of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FnInsn {
    pub addr: u64,
    pub len: u8,
    pub class: Class,
}

/// The result of decoding a whole function from its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Runtime address of the first byte.
    pub start: u64,
    /// One past the last byte decoded (= start + code length).
    pub end: u64,
    /// Every instruction, in address order.
    pub insns: Vec<FnInsn>,
    /// Addresses of indirect jumps (`jmp r/m`): switch tables, tail calls through pointers.
    pub indirect_jumps: Vec<u64>,
    /// (branch address, target) for every relative jmp/jcc/loop/call whose target lies
    /// inside [start, end).
    pub internal_branches: Vec<(u64, u64)>,
    /// Addresses of call instructions (relative and indirect).
    pub calls: Vec<u64>,
}

impl FunctionInfo {
    pub fn has_indirect_jump(&self) -> bool {
        !self.indirect_jumps.is_empty()
    }

    /// Index in `insns` of the instruction starting at `addr`.
    pub fn index_of(&self, addr: u64) -> Option<usize> {
        self.insns.binary_search_by_key(&addr, |i| i.addr).ok()
    }
}

/// Decode the instruction at the start of `bytes`, which sits at runtime address `addr`.
pub fn decode_one(bytes: &[u8], addr: u64) -> Result<Instruction, ArchError> {
    let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let i = d.decode();
    match d.last_error() {
        DecoderError::None => Ok(i),
        DecoderError::NoMoreBytes => Err(truncated_or_invalid(bytes)),
        _ => Err(ArchError::Undecodable),
    }
}

/// The address of the first instruction of `code` (at `addr`, decoded
/// linearly) that is not legacy-encoded (VEX, EVEX, XOP, 3DNow!): code
/// without one writes at most bits 0-127 of the vector registers.
pub fn first_non_legacy(code: &[u8], addr: u64) -> Option<u64> {
    let mut d = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut i);
        if i.code() != iced_x86::Code::INVALID && i.encoding() != iced_x86::EncodingKind::Legacy {
            return Some(i.ip());
        }
    }
    None
}

/// iced reports "no more bytes" for an invalid opcode at the end of the buffer too
/// (it reads a ModRM first): decode a zero-padded copy to tell the two apart.
fn truncated_or_invalid(tail: &[u8]) -> ArchError {
    let mut buf = [0u8; MAX_INSN_LEN];
    let n = tail.len().min(MAX_INSN_LEN);
    buf[..n].copy_from_slice(&tail[..n]);
    let mut d = Decoder::new(64, &buf, DecoderOptions::NONE);
    let _ = d.decode();
    match d.last_error() {
        DecoderError::None | DecoderError::NoMoreBytes => ArchError::Truncated,
        _ => ArchError::Undecodable,
    }
}

/// Text of an instruction in AT&T syntax, for messages (`ptap -v`). Registration time only.
pub fn disassemble(bytes: &[u8], addr: u64) -> String {
    match decode_one(bytes, addr) {
        Ok(i) => format_insn(&i),
        Err(e) => format!("({e})"),
    }
}

pub(crate) fn format_insn(i: &Instruction) -> String {
    let mut s = String::new();
    GasFormatter::new().format(i, &mut s);
    s
}

/// True if one of the legacy prefixes in front of the opcode is 0x66 (operand size).
/// On near branches Intel ignores it while AMD truncates RIP to 16 bits, so such
/// branches are refused rather than emulated one way or the other.
fn has_operand_size_prefix(raw: &[u8]) -> bool {
    for &b in raw {
        match b {
            0x66 => return true,
            0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0x40..=0x4f => {}
            _ => return false,
        }
    }
    false
}

/// Classify a decoded instruction (`raw` = its bytes). This is the single place that
/// decides what may run out of line.
pub fn classify(i: &Instruction, raw: &[u8]) -> Class {
    use Class::Refused;
    if i.code() == Code::INVALID {
        return Refused("invalid instruction");
    }
    if i.is_privileged() {
        return Refused("privileged instruction");
    }
    let prefix66 = || has_operand_size_prefix(raw);
    match i.flow_control() {
        FlowControl::Next => {
            if i.is_ip_rel_memory_operand() {
                Class::RipRelative
            } else {
                Class::Plain
            }
        }
        FlowControl::UnconditionalBranch => match i.code() {
            Code::Jmp_rel8_64 | Code::Jmp_rel32_64 if !prefix66() => Class::RelJmp {
                target: i.near_branch_target(),
            },
            Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Jmp_rel16 => {
                Refused("jmp with an operand-size prefix (vendor-specific meaning)")
            }
            _ => Refused("far jmp"),
        },
        FlowControl::ConditionalBranch => {
            let target = i.near_branch_target();
            let loop_of = |kind, count| Class::Loop {
                kind,
                count,
                target,
            };
            match i.code() {
                Code::Loopne_rel8_64_RCX => loop_of(LoopKind::Loopne, CountReg::Rcx),
                Code::Loopne_rel8_64_ECX => loop_of(LoopKind::Loopne, CountReg::Ecx),
                Code::Loope_rel8_64_RCX => loop_of(LoopKind::Loope, CountReg::Rcx),
                Code::Loope_rel8_64_ECX => loop_of(LoopKind::Loope, CountReg::Ecx),
                Code::Loop_rel8_64_RCX => loop_of(LoopKind::Loop, CountReg::Rcx),
                Code::Loop_rel8_64_ECX => loop_of(LoopKind::Loop, CountReg::Ecx),
                Code::Jrcxz_rel8_64 => loop_of(LoopKind::Jrcxz, CountReg::Rcx),
                Code::Jecxz_rel8_64 => loop_of(LoopKind::Jrcxz, CountReg::Ecx),
                _ if i.is_jcc_short_or_near() => {
                    // The branch operand's kind says the operand size; iced's
                    // `Code::op_code()` would say it too, but its first call
                    // builds iced's whole op-code table (milliseconds, in every
                    // process of a followed tree).
                    if prefix66() || i.op0_kind() == OpKind::NearBranch16 {
                        return Refused(
                            "jcc with an operand-size prefix (vendor-specific meaning)",
                        );
                    }
                    match cond_of(i.condition_code()) {
                        Some(cond) => Class::Jcc { cond, target },
                        None => Refused("conditional branch without a condition code"),
                    }
                }
                _ => Refused("unsupported conditional branch"),
            }
        }
        FlowControl::Call => match i.code() {
            Code::Call_rel32_64 if !prefix66() => Class::RelCall {
                target: i.near_branch_target(),
            },
            Code::Call_rel32_64 | Code::Call_rel16 => {
                Refused("call with an operand-size prefix (vendor-specific meaning)")
            }
            Code::Syscall => Class::Syscall,
            Code::Call_ptr1616 | Code::Call_ptr1632 => Refused("far call"),
            _ => Refused("system-level call instruction (sysenter/vmcall/...)"),
        },
        FlowControl::IndirectCall => match i.code() {
            Code::Call_rm64
                if i.op0_kind() == OpKind::Register && i.op0_register() == Register::RSP =>
            {
                Refused("call through rsp")
            }
            Code::Call_rm64 => Class::IndirectCall,
            Code::Call_rm16 | Code::Call_rm32 => Refused("call with a 16/32-bit operand"),
            _ => Refused("far indirect call"),
        },
        FlowControl::IndirectBranch => match i.code() {
            Code::Jmp_rm64 => Class::IndirectJmp,
            Code::Jmp_rm16 | Code::Jmp_rm32 => Refused("jmp with a 16/32-bit operand"),
            _ => Refused("far indirect jmp"),
        },
        FlowControl::Return => match i.code() {
            Code::Retnq | Code::Retnq_imm16 => Class::Ret,
            Code::Retnw | Code::Retnw_imm16 => Refused("ret with an operand-size prefix"),
            _ => Refused("far return / iret / sysret"),
        },
        FlowControl::Interrupt => match i.code() {
            Code::Int3 => Refused("int3 (a breakpoint is already there)"),
            _ => Refused("software interrupt (int/int1/into)"),
        },
        FlowControl::XbeginXabortXend => {
            Refused("transactional memory instruction (xbegin/xabort/xend)")
        }
        FlowControl::Exception => Refused("instruction raises #UD by design (ud0/ud1/ud2)"),
    }
}

fn cond_of(cc: ConditionCode) -> Option<Cond> {
    Some(match cc {
        ConditionCode::o => Cond::O,
        ConditionCode::no => Cond::No,
        ConditionCode::b => Cond::B,
        ConditionCode::ae => Cond::Ae,
        ConditionCode::e => Cond::E,
        ConditionCode::ne => Cond::Ne,
        ConditionCode::be => Cond::Be,
        ConditionCode::a => Cond::A,
        ConditionCode::s => Cond::S,
        ConditionCode::ns => Cond::Ns,
        ConditionCode::p => Cond::P,
        ConditionCode::np => Cond::Np,
        ConditionCode::l => Cond::L,
        ConditionCode::ge => Cond::Ge,
        ConditionCode::le => Cond::Le,
        ConditionCode::g => Cond::G,
        ConditionCode::None => return None,
    })
}

/// Linear-sweep decode of a function: `code` is its bytes, `start` its runtime address.
/// Fails with [`ArchError::Undecodable`] / [`ArchError::Truncated`] if any part of it
/// does not decode (data in text, or a wrong symbol size).
pub fn decode_function(code: &[u8], start: u64) -> Result<FunctionInfo, ArchError> {
    let end = start.wrapping_add(code.len() as u64);
    let mut info = FunctionInfo {
        start,
        end,
        insns: Vec::with_capacity(code.len() / 3),
        indirect_jumps: Vec::new(),
        internal_branches: Vec::new(),
        calls: Vec::new(),
    };
    let mut d = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        let off = d.position();
        d.decode_out(&mut i);
        match d.last_error() {
            DecoderError::None => {}
            DecoderError::NoMoreBytes => return Err(truncated_or_invalid(&code[off..])),
            _ => return Err(ArchError::Undecodable),
        }
        let class = classify(&i, &code[off..off + i.len()]);
        if class == Class::IndirectJmp {
            info.indirect_jumps.push(i.ip());
        }
        if class.is_call() {
            info.calls.push(i.ip());
        }
        if let Some(t) = class.target() {
            if (start..end).contains(&t) {
                info.internal_branches.push((i.ip(), t));
            }
        }
        info.insns.push(FnInsn {
            addr: i.ip(),
            len: i.len() as u8,
            class,
        });
    }
    Ok(info)
}

/// Is `addr` the start of an instruction when decoding `code` (at runtime address
/// `func_start`) from its beginning? Decodes only up to `addr`.
/// Err([`ArchError::NotBoundary`]) means the runtime answers -EILSEQ.
pub fn check_boundary(code: &[u8], func_start: u64, addr: u64) -> Result<Insn, ArchError> {
    let off = addr.wrapping_sub(func_start);
    if addr < func_start || off >= code.len() as u64 {
        return Err(ArchError::OutsideCode);
    }
    let mut d = Decoder::with_ip(64, code, func_start, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        let off = d.position();
        d.decode_out(&mut i);
        match d.last_error() {
            DecoderError::None => {}
            DecoderError::NoMoreBytes => return Err(truncated_or_invalid(&code[off..])),
            _ => return Err(ArchError::Undecodable),
        }
        if i.ip() == addr {
            return Ok(Insn {
                addr,
                len: i.len() as u8,
            });
        }
        if i.ip() > addr {
            break;
        }
    }
    Err(ArchError::NotBoundary)
}

#[cfg(test)]
mod tests {

    #[test]
    fn vex_and_evex_code_is_found_legacy_sse_is_not() {
        // 401000 movaps %xmm1,%xmm0 ; 401003 pxor %xmm2,%xmm2 ; 401007 ret
        let sse = [0x0f, 0x28, 0xc1, 0x66, 0x0f, 0xef, 0xd2, 0xc3];
        assert_eq!(first_non_legacy(&sse, 0x401000), None);
        // ... then 401008 vzeroupper (VEX)
        let mut vex = sse.to_vec();
        vex.extend([0xc5, 0xf8, 0x77]);
        assert_eq!(first_non_legacy(&vex, 0x401000), Some(0x401008));
        // 401000 vmovdqu64 %zmm0,(%rdi) (EVEX)
        let evex = [0x62, 0xf1, 0xfe, 0x48, 0x7f, 0x07];
        assert_eq!(first_non_legacy(&evex, 0x401000), Some(0x401000));
    }
    use super::*;

    // A small function, gcc -O2 style:
    const F: u64 = 0x401000;
    const FUNC: &[u8] = &[
        0x55, //                         401000 push %rbp
        0x48, 0x89, 0xe5, //             401001 mov %rsp,%rbp
        0x48, 0x83, 0xec, 0x10, //       401004 sub $0x10,%rsp
        0x85, 0xff, //                   401008 test %edi,%edi
        0x74, 0x07, //                   40100a je 401013
        0xe8, 0xeb, 0xff, 0xff, 0xff, // 40100c call 400ffc
        0xeb, 0x02, //                   401011 jmp 401015
        0xff, 0xe0, //                   401013 jmp *%rax
        0xc9, //                         401015 leave
        0xc3, //                         401016 ret
    ];

    #[test]
    fn sweep_finds_everything() {
        let f = decode_function(FUNC, F).unwrap();
        let starts: Vec<u64> = f.insns.iter().map(|i| i.addr - F).collect();
        assert_eq!(starts, [0, 1, 4, 8, 10, 12, 0x11, 0x13, 0x15, 0x16]);
        assert_eq!(f.end, F + FUNC.len() as u64);
        assert_eq!(f.indirect_jumps, [F + 0x13]);
        assert!(f.has_indirect_jump());
        assert_eq!(f.calls, [F + 0xc]);
        // the call's target is outside: not an internal branch
        assert_eq!(
            f.internal_branches,
            [(F + 0xa, F + 0x13), (F + 0x11, F + 0x15)]
        );
        assert_eq!(
            f.insns[4].class,
            Class::Jcc {
                cond: Cond::E,
                target: F + 0x13
            }
        );
        assert_eq!(f.insns[9].class, Class::Ret);
        assert_eq!(f.index_of(F + 0x11), Some(6));
        assert_eq!(f.index_of(F + 0x12), None);
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            check_boundary(FUNC, F, F + 4),
            Ok(Insn {
                addr: F + 4,
                len: 4
            })
        );
        assert_eq!(check_boundary(FUNC, F, F), Ok(Insn { addr: F, len: 1 }));
        assert_eq!(
            check_boundary(FUNC, F, F + 0x16),
            Ok(Insn {
                addr: F + 0x16,
                len: 1
            })
        );
        assert_eq!(check_boundary(FUNC, F, F + 2), Err(ArchError::NotBoundary));
        assert_eq!(
            check_boundary(FUNC, F, F + 0xd),
            Err(ArchError::NotBoundary)
        );
        assert_eq!(
            check_boundary(FUNC, F, F + 0x17),
            Err(ArchError::OutsideCode)
        );
        assert_eq!(check_boundary(FUNC, F, F - 1), Err(ArchError::OutsideCode));
    }

    #[test]
    fn truncated_and_invalid() {
        // 48 8b 05 (mov rip-rel) cut after 3 bytes
        assert_eq!(
            decode_function(&[0x90, 0x48, 0x8b, 0x05], 0x1000),
            Err(ArchError::Truncated)
        );
        // 0x06 (push es) is invalid in 64-bit mode
        assert_eq!(
            decode_function(&[0x90, 0x06], 0x1000),
            Err(ArchError::Undecodable)
        );
        assert_eq!(
            check_boundary(&[0x06, 0x90], 0x1000, 0x1001),
            Err(ArchError::Undecodable)
        );
        assert_eq!(decode_one(&[0x06], 0), Err(ArchError::Undecodable));
    }

    #[test]
    fn classes() {
        let c = |b: &[u8]| classify(&decode_one(b, 0x1000).unwrap(), b);
        assert_eq!(c(&[0x55]), Class::Plain); // push %rbp
        assert_eq!(c(&[0x48, 0x8b, 0x05, 0, 0, 0, 0]), Class::RipRelative); // mov 0(%rip),%rax
        assert_eq!(c(&[0xe8, 0, 0, 0, 0]), Class::RelCall { target: 0x1005 }); // call .+5
        assert_eq!(c(&[0xeb, 0xfe]), Class::RelJmp { target: 0x1000 }); // jmp .
        assert_eq!(
            c(&[0x0f, 0x8f, 0, 1, 0, 0]),
            Class::Jcc {
                cond: Cond::G,
                target: 0x1106
            }
        );
        assert_eq!(
            c(&[0x67, 0xe3, 0x10]), // jecxz .+0x13
            Class::Loop {
                kind: LoopKind::Jrcxz,
                count: CountReg::Ecx,
                target: 0x1013
            }
        );
        assert_eq!(c(&[0xff, 0xd0]), Class::IndirectCall); // call *%rax
        assert_eq!(c(&[0xff, 0x15, 0, 0, 0, 0]), Class::IndirectCall); // call *0(%rip)
        assert_eq!(c(&[0x41, 0xff, 0xe3]), Class::IndirectJmp); // jmp *%r11
        assert_eq!(c(&[0xc3]), Class::Ret);
        assert_eq!(c(&[0xc2, 0x08, 0x00]), Class::Ret); // ret $8
        assert_eq!(c(&[0x0f, 0x05]), Class::Syscall);
        assert!(matches!(c(&[0xcc]), Class::Refused(_))); // int3
        assert!(matches!(c(&[0xcd, 0x80]), Class::Refused(_))); // int $0x80
        assert!(matches!(c(&[0xf4]), Class::Refused(_))); // hlt
        assert!(matches!(c(&[0xfa]), Class::Refused(_))); // cli
        assert!(matches!(c(&[0x0f, 0x0b]), Class::Refused(_))); // ud2
        assert!(matches!(c(&[0xff, 0xd4]), Class::Refused(_))); // call *%rsp
        assert!(matches!(c(&[0x66, 0xe9, 0, 0, 0, 0]), Class::Refused(_))); // data16 jmp
        assert!(matches!(c(&[0x66, 0x74, 0x05]), Class::Refused(_))); // data16 je .+5
        let data16_je_rel32 = [0x66, 0x0f, 0x84, 0, 0, 0, 0];
        assert!(matches!(c(&data16_je_rel32), Class::Refused(_)));
        // The same jcc decoded with AMD's rules has a 16-bit branch operand.
        let amd = |b: &[u8]| {
            let mut d = Decoder::with_ip(64, b, 0x1000, DecoderOptions::AMD);
            classify(&d.decode(), b)
        };
        assert!(matches!(amd(&[0x66, 0x74, 0x05]), Class::Refused(_)));
        assert!(matches!(c(&[0x74, 0x05]), Class::Jcc { .. })); // je .+5
        assert!(matches!(c(&[0xff, 0x1c, 0x24]), Class::Refused(_))); // lcall *(%rsp)
        assert!(matches!(c(&[0xc7, 0xf8, 0, 0, 0, 0]), Class::Refused(_))); // xbegin
        assert!(matches!(c(&[0x0f, 0x34]), Class::Refused(_))); // sysenter
    }

    #[test]
    fn disassembly_text() {
        assert_eq!(disassemble(&[0x48, 0x89, 0xe5], 0), "mov %rsp,%rbp");
        assert_eq!(
            disassemble(&[0x06], 0),
            "(bytes do not decode as an x86-64 instruction)"
        );
    }

    /// Random buffers: decode_function either fails or tiles the buffer exactly, and
    /// check_boundary agrees with it at every byte.
    #[test]
    fn random_buffers_tile_and_agree_with_check_boundary() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut tiled = 0;
        for _ in 0..3000 {
            let mut b = [0u8; 48];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            let Ok(f) = decode_function(&b, F) else {
                continue;
            };
            tiled += 1;
            let mut at = F;
            for i in &f.insns {
                assert_eq!(i.addr, at);
                at += i.len as u64;
            }
            assert_eq!(at, f.end);
            for off in 0..b.len() as u64 {
                let r = check_boundary(&b, F, F + off);
                match f.index_of(F + off) {
                    Some(k) => assert_eq!(
                        r,
                        Ok(Insn {
                            addr: F + off,
                            len: f.insns[k].len
                        })
                    ),
                    None => assert_eq!(r, Err(ArchError::NotBoundary)),
                }
            }
        }
        assert!(tiled > 100, "{tiled}");
    }
}
