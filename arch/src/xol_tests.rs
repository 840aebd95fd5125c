//! Relocation tests. Each case is a byte array with its disassembly beside it; each
//! checks the exact slot bytes for a slot at a fixed address, and the execution or
//! emulation result (in a [`Sandbox`]: the original instruction and the prepared slot
//! are both run on the CPU and must leave the same registers and memory).

use super::*;
use crate::emulate::{emulate, Cond, CountReg, LoopKind};
use crate::regs::flags;
use crate::sandbox::{Sandbox, CODE, STACK_TOP};

/// Fixed addresses for the byte-exact checks: slot = orig + 0x1000_0000.
const ORIG: u64 = 0x5555_5555_1000;
const SLOT: u64 = 0x5555_6555_1000;

fn le32(v: i64) -> [u8; 4] {
    (v as i32).to_le_bytes()
}

/// `jmp ORIG+len` encoded at `at`.
fn jmp_back(at: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0xe9];
    v.extend(le32((ORIG + len) as i64 - (at + 5) as i64));
    v
}

fn slot_of(bytes: &[u8]) -> Prepared {
    let p = prepare(bytes, ORIG, SLOT).unwrap();
    assert_eq!(p.kind, Kind::Slot);
    p
}

/// Bytes of a slot whose body is `body` (a single instruction).
fn expect_single(bytes: &[u8], body: &[u8]) {
    let p = slot_of(bytes);
    let mut want = body.to_vec();
    want.extend(jmp_back(SLOT + body.len() as u64, p.insn_len as u64));
    assert_eq!(p.slot_bytes(), &want[..]);
    assert_eq!(p.body_len as usize, body.len());
    assert_eq!(
        p.steps(),
        [Step {
            offset: 0,
            sp_delta: 0
        }]
    );
}

/// Run `code` (one instruction) at orig in a sandbox, then its prepared slot, from the
/// same registers (`setup` may also write memory); return (original run, slot run,
/// orig, slot address). Memory written by the first run is restored by `setup` again.
fn exec_both(
    code: &[u8],
    setup: &dyn Fn(&Sandbox, u64, &mut PtRegs),
) -> (PtRegs, PtRegs, u64, u64, Sandbox) {
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    let slot = sb.at(CODE + 0x40000);
    sb.write(orig, code);
    let p = prepare(code, orig, slot).unwrap();
    assert_eq!(
        p.kind,
        Kind::Slot,
        "{}",
        crate::decode::disassemble(code, orig)
    );
    sb.land(orig + p.insn_len as u64);
    sb.write(slot, p.slot_bytes());
    let mut r = sb.regs();
    setup(&sb, orig, &mut r);
    let a = sb.run(orig, &r);
    let mut r = sb.regs();
    setup(&sb, orig, &mut r);
    let b = sb.run(slot, &r);
    (a, b, orig, slot, sb)
}

// ---------------------------------------------------------------- plain instructions

#[test]
fn push_rbp() {
    expect_single(&[0x55], &[0x55]); // push %rbp
    let (a, b, orig, _, sb) = exec_both(&[0x55], &|_, _, r| r.bp = 0xdead_beef);
    assert_eq!(a, b);
    assert_eq!(a.ip, orig + 1);
    assert_eq!(a.sp, sb.at(STACK_TOP) - 8);
    assert_eq!(sb.read_u64(a.sp), 0xdead_beef);
}

#[test]
fn mov_sub_lea_plain() {
    expect_single(&[0x48, 0x89, 0xe5], &[0x48, 0x89, 0xe5]); // mov %rsp,%rbp
    expect_single(&[0x48, 0x83, 0xec, 0x18], &[0x48, 0x83, 0xec, 0x18]); // sub $0x18,%rsp
    expect_single(
        &[0x48, 0x8d, 0x44, 0x24, 0x08],
        &[0x48, 0x8d, 0x44, 0x24, 0x08],
    ); // lea 0x8(%rsp),%rax
       // Redundant prefixes survive because plain instructions are copied, not re-encoded:
       // 66 66 2e 0f 1f 84 00 00 00 00 00   data16 cs nopw 0x0(%rax,%rax,1)
    let nop = [0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0];
    expect_single(&nop, &nop);
    let (a, b, _, _, _) = exec_both(&[0x48, 0x83, 0xec, 0x18], &|_, _, r| r.flags |= flags::CF);
    assert_eq!(a, b);
    assert_eq!(a.flags & flags::STATUS, flags::PF | flags::AF); // ...000 - 0x18 = ...fe8
}

// ---------------------------------------------------------------- RIP-relative

#[test]
fn rip_relative_load() {
    // 48 8b 05 f9 0f 00 00     mov 0xff9(%rip),%rax     -> loads ORIG+7+0xff9 = ORIG+0x1000
    let code = [0x48, 0x8b, 0x05, 0xf9, 0x0f, 0x00, 0x00];
    let mut body = vec![0x48, 0x8b, 0x05];
    body.extend(le32((ORIG + 0x1000) as i64 - (SLOT + 7) as i64));
    expect_single(&code, &body);
    let (a, b, orig, _, sb) = exec_both(&code, &|sb, orig, _| {
        sb.write_u64(orig + 0x1000, 0x1122_3344_5566_7788)
    });
    assert_eq!(a, b);
    assert_eq!(b.ax, 0x1122_3344_5566_7788);
    assert_eq!(b.ip, orig + 7);
    drop(sb);
}

#[test]
fn rip_relative_lea() {
    // 48 8d 3d 00 01 00 00     lea 0x100(%rip),%rdi
    let code = [0x48, 0x8d, 0x3d, 0x00, 0x01, 0x00, 0x00];
    let mut body = vec![0x48, 0x8d, 0x3d];
    body.extend(le32((ORIG + 7 + 0x100) as i64 - (SLOT + 7) as i64));
    expect_single(&code, &body);
    let (a, b, orig, _, _) = exec_both(&code, &|_, _, _| {});
    assert_eq!(a, b);
    assert_eq!(b.di, orig + 7 + 0x100);
}

#[test]
fn rip_relative_with_immediate_after_displacement() {
    // 83 3d f9 0f 00 00 05     cmpl $0x5,0xff9(%rip)   (next ip counts the imm8)
    let code = [0x83, 0x3d, 0xf9, 0x0f, 0x00, 0x00, 0x05];
    let mut body = vec![0x83, 0x3d];
    body.extend(le32((ORIG + 7 + 0xff9) as i64 - (SLOT + 7) as i64));
    body.push(0x05);
    expect_single(&code, &body);
    for v in [4u64, 5, 6, 0xffff_ffff] {
        let (a, b, _, _, _) = exec_both(&code, &|sb, orig, _| sb.write_u64(orig + 7 + 0xff9, v));
        assert_eq!(a, b, "value {v}");
    }
    // c7 05 f6 0f 00 00 78 56 34 12   movl $0x12345678,0xff6(%rip)
    let code = [0xc7, 0x05, 0xf6, 0x0f, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12];
    let (a, b, orig, _, sb) = exec_both(&code, &|sb, orig, _| sb.write_u64(orig + 0x1000, 0));
    assert_eq!(a, b);
    assert_eq!(sb.read_u64(orig + 0x1000), 0x1234_5678);
}

#[test]
fn rip_relative_vex_and_sse() {
    // c5 fa 6f 05 f8 0f 00 00   vmovdqu 0xff8(%rip),%xmm0
    let code = [0xc5, 0xfa, 0x6f, 0x05, 0xf8, 0x0f, 0x00, 0x00];
    let mut body = vec![0xc5, 0xfa, 0x6f, 0x05];
    body.extend(le32((ORIG + 8 + 0xff8) as i64 - (SLOT + 8) as i64));
    expect_single(&code, &body);
    // f2 0f 10 05 f8 0f 00 00   movsd 0xff8(%rip),%xmm0
    let code = [0xf2, 0x0f, 0x10, 0x05, 0xf8, 0x0f, 0x00, 0x00];
    let mut body = vec![0xf2, 0x0f, 0x10, 0x05];
    body.extend(le32((ORIG + 8 + 0xff8) as i64 - (SLOT + 8) as i64));
    expect_single(&code, &body);
}

#[test]
fn rip_relative_out_of_range() {
    // 48 8b 05 00 00 00 00     mov 0x0(%rip),%rax  with the slot 3 GiB away
    let code = [0x48, 0x8b, 0x05, 0, 0, 0, 0];
    assert_eq!(
        prepare(&code, ORIG, ORIG + (3 << 30)),
        Err(ArchError::OutOfRange)
    );
    // plain instruction, but the jump back is out of range
    assert_eq!(
        prepare(&[0x55], ORIG, ORIG - (3 << 30)),
        Err(ArchError::OutOfRange)
    );
}

// ---------------------------------------------------------------- emulated branches

fn emu(code: &[u8]) -> (Emulation, u8) {
    let p = prepare(code, ORIG, SLOT).unwrap();
    assert_eq!(p.slot_len, 0);
    match p.kind {
        Kind::Emulate(e) => (e, p.insn_len),
        Kind::Slot => panic!("expected emulation"),
    }
}

#[test]
fn call_rel32() {
    // e8 fb 0f 00 00           call ORIG+0x1000
    let (e, len) = emu(&[0xe8, 0xfb, 0x0f, 0x00, 0x00]);
    assert_eq!(len, 5);
    assert_eq!(
        e,
        Emulation::Call {
            target: ORIG + 0x1000,
            ret: ORIG + 5
        }
    );
    // the same on the CPU vs. emulated
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    sb.write(orig, &[0xe8, 0xfb, 0x0f, 0x00, 0x00]);
    sb.land(orig + 0x1000);
    let p = prepare(&[0xe8, 0xfb, 0x0f, 0x00, 0x00], orig, orig + 0x40000).unwrap();
    let Kind::Emulate(e) = p.kind else { panic!() };
    let mut r = sb.regs();
    r.ip = orig;
    let hw = sb.run(orig, &r);
    let mut pushed = vec![];
    emulate(&e, &mut r, &mut |a, v| {
        pushed.push((a, v));
        true
    })
    .unwrap();
    assert_eq!(r, hw);
    assert_eq!(pushed, [(hw.sp, sb.read_u64(hw.sp))]);
    assert_eq!(sb.read_u64(hw.sp), orig + 5);
}

#[test]
fn jmp_rel8_rel32() {
    // eb 10                    jmp ORIG+0x12
    assert_eq!(
        emu(&[0xeb, 0x10]),
        (
            Emulation::Jmp {
                target: ORIG + 0x12
            },
            2
        )
    );
    // eb fe                    jmp ORIG (itself)
    assert_eq!(emu(&[0xeb, 0xfe]), (Emulation::Jmp { target: ORIG }, 2));
    // e9 00 f0 ff ff           jmp ORIG+5-0x1000
    assert_eq!(
        emu(&[0xe9, 0x00, 0xf0, 0xff, 0xff]),
        (
            Emulation::Jmp {
                target: ORIG + 5 - 0x1000
            },
            5
        )
    );
    let mut r = PtRegs {
        ip: ORIG,
        ..Default::default()
    };
    emulate(
        &Emulation::Jmp {
            target: ORIG + 0x12,
        },
        &mut r,
        &mut |_, _| false,
    )
    .unwrap();
    assert_eq!(r.ip, ORIG + 0x12);
}

/// Run a branch on the CPU (landings at its target and its fall-through) and through
/// `emulate`, for each `setup`, and compare every register.
fn branch_matches_cpu(code: &[u8], target_off: u64, setups: &[PtRegs]) {
    let sb = Sandbox::new();
    let orig = sb.at(CODE + 0x100);
    sb.write(orig, code);
    let p = prepare(code, orig, orig + 0x40000).unwrap();
    let Kind::Emulate(e) = p.kind else {
        panic!("not emulated")
    };
    sb.land(orig + p.insn_len as u64);
    sb.land(orig.wrapping_add(target_off));
    for s in setups {
        let mut r = sb.regs();
        r.flags = s.flags | 0x202;
        r.cx = s.cx;
        r.ip = orig;
        let hw = sb.run(orig, &r);
        emulate(&e, &mut r, &mut |_, _| panic!("no push")).unwrap();
        assert_eq!(
            r,
            hw,
            "{} with flags {:#x} rcx {:#x}",
            crate::decode::disassemble(code, orig),
            s.flags,
            s.cx
        );
    }
}

fn all_flag_combinations() -> Vec<PtRegs> {
    // every combination of CF PF ZF SF OF
    let bits = [flags::CF, flags::PF, flags::ZF, flags::SF, flags::OF];
    (0..32u64)
        .map(|m| {
            let f = bits
                .iter()
                .enumerate()
                .filter(|(k, _)| m >> k & 1 == 1)
                .map(|(_, b)| b)
                .sum();
            PtRegs {
                flags: f,
                ..Default::default()
            }
        })
        .collect()
}

#[test]
fn jcc_short_all_16_conditions_match_cpu() {
    for cc in 0..16u8 {
        // 7X 20                 jCC .+0x22
        let (e, len) = emu(&[0x70 + cc, 0x20]);
        assert_eq!(len, 2);
        assert_eq!(
            e,
            Emulation::Jcc {
                cond: Cond::from_nibble(cc),
                target: ORIG + 0x22,
                next: ORIG + 2
            }
        );
        branch_matches_cpu(&[0x70 + cc, 0x20], 0x22, &all_flag_combinations());
    }
}

#[test]
fn jcc_near_all_16_conditions_match_cpu() {
    for cc in 0..16u8 {
        // 0f 8X 00 01 00 00     jCC .+0x106
        let code = [0x0f, 0x80 + cc, 0x00, 0x01, 0x00, 0x00];
        let (e, len) = emu(&code);
        assert_eq!(len, 6);
        assert_eq!(
            e,
            Emulation::Jcc {
                cond: Cond::from_nibble(cc),
                target: ORIG + 0x106,
                next: ORIG + 6
            }
        );
        branch_matches_cpu(&code, 0x106, &all_flag_combinations());
    }
    // backwards: 0f 84 f0 fe ff ff   je .-0x10a
    branch_matches_cpu(
        &[0x0f, 0x84, 0xf0, 0xfe, 0xff, 0xff],
        6u64.wrapping_sub(0x110),
        &all_flag_combinations(),
    );
}

#[test]
fn loops_match_cpu() {
    let counts = [
        0u64,
        1,
        2,
        0x1_0000_0000,
        0x1_0000_0001,
        0xffff_ffff,
        u64::MAX,
    ];
    let mut setups = vec![];
    for cx in counts {
        for f in [0, flags::ZF] {
            setups.push(PtRegs {
                cx,
                flags: f,
                ..Default::default()
            });
        }
    }
    // e2 10 loop .+0x12 | e1 10 loope | e0 10 loopne | e3 10 jrcxz | 67 e3 10 jecxz | 67 e2 10 loopl (ecx)
    for (code, kind, count) in [
        (&[0xe2, 0x10][..], LoopKind::Loop, CountReg::Rcx),
        (&[0xe1, 0x10][..], LoopKind::Loope, CountReg::Rcx),
        (&[0xe0, 0x10][..], LoopKind::Loopne, CountReg::Rcx),
        (&[0xe3, 0x10][..], LoopKind::Jrcxz, CountReg::Rcx),
        (&[0x67, 0xe3, 0x10][..], LoopKind::Jrcxz, CountReg::Ecx),
        (&[0x67, 0xe2, 0x10][..], LoopKind::Loop, CountReg::Ecx),
        (&[0x67, 0xe1, 0x10][..], LoopKind::Loope, CountReg::Ecx),
    ] {
        let len = code.len() as u64;
        let (e, _) = emu(code);
        assert_eq!(
            e,
            Emulation::Loop {
                kind,
                count,
                target: ORIG + len + 0x10,
                next: ORIG + len
            }
        );
        branch_matches_cpu(code, len + 0x10, &setups);
    }
}

// ---------------------------------------------------------------- ret, syscall, indirect

#[test]
fn ret_and_ret_imm16() {
    expect_single(&[0xc3], &[0xc3]); // ret
    expect_single(&[0xc2, 0x10, 0x00], &[0xc2, 0x10, 0x00]); // ret $0x10
    for code in [&[0xc3][..], &[0xc2, 0x10, 0x00][..]] {
        let (a, b, orig, _, sb) = exec_both(code, &|sb, orig, r| {
            r.sp -= 8;
            sb.write_u64(r.sp, orig + 0x800);
            sb.land(orig + 0x800);
        });
        assert_eq!(a, b);
        assert_eq!(b.ip, orig + 0x800);
        assert_eq!(
            b.sp,
            sb.at(STACK_TOP) + if code.len() == 1 { 0 } else { 0x10 }
        );
    }
}

#[test]
fn ret_lands_at_return_address() {
    // landings at the return address: the sandbox must see ip there, not in the slot
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    let slot = orig + 0x40000;
    let p = prepare(&[0xc3], orig, slot).unwrap();
    sb.write(slot, p.slot_bytes());
    sb.land(orig + 0x800);
    let mut r = sb.regs();
    r.sp -= 8;
    sb.write_u64(r.sp, orig + 0x800);
    let out = sb.run(slot, &r);
    assert_eq!(out.ip, orig + 0x800);
    let mut stepped = out;
    assert_eq!(after_step(&p, slot, &mut stepped), StepResult::Done);
    assert_eq!(stepped.ip, orig + 0x800, "a branch target is left alone");
}

#[test]
fn syscall_runs_out_of_line() {
    // 0f 05                    syscall
    expect_single(&[0x0f, 0x05], &[0x0f, 0x05]);
    // getpid (39) on the CPU, at orig and from the slot; the boosted jmp back works after it
    let (a, b, orig, slot, _) = exec_both(&[0x0f, 0x05], &|_, _, r| r.ax = 39);
    assert_eq!(a.ax, std::process::id() as u64);
    assert_eq!(b.ax, a.ax);
    assert_eq!(b.ip, orig + 2);
    // rcx = the address after the syscall instruction: the slot's, not the original's
    assert_eq!(a.cx, orig + 2);
    assert_eq!(b.cx, slot + 2);
    assert_eq!(a.r11 & flags::STATUS, b.r11 & flags::STATUS);
    assert_eq!((PtRegs { cx: 0, ..a }), PtRegs { cx: 0, ..b });
}

#[test]
fn indirect_call_register() {
    // ff d0                    call *%rax
    let p = slot_of(&[0xff, 0xd0]);
    let data = SLOT + DATA_OFFSET as u64;
    let mut want = vec![0xff, 0x35]; // push data(%rip)
    want.extend(le32(data as i64 - (SLOT + 6) as i64));
    want.extend([0xff, 0xe0]); // jmp *%rax
    want.extend(jmp_back(SLOT + 8, 2));
    assert_eq!(&p.slot[..want.len()], &want[..]);
    assert!(p.slot[want.len()..DATA_OFFSET].iter().all(|&b| b == 0));
    assert_eq!(p.slot[DATA_OFFSET..], (ORIG + 2).to_le_bytes());
    assert_eq!(p.slot_len as usize, SLOT_SIZE);
    assert_eq!(
        p.steps(),
        [
            Step {
                offset: 0,
                sp_delta: 0
            },
            Step {
                offset: 6,
                sp_delta: -8
            }
        ]
    );
    // executed: the callee sees the ORIGINAL return address
    let (a, b, orig, _, sb) = exec_both(&[0xff, 0xd0], &|sb, orig, r| {
        r.ax = orig + 0x900;
        sb.land(orig + 0x900);
    });
    assert_eq!(a, b);
    assert_eq!(b.ip, orig + 0x900);
    assert_eq!(b.sp, sb.at(STACK_TOP) - 8);
    assert_eq!(sb.read_u64(b.sp), orig + 2);
}

#[test]
fn indirect_call_rip_relative() {
    // ff 15 fa 0f 00 00        call *0xffa(%rip)     (pointer at ORIG+0x1000)
    let code = [0xff, 0x15, 0xfa, 0x0f, 0x00, 0x00];
    let p = slot_of(&code);
    let mut want = vec![0xff, 0x35];
    want.extend(le32((SLOT + DATA_OFFSET as u64) as i64 - (SLOT + 6) as i64));
    want.extend([0xff, 0x25]); // jmp *X(%rip) with X re-encoded for SLOT+12
    want.extend(le32((ORIG + 0x1000) as i64 - (SLOT + 12) as i64));
    want.extend(jmp_back(SLOT + 12, 6));
    assert_eq!(&p.slot[..want.len()], &want[..]);
    let (a, b, orig, _, sb) = exec_both(&code, &|sb, orig, _| {
        sb.write_u64(orig + 0x1000, orig + 0x900);
        sb.land(orig + 0x900);
    });
    assert_eq!(a, b);
    assert_eq!(b.ip, orig + 0x900);
    assert_eq!(sb.read_u64(b.sp), orig + 6);
}

#[test]
fn indirect_call_through_stack_operand() {
    // ff 54 24 08              call *0x8(%rsp)   -> jmp *0x10(%rsp) after the push
    let p = slot_of(&[0xff, 0x54, 0x24, 0x08]);
    assert_eq!(&p.slot[6..10], &[0xff, 0x64, 0x24, 0x10]);
    // ff 14 24                 call *(%rsp)      -> jmp *0x8(%rsp) (disp8 appears)
    let p = slot_of(&[0xff, 0x14, 0x24]);
    assert_eq!(&p.slot[6..10], &[0xff, 0x64, 0x24, 0x08]);
    for code in [&[0xff, 0x54, 0x24, 0x08][..], &[0xff, 0x14, 0x24][..]] {
        let (a, b, orig, _, sb) = exec_both(code, &|sb, orig, r| {
            sb.write_u64(r.sp, orig + 0x900);
            sb.write_u64(r.sp + 8, orig + 0x900);
            sb.land(orig + 0x900);
        });
        assert_eq!(a, b);
        assert_eq!(b.ip, orig + 0x900);
        assert_eq!(sb.read_u64(b.sp), orig + code.len() as u64);
    }
}

#[test]
fn indirect_call_operand_below_rsp_uses_ret_form() {
    // ff 54 24 f8              call *-0x8(%rsp)   (the push would clobber the pointer)
    // ff 14 cc                 call *(%rsp,%rcx,8)
    for code in [&[0xff, 0x54, 0x24, 0xf8][..], &[0xff, 0x14, 0xcc][..]] {
        let p = slot_of(code);
        assert_eq!(p.n_steps, 5, "lea; push op; push const; pop; ret");
        let deltas: Vec<i8> = p.steps().iter().map(|s| s.sp_delta).collect();
        assert_eq!(deltas, [0, -8, -16, -24, -16]);
        // 48 8d 64 24 f8       lea -0x8(%rsp),%rsp
        assert_eq!(&p.slot[..5], &[0x48, 0x8d, 0x64, 0x24, 0xf8]);
        let (a, b, orig, _, sb) = exec_both(code, &|sb, orig, r| {
            r.cx = 2;
            sb.write_u64(r.sp - 8, orig + 0x900);
            sb.write_u64(r.sp + 16, orig + 0x900);
            sb.land(orig + 0x900);
            r.flags |= flags::CF | flags::ZF;
        });
        assert_eq!(a, b);
        assert_eq!(b.ip, orig + 0x900);
        assert_eq!(b.flags & flags::STATUS, flags::CF | flags::ZF);
        assert_eq!(sb.read_u64(b.sp), orig + code.len() as u64);
    }
}

#[test]
fn indirect_jmp() {
    // ff e0                    jmp *%rax
    expect_single(&[0xff, 0xe0], &[0xff, 0xe0]);
    // ff 25 fa 0f 00 00        jmp *0xffa(%rip)
    let code = [0xff, 0x25, 0xfa, 0x0f, 0x00, 0x00];
    let mut body = vec![0xff, 0x25];
    body.extend(le32((ORIG + 0x1000) as i64 - (SLOT + 6) as i64));
    expect_single(&code, &body);
    let (a, b, orig, _, sb) = exec_both(&code, &|sb, orig, _| {
        sb.write_u64(orig + 0x1000, orig + 0x900);
        sb.land(orig + 0x900);
    });
    assert_eq!(a, b);
    assert_eq!(b.ip, orig + 0x900);
    assert_eq!(b.sp, sb.at(STACK_TOP));
}

// ---------------------------------------------------------------- refusals

#[test]
fn refusals() {
    assert_eq!(prepare(&[0xcc], ORIG, SLOT), Err(ArchError::Int3Present)); // int3
    assert_eq!(can_probe(&[0xcc, 0x90], ORIG), Err(ArchError::Int3Present));
    let refused = |b: &[u8]| matches!(prepare(b, ORIG, SLOT), Err(ArchError::CannotRelocate(_)));
    assert!(refused(&[0xcd, 0x80])); // int $0x80
    assert!(refused(&[0xf1])); // int1
    assert!(refused(&[0xf4])); // hlt
    assert!(refused(&[0xe4, 0x60])); // in $0x60,%al
    assert!(refused(&[0x0f, 0x0b])); // ud2
    assert!(refused(&[0xff, 0xd4])); // call *%rsp
    assert!(refused(&[0xcb])); // lret
    assert!(refused(&[0xc7, 0xf8, 0, 0, 0, 0])); // xbegin
    assert_eq!(prepare(&[0x06], ORIG, SLOT), Err(ArchError::Undecodable)); // (bad) in 64-bit
    assert_eq!(
        prepare(&[0x48, 0x8b], ORIG, SLOT),
        Err(ArchError::Truncated)
    );
    assert_eq!(prepare(&[], ORIG, SLOT), Err(ArchError::Truncated));
    assert_eq!(
        can_probe(&[0x55, 0xcc], ORIG),
        Ok(Insn { addr: ORIG, len: 1 })
    );
    let msg = prepare(&[0xf4], ORIG, SLOT).unwrap_err().to_string();
    assert_eq!(msg, "cannot execute out of line: privileged instruction");
}

// ---------------------------------------------------------------- single-step bookkeeping

#[test]
fn after_step_maps_the_end_of_the_body_back() {
    // 48 8b 05 f9 0f 00 00     mov 0xff9(%rip),%rax: one step, ip = slot+7 -> ORIG+7
    let p = slot_of(&[0x48, 0x8b, 0x05, 0xf9, 0x0f, 0x00, 0x00]);
    let mut r = PtRegs {
        ip: SLOT + 7,
        ..Default::default()
    };
    assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Done);
    assert_eq!(r.ip, ORIG + 7);
    // rep movsb traps once per iteration with ip still at slot+0
    let p = slot_of(&[0xf3, 0xa4]);
    let mut r = PtRegs {
        ip: SLOT,
        ..Default::default()
    };
    assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Continue);
    assert_eq!(r.ip, SLOT);
}

#[test]
fn after_step_repairs_syscall_registers() {
    let p = slot_of(&[0x0f, 0x05]); // syscall
    assert!(p.is_syscall);
    // trap at the jump back (slot+2), or after it (ORIG+2): both finish and repair
    for ip in [SLOT + 2, ORIG + 2] {
        let mut r = PtRegs {
            ip,
            cx: SLOT + 2,
            r11: 0x302,
            ..Default::default()
        };
        assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Done);
        assert_eq!((r.ip, r.cx, r.r11), (ORIG + 2, ORIG + 2, 0x202));
    }
    // not a syscall: ORIG+len is just a branch target, left alone with rcx untouched
    let p = slot_of(&[0x55]);
    let mut r = PtRegs {
        ip: ORIG + 1,
        cx: 7,
        ..Default::default()
    };
    assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Done);
    assert_eq!((r.ip, r.cx), (ORIG + 1, 7));
}

#[test]
fn after_step_through_the_indirect_call_rewrite() {
    let p = slot_of(&[0xff, 0xd0]); // call *%rax
    let mut r = PtRegs {
        ip: SLOT + 6,
        ..Default::default()
    }; // after the push
    assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Continue);
    let mut r = PtRegs {
        ip: 0x7777_0000,
        ..Default::default()
    }; // after the jmp
    assert_eq!(after_step(&p, SLOT, &mut r), StepResult::Done);
    assert_eq!(r.ip, 0x7777_0000);
}

#[test]
fn fault_fixup_undoes_the_push() {
    let p = slot_of(&[0xff, 0x10]); // call *(%rax): the jmp's load faults
    let mut r = PtRegs {
        ip: SLOT + 6,
        sp: 0x1000 - 8,
        ..Default::default()
    };
    assert!(fault_fixup(&p, SLOT, &mut r));
    assert_eq!((r.ip, r.sp), (ORIG, 0x1000));
    let p = slot_of(&[0x48, 0x8b, 0x00]); // mov (%rax),%rax
    let mut r = PtRegs {
        ip: SLOT,
        sp: 0x1000,
        ..Default::default()
    };
    assert!(fault_fixup(&p, SLOT, &mut r));
    assert_eq!((r.ip, r.sp), (ORIG, 0x1000));
    let mut r = PtRegs {
        ip: SLOT + 1,
        ..Default::default()
    }; // not an instruction start
    assert!(!fault_fixup(&p, SLOT, &mut r));
}

// ---------------------------------------------------------------- random input

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Random byte strings (biased towards prefixes, REX, ModRM with rip-relative and stack
/// operands): prepare never panics, and whenever it builds a slot, the slot's first
/// instruction decoded at the slot address is the same instruction as the original —
/// same text with RIP-relative operands shown as absolute addresses — or, for an indirect
/// call, the push/jmp rewrite.
#[test]
fn random_bytes_never_panic_and_reencode_faithfully() {
    use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter};
    let mut fmt = GasFormatter::new();
    fmt.options_mut().set_rip_relative_addresses(false); // absolute targets
    let text = |fmt: &mut GasFormatter, b: &[u8], ip: u64| {
        let mut d = Decoder::with_ip(64, b, ip, DecoderOptions::NONE);
        let i = d.decode();
        let mut s = String::new();
        fmt.format(&i, &mut s);
        (s, i.len())
    };
    let pool: [u8; 24] = [
        0x66, 0xf2, 0xf3, 0xf0, 0x2e, 0x3e, 0x64, 0x65, 0x67, 0x48, 0x4c, 0x41, 0x0f, 0x38, 0x3a,
        0xff, 0x05, 0x15, 0x25, 0x35, 0x3d, 0x24, 0x44, 0xc4,
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut slots, mut emulated, mut errors) = (0, 0, 0);
    for _ in 0..40_000 {
        let mut b = [0u8; 15];
        for x in b.iter_mut() {
            let r = rng.next();
            *x = if r & 3 == 0 {
                pool[(r >> 8) as usize % pool.len()]
            } else {
                (r >> 16) as u8
            };
        }
        match prepare(&b, ORIG, SLOT) {
            Err(_) => errors += 1,
            Ok(p) => match p.kind {
                Kind::Emulate(_) => emulated += 1,
                Kind::Slot => {
                    slots += 1;
                    let (want, len) = text(&mut fmt, &b, ORIG);
                    assert_eq!(len, p.insn_len as usize);
                    let (got, _) = text(&mut fmt, &p.slot, SLOT);
                    let orig_insn = crate::decode::decode_one(&b, ORIG).unwrap();
                    let class = crate::decode::classify(&orig_insn, &b[..len]);
                    if class == crate::decode::Class::IndirectCall {
                        assert!(
                            got.starts_with("push") || got.starts_with("lea"),
                            "{want} -> {got}"
                        );
                    } else {
                        assert_eq!(got, want, "{:02x?}", &b[..len]);
                    }
                    assert!(p.body_len as usize + 5 <= p.slot_len as usize);
                }
            },
        }
    }
    assert!(
        slots > 10_000 && emulated > 100 && errors > 100,
        "{slots} {emulated} {errors}"
    );
}

#[test]
fn relocate_into_too_small_space_is_an_error() {
    let b = [0xff, 0xd0]; // call *%rax: needs an 8-byte constant
    let i = crate::decode::decode_one(&b, ORIG).unwrap();
    let c = crate::decode::classify(&i, &b);
    assert_eq!(
        relocate(&[(i, &b, c)], SLOT, 4, ORIG + 2),
        Err(ArchError::SlotTooSmall)
    );
    assert_eq!(
        relocate(&[(i, &b, c)], SLOT, 12, ORIG + 2),
        Err(ArchError::SlotTooSmall)
    );
    assert!(relocate(&[(i, &b, c)], SLOT, 32, ORIG + 2).is_ok());
    // near the top of the address space: address arithmetic wraps (as the CPU's does), no
    // overflow panic in debug builds
    for (orig, slot) in [
        (u64::MAX - 1, u64::MAX - 64),
        (u64::MAX - 1, 8),
        (0, u64::MAX - 63),
    ] {
        let _ = prepare(&b, orig, slot);
        let _ = prepare(&[0x48, 0x8b, 0x05, 0xff, 0xff, 0xff, 0x7f], orig, slot);
    }
}

/// The copy-as-is fast path of `relocate` emits exactly what the
/// BlockEncoder path emits, for random instructions and for runs of
/// several, at a near and a far slot.
#[test]
fn plain_relocation_is_byte_for_byte_the_encoders() {
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    let mut compared = 0;
    for _ in 0..30_000 {
        let mut b = [0u8; 45];
        for x in b.iter_mut() {
            *x = (rng.next() >> 16) as u8;
        }
        // Up to three consecutive instructions, as an optimized region has.
        let mut list = Vec::new();
        let mut at = 0;
        let n = 1 + rng.next() as usize % 3;
        while list.len() < n && at < 30 {
            let Ok(i) = crate::decode::decode_one(&b[at..], ORIG + at as u64) else {
                break;
            };
            let len = i.len();
            let raw = &b[at..at + len];
            list.push((i, raw, crate::decode::classify(&i, raw)));
            at += len;
        }
        if list.is_empty() {
            continue;
        }
        for (dest, cap) in [(SLOT, 64), (ORIG + 0x10_0000, 32), (SLOT, 8)] {
            let back = ORIG + at as u64;
            if let Some(fast) = relocate_plain(&list, dest, cap, back) {
                assert_eq!(
                    Ok(fast),
                    relocate_encoded(&list, dest, cap, back),
                    "{:02x?}",
                    &b[..at]
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}
