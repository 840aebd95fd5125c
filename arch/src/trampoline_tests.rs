//! Trampolines executed for real in a [`Sandbox`], calling a Rust handler.

use super::*;
use crate::decode::decode_function;
use crate::optprobe::{check_region, JMP_LEN};
use crate::regs::{flags, PtRegs};
use crate::sandbox::{Sandbox, CODE, STACK_TOP};

/// What the handler saw and what it should do.
#[derive(Default)]
struct Rec {
    hits: u64,
    seen: PtRegs,
    set_di: Option<u64>,
    set_flags: Option<u64>,
    set_ip: Option<u64>,
    clobber_vectors: bool,
}

extern "C" fn handler(regs: *mut PtRegs, data: u64) {
    // SAFETY: data is the &mut Rec of the running test; regs points at the stub's frame.
    let (rec, regs) = unsafe { (&mut *(data as *mut Rec), &mut *regs) };
    rec.hits += 1;
    rec.seen = *regs;
    if let Some(v) = rec.set_di {
        regs.di = v;
    }
    if let Some(f) = rec.set_flags {
        regs.flags = f;
    }
    if let Some(ip) = rec.set_ip {
        regs.ip = ip;
    }
    if rec.clobber_vectors {
        // SAFETY: only clobbers vector registers, declared as such.
        unsafe {
            core::arch::asm!("pcmpeqd xmm0, xmm0", "xorps xmm1, xmm1", out("xmm0") _, out("xmm1") _)
        };
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present; clobbers ymm0/ymm1 only.
            unsafe {
                core::arch::asm!("vpcmpeqd ymm0, ymm0, ymm0", "vpxor ymm1, ymm1, ymm1", out("xmm0") _, out("xmm1") _)
            };
        }
    }
}

/// A function that keeps a value in xmm0 and ymm0's upper lane across the probed region:
/// returns (code, offset of the region, offset of the landing).
fn program(pre: u64, with_avx: bool) -> (Vec<u8>, u64, u64) {
    let mut c = vec![0x66, 0x48, 0x0f, 0x6e, 0xc7]; //     movq %rdi,%xmm0
    if with_avx {
        c.extend([0xc4, 0xe2, 0x7d, 0x59, 0xc0]); //       vpbroadcastq %xmm0,%ymm0
    }
    let orig = pre + c.len() as u64;
    c.extend([0x48, 0x89, 0xe5]); //                       orig+0: mov %rsp,%rbp
    c.extend([0x48, 0x8b, 0x05]); //                       orig+3: mov X(%rip),%rax  (X = pre+0x1000)
    c.extend(((pre + 0x1000) as i64 - (orig + 10) as i64).to_le_bytes()[..4].iter());
    c.extend([0x66, 0x48, 0x0f, 0x7e, 0xc1]); //           movq %xmm0,%rcx
    if with_avx {
        c.extend([0xc4, 0xe3, 0x7d, 0x39, 0xc2, 0x01]); // vextracti128 $1,%ymm0,%xmm2
        c.extend([0x66, 0x48, 0x0f, 0x7e, 0xd2]); //       movq %xmm2,%rdx
    }
    let land = c.len() as u64;
    (c, orig - pre, land)
}

struct Run {
    plain: PtRegs,
    probed: PtRegs,
    rec: Box<Rec>,
    orig: u64,
    stack_top: u64,
}

fn run_optprobe(v: VectorSave, with_avx: bool, rec: Rec) -> Run {
    let sb = Sandbox::new();
    let pre = sb.at(CODE);
    let (code, orig_off, land) = program(pre, with_avx);
    let orig = pre + orig_off;
    sb.write(pre, &code);
    sb.land(pre + land);
    sb.write_u64(pre + 0x1000, 0x5eed);
    let mut r = sb.regs();
    r.di = 0x0123_4567_89ab_cdef;
    r.bx = 7;
    r.flags |= flags::CF | flags::SF;
    let plain = sb.run(pre, &r);

    let f = decode_function(&code, pre).unwrap();
    let region = check_region(&f, orig, JMP_LEN).unwrap();
    assert_eq!(region.len, 10);
    let mut rec = Box::new(rec);
    let h = Handler {
        func: handler as extern "C" fn(_, _) as usize as u64,
        data: &mut *rec as *mut Rec as u64,
    };
    let tramp = sb.at(CODE + 0x10000);
    let t = optprobe_trampoline(tramp, &code[orig_off as usize..], &region, h, v, false).unwrap();
    sb.write(tramp, &t);
    sb.write(orig, &jmp_rel32(orig, tramp).unwrap());
    let probed = sb.run(pre, &r);
    Run {
        plain,
        probed,
        rec,
        orig,
        stack_top: sb.at(STACK_TOP),
    }
}

#[test]
fn optprobe_trampoline_is_transparent_with_xsave() {
    let Some(size) = xsave_size() else {
        eprintln!("skipped: this CPU has no XSAVE (or the OS did not enable it)");
        return;
    };
    let avx = std::is_x86_feature_detected!("avx2");
    if !avx {
        eprintln!("no AVX2 here: ymm upper lanes not checked");
    }
    let run = run_optprobe(
        VectorSave::Xsave { size },
        avx,
        Rec {
            clobber_vectors: true,
            ..Rec::default()
        },
    );
    assert_eq!(run.rec.hits, 1);
    assert_eq!(
        run.probed, run.plain,
        "every register, xmm0 and ymm0's upper lane survive"
    );
    assert_eq!(run.plain.ax, 0x5eed);
    assert_eq!(run.plain.cx, 0x0123_4567_89ab_cdef);
    if avx {
        assert_eq!(run.plain.dx, 0x0123_4567_89ab_cdef);
    }
    let seen = run.rec.seen;
    assert_eq!(seen.ip, run.orig);
    assert_eq!(seen.sp, run.stack_top);
    assert_eq!(seen.di, 0x0123_4567_89ab_cdef);
    assert_eq!(seen.bx, 7);
    assert_eq!(seen.flags & flags::STATUS, flags::CF | flags::SF);
    assert_eq!((seen.cs, seen.ss, seen.orig_ax), (0x33, 0x2b, u64::MAX));
}

#[test]
fn xmm_save_keeps_xmm_but_not_ymm_upper_halves() {
    let avx = std::is_x86_feature_detected!("avx2");
    if !avx {
        eprintln!("no AVX2 here: the ymm upper-lane part is skipped");
    }
    let run = run_optprobe(
        VectorSave::Xmm,
        avx,
        Rec {
            clobber_vectors: true,
            ..Rec::default()
        },
    );
    assert_eq!(run.probed.cx, run.plain.cx);
    if avx {
        assert_ne!(
            run.probed.dx, run.plain.dx,
            "the handler's AVX write leaks through Xmm"
        );
    }
    if avx {
        let run = run_optprobe(
            VectorSave::Ymm,
            true,
            Rec {
                clobber_vectors: true,
                ..Rec::default()
            },
        );
        assert_eq!(run.probed, run.plain, "Ymm keeps both lanes");
    }
    let run = run_optprobe(
        VectorSave::None,
        false,
        Rec {
            clobber_vectors: true,
            ..Rec::default()
        },
    );
    assert_ne!(
        run.probed.cx, run.plain.cx,
        "with no save the handler clobbers xmm0"
    );
}

// A handler that provably touches no vector register: two integer instructions in
// assembly (a Rust handler may copy a struct through libc's memcpy, whose variant, and so
// whether it uses xmm/ymm registers, depends on the CPU).
core::arch::global_asm!(
    ".text",
    ".globl ptap_test_gpr_only_handler",
    ".hidden ptap_test_gpr_only_handler",
    "ptap_test_gpr_only_handler:",
    "inc qword ptr [rsi]",
    "ret",
);
extern "C" {
    fn ptap_test_gpr_only_handler(regs: *mut PtRegs, data: u64);
}

#[test]
fn no_save_is_transparent_for_a_handler_without_vector_instructions() {
    let sb = Sandbox::new();
    let pre = sb.at(CODE);
    let (code, orig_off, land) = program(pre, false);
    let orig = pre + orig_off;
    sb.write(pre, &code);
    sb.land(pre + land);
    sb.write_u64(pre + 0x1000, 0x5eed);
    let mut r = sb.regs();
    r.di = 0x0123_4567_89ab_cdef;
    let plain = sb.run(pre, &r);
    let f = decode_function(&code, pre).unwrap();
    let region = check_region(&f, orig, JMP_LEN).unwrap();
    let mut hits = 0u64;
    let h = Handler {
        func: ptap_test_gpr_only_handler as unsafe extern "C" fn(_, _) as usize as u64,
        data: &mut hits as *mut u64 as u64,
    };
    let tramp = sb.at(CODE + 0x10000);
    let t = optprobe_trampoline(
        tramp,
        &code[orig_off as usize..],
        &region,
        h,
        VectorSave::None,
        false,
    )
    .unwrap();
    sb.write(tramp, &t);
    sb.write(orig, &jmp_rel32(orig, tramp).unwrap());
    let probed = sb.run(pre, &r);
    assert_eq!(hits, 1);
    assert_eq!(
        probed, plain,
        "a handler that leaves vectors alone needs no save"
    );
}

#[test]
fn optprobe_handler_changes_take_effect_except_ip() {
    let rec = Rec {
        set_di: Some(99),
        set_flags: Some(0x202 | flags::ZF),
        set_ip: Some(0xdead),
        ..Rec::default()
    };
    let run = run_optprobe(VectorSave::Xmm, false, rec);
    assert_eq!(run.probed.di, 99);
    assert_eq!(run.probed.flags & flags::STATUS, flags::ZF);
    // ip changes are ignored (as Linux optprobes do): the program ran on normally
    assert_eq!(run.probed.ip, run.plain.ip);
    assert_eq!(
        PtRegs {
            di: 0,
            flags: 0,
            ..run.probed
        },
        PtRegs {
            di: 0,
            flags: 0,
            ..run.plain
        }
    );
}

#[test]
fn return_trampoline_reports_and_jumps_to_the_real_return_address() {
    let sb = Sandbox::new();
    let site = sb.at(CODE); //                     c3   ret   (the probed function returns)
    sb.write(site, &[0xc3]);
    let real_ret = sb.at(CODE + 0x900);
    sb.land(real_ret);
    let tramp = sb.at(CODE + 0x10000);
    let mut rec = Box::new(Rec {
        set_ip: Some(real_ret),
        set_di: Some(5),
        ..Rec::default()
    });
    let h = Handler {
        func: handler as extern "C" fn(_, _) as usize as u64,
        data: &mut *rec as *mut Rec as u64,
    };
    let v = match xsave_size() {
        Some(size) => VectorSave::Xsave { size },
        None => VectorSave::Xmm,
    };
    sb.write(tramp, &return_trampoline(tramp, h, v).unwrap());
    let mut r = sb.regs();
    r.sp -= 8;
    sb.write_u64(r.sp, tramp); // the hijacked return address
    r.ax = 42;
    r.r12 = 12;
    r.flags |= flags::OF;
    let out = sb.run(site, &r);
    assert_eq!(rec.hits, 1);
    assert_eq!(
        (rec.seen.ip, rec.seen.ax, rec.seen.sp),
        (tramp, 42, sb.at(STACK_TOP))
    );
    assert_eq!(out.ip, real_ret);
    assert_eq!(out.sp, sb.at(STACK_TOP));
    assert_eq!((out.ax, out.di, out.r12), (42, 5, 12));
    assert_eq!(out.flags & flags::STATUS, flags::OF);
}

#[test]
fn jump_patch_bytes() {
    // e9 fb 0f 00 00           jmp .+0x1000
    assert_eq!(jmp_rel32(0x1000, 0x2000), Ok([0xe9, 0xfb, 0x0f, 0, 0]));
    assert_eq!(
        jmp_rel32(0x1000, 0x1000 + (3 << 30)),
        Err(crate::ArchError::OutOfRange)
    );
}

extern "C" fn empty_handler(_regs: *mut PtRegs, data: u64) {
    // SAFETY: data points at the test's counter.
    unsafe { *(data as *mut u64) += 1 };
}

/// Cost per hit of the optprobe trampoline around a counting handler, by vector save
/// mode, and the AVX→SSE transition penalty (a handler executing one legacy-SSE
/// instruction while the upper halves are dirty: the `Ymm` restore leaves them dirty
/// for the next hit). Not a timed test: `cargo test --release -p ptap-arch --lib --
/// --ignored --nocapture trampoline_cost` prints `vsave MODE ns=X` lines (bench/run
/// reads them).
#[test]
#[ignore]
fn optprobe_trampoline_cost() {
    const N: u64 = 2_000_000;
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    let code = [
        0x48, 0x89, 0xe5, //       orig+0:  mov %rsp,%rbp
        0x48, 0x8d, 0x40, 0x01, // orig+3:  lea 0x1(%rax),%rax
        0x49, 0xff, 0xcc, //       orig+7:  dec %r12
        0x75, 0xf4, //             orig+10: jne orig
    ];
    sb.write(orig, &code);
    sb.land(orig + code.len() as u64);
    let mut r = sb.regs();
    r.r12 = N;
    let time = |r: &PtRegs| {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let out = sb.run(orig, r);
            best = best.min(t.elapsed().as_nanos() as f64 / N as f64);
            assert_eq!(out.ax, N);
        }
        best
    };
    let base = time(&r);
    eprintln!("unprobed loop: {base:.2} ns/iteration");
    let f = decode_function(&code, orig).unwrap();
    let region = check_region(&f, orig, JMP_LEN).unwrap();
    let avx = avx_enabled();
    let zmm = avx512_enabled();
    let mut modes: Vec<(&str, VectorSave, bool)> = vec![
        ("none", VectorSave::None, false),
        ("xmm", VectorSave::Xmm, false),
    ];
    if avx {
        modes.push(("ymm", VectorSave::Ymm, false));
        let wide = |n, zmm, mxcsr| VectorSave::Wide { n, zmm, mxcsr };
        modes.push(("ymm+vzeroupper", wide(16, false, true), false));
        modes.push(("ymm0-7+vzeroupper (entry)", wide(8, false, false), false));
        if zmm {
            modes.push(("zmm+vzeroupper", wide(16, true, true), false));
            modes.push(("zmm0-7+vzeroupper (entry)", wide(8, true, false), false));
        }
        modes.push((
            "ymm, SSE handler (transition penalty)",
            VectorSave::Ymm,
            true,
        ));
        modes.push(("ymm+vzeroupper, SSE handler", wide(16, false, true), true));
        modes.push((
            "sse (xmm0-15+MXCSR, no vzeroupper)",
            VectorSave::Sse { mxcsr: true },
            false,
        ));
        modes.push(("sse, SSE handler", VectorSave::Sse { mxcsr: true }, true));
        eprintln!(
            "sse_after_avx penalty_ticks={} cheap={}",
            transition_penalty_ticks(),
            sse_after_avx_is_cheap()
        );
    } else {
        eprintln!("no AVX here: only none/xmm/xsave are measured");
    }
    if let Some(size) = xsave_size() {
        modes.push(("xsave", VectorSave::Xsave { size }, false));
    }
    for (name, v, sse) in modes {
        let mut hits = 0u64;
        let func = if sse {
            sse_handler as extern "C" fn(_, _) as usize as u64
        } else {
            empty_handler as extern "C" fn(_, _) as usize as u64
        };
        let h = Handler {
            func,
            data: &mut hits as *mut u64 as u64,
        };
        let tramp = sb.at(CODE + 0x10000);
        sb.write(
            tramp,
            &optprobe_trampoline(tramp, &code, &region, h, v, false).unwrap(),
        );
        sb.write(orig, &jmp_rel32(orig, tramp).unwrap());
        let ns = time(&r);
        assert_eq!(hits, 3 * N);
        eprintln!("vsave {name} ns={:.2}", ns - base);
        sb.write(orig, &code[..JMP_LEN]);
    }
}

/// A region holding a conditional branch: relocated into the trampoline (widened to
/// rel32 and re-targeted), both directions behave as without the probe.
#[test]
fn optprobe_region_with_a_conditional_branch() {
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    let code = [
        0x85, 0xc0, //       orig+0: test %eax,%eax
        0x74, 0x10, //       orig+2: je orig+0x14
        0x48, 0x89, 0xe5, // orig+4: mov %rsp,%rbp
    ];
    sb.write(orig, &code);
    sb.land(orig + 7);
    sb.land(orig + 0x14);
    let f = decode_function(&code, orig).unwrap();
    let region = check_region(&f, orig, JMP_LEN).unwrap();
    assert_eq!(region.len, 7);
    let mut hits = 0u64;
    let h = Handler {
        func: empty_handler as extern "C" fn(_, _) as usize as u64,
        data: &mut hits as *mut u64 as u64,
    };
    let tramp = sb.at(CODE + 0x10000);
    let t = optprobe_trampoline(tramp, &code, &region, h, VectorSave::None, false).unwrap();
    let mut plain = vec![];
    for ax in [0u64, 1] {
        let mut r = sb.regs();
        r.ax = ax;
        plain.push(sb.run(orig, &r));
    }
    assert_eq!((plain[0].ip, plain[1].ip), (orig + 0x14, orig + 7));
    sb.write(tramp, &t);
    sb.write(orig, &jmp_rel32(orig, tramp).unwrap());
    for (k, ax) in [0u64, 1].into_iter().enumerate() {
        let mut r = sb.regs();
        r.ax = ax;
        assert_eq!(sb.run(orig, &r), plain[k]);
    }
    assert_eq!(hits, 2);
}

// ---------------------------------------------------------------- Wide (full width + vzeroupper)

/// What a compiled-script handler may do to vector state: write the low 128 bits of
/// xmm registers with legacy SSE instructions and change MXCSR's status flags (0/0
/// raises the invalid-operation flag). It never touches upper halves, zmm16-31 or the
/// mask registers.
extern "C" fn sse_handler(_regs: *mut PtRegs, data: u64) {
    // SAFETY: clobbers only the declared xmm registers (and MXCSR status flags).
    unsafe {
        core::arch::asm!(
            "pcmpeqd xmm0, xmm0",
            "pcmpeqd xmm9, xmm9",
            "xorps xmm1, xmm1",
            "divss xmm1, xmm1",
            out("xmm0") _, out("xmm1") _, out("xmm9") _,
        )
    };
    // SAFETY: data points at the test's counter.
    unsafe { *(data as *mut u64) += 1 };
}

/// A function that fills vector registers from rdi before the probed region and reads
/// them back into general-purpose registers after it: ymm0 and ymm9 upper lanes (rcx,
/// rdx), and with AVX-512 zmm0 and zmm9 bits 256-319 (rsi, r8), zmm16 (r9) and k1
/// (r10); MXCSR in r11. Returns (code, offset of the region, offset of the landing).
fn wide_program(pre: u64, avx512: bool) -> (Vec<u8>, u64, u64) {
    use Register::*;
    let i2 = |c, a, b| Instruction::with2(c, a, b).unwrap();
    let i3 = |c, a, b, k: i32| Instruction::with3(c, a, b, k).unwrap();
    let mut before = vec![
        i2(Code::Movq_xmm_rm64, XMM0, RDI),
        i2(Code::VEX_Vpbroadcastq_ymm_xmmm64, YMM0, XMM0),
        i2(Code::VEX_Vpbroadcastq_ymm_xmmm64, YMM9, XMM0),
    ];
    if avx512 {
        before.extend([
            i2(Code::EVEX_Vpbroadcastq_zmm_k1z_xmmm64, ZMM0, XMM0),
            i2(Code::EVEX_Vpbroadcastq_zmm_k1z_xmmm64, ZMM9, XMM0),
            i2(Code::EVEX_Vpbroadcastq_zmm_k1z_xmmm64, ZMM16, XMM0),
            i2(Code::VEX_Kmovq_kr_r64, K1, RDI),
        ]);
    }
    let region = vec![
        i2(Code::Mov_r64_rm64, RBP, RSP),
        Instruction::with2(
            Code::Lea_r64_m,
            RAX,
            MemoryOperand::with_base_displ(RIP, pre as i64 + 0x1000),
        )
        .unwrap(),
    ];
    let mut after = vec![
        i3(Code::VEX_Vextracti128_xmmm128_ymm_imm8, XMM2, YMM0, 1),
        i2(Code::Movq_rm64_xmm, RCX, XMM2),
        i3(Code::VEX_Vextracti128_xmmm128_ymm_imm8, XMM2, YMM9, 1),
        i2(Code::Movq_rm64_xmm, RDX, XMM2),
    ];
    if avx512 {
        for (z, r) in [(ZMM0, RSI), (ZMM9, R8)] {
            after.push(i3(
                Code::EVEX_Vextracti64x4_ymmm256_k1z_zmm_imm8,
                YMM3,
                z,
                1,
            ));
            after.push(i2(Code::Movq_rm64_xmm, r, XMM3));
        }
        after.push(i2(Code::EVEX_Vmovq_rm64_xmm, R9, XMM16));
        after.push(i2(Code::VEX_Kmovq_r64_kr, R10, K1));
    }
    after.push(
        Instruction::with1(Code::Stmxcsr_m32, MemoryOperand::with_base_displ(RSP, -8)).unwrap(),
    );
    after.push(
        Instruction::with2(
            Code::Mov_r32_rm32,
            R11D,
            MemoryOperand::with_base_displ(RSP, -8),
        )
        .unwrap(),
    );
    let enc = |v: &[Instruction], at: u64| {
        BlockEncoder::encode(64, InstructionBlock::new(v, at), BlockEncoderOptions::NONE)
            .unwrap()
            .code_buffer
    };
    let mut code = enc(&before, pre);
    let orig = code.len() as u64;
    code.extend(enc(&region, pre + orig));
    let after_at = pre + code.len() as u64;
    code.extend(enc(&after, after_at));
    let land = code.len() as u64;
    (code, orig, land)
}

/// (plain run, probed run, hits) of `wide_program` with `v` around `sse_handler`.
fn run_wide(v: VectorSave, avx512: bool) -> (PtRegs, PtRegs, u64) {
    let sb = Sandbox::new();
    let pre = sb.at(CODE);
    let (code, orig_off, land) = wide_program(pre, avx512);
    let orig = pre + orig_off;
    sb.write(pre, &code);
    sb.land(pre + land);
    let mut r = sb.regs();
    r.di = 0x0123_4567_89ab_cdef;
    let plain = sb.run(pre, &r);
    let f = decode_function(&code, pre).unwrap();
    let region = check_region(&f, orig, JMP_LEN).unwrap();
    let mut hits = 0u64;
    let h = Handler {
        func: sse_handler as extern "C" fn(_, _) as usize as u64,
        data: &mut hits as *mut u64 as u64,
    };
    let tramp = sb.at(CODE + 0x10000);
    let t = optprobe_trampoline(tramp, &code[orig_off as usize..], &region, h, v, false).unwrap();
    sb.write(tramp, &t);
    sb.write(orig, &jmp_rel32(orig, tramp).unwrap());
    let probed = sb.run(pre, &r);
    (plain, probed, hits)
}

#[test]
fn wide_save_keeps_every_register_a_known_handler_can_change() {
    if !avx_enabled() {
        eprintln!("skipped: this CPU (or OS) has no AVX: the Wide save is not used here");
        return;
    }
    let avx512 = avx512_enabled();
    if !avx512 {
        eprintln!("no AVX-512 here: zmm upper halves, zmm16 and k1 are not checked");
    }
    let v = VectorSave::Wide {
        n: 16,
        zmm: avx512,
        mxcsr: true,
    };
    let (plain, probed, hits) = run_wide(v, avx512);
    assert_eq!(hits, 1);
    assert_eq!(plain.cx, 0x0123_4567_89ab_cdef, "the program works");
    if avx512 {
        assert_eq!(
            (plain.si, plain.r8, plain.r9),
            (plain.cx, plain.cx, plain.cx)
        );
        assert_eq!(plain.r10, plain.cx);
    }
    assert_eq!(
        probed, plain,
        "ymm/zmm upper halves, zmm16, k1 and MXCSR survive a handler that uses SSE"
    );
    // Without MXCSR the handler's 0/0 leaks into the status flags.
    let (plain, probed, _) = run_wide(
        VectorSave::Wide {
            n: 16,
            zmm: avx512,
            mxcsr: false,
        },
        avx512,
    );
    assert_ne!(
        probed.r11 & 1,
        plain.r11 & 1,
        "the invalid-operation flag leaks"
    );
    // With n = 8 (the argument registers only) registers 8-15 are not saved:
    // vzeroupper clears ymm9's upper lane. Entries save all 16: under GCC's
    // -fipa-ra a caller may keep ymm9 live across the call.
    let (plain, probed, _) = run_wide(
        VectorSave::Wide {
            n: 8,
            zmm: avx512,
            mxcsr: false,
        },
        avx512,
    );
    assert_eq!(probed.cx, plain.cx, "ymm0 survives");
    assert_eq!(probed.dx, 0, "ymm9's upper lane is zeroed by vzeroupper");
    if avx512 {
        // A ymm-only save cannot keep zmm0's bits 256-511 on an AVX-512 CPU.
        let (plain, probed, _) = run_wide(
            VectorSave::Wide {
                n: 16,
                zmm: false,
                mxcsr: true,
            },
            true,
        );
        assert_eq!(probed.cx, plain.cx);
        assert_ne!(
            probed.si, plain.si,
            "zmm0's upper 256 bits need the zmm save"
        );
        assert_eq!((probed.r9, probed.r10), (plain.r9, plain.r10));
    }
}

#[test]
fn sse_save_keeps_every_register_a_known_handler_can_change() {
    if !avx_enabled() {
        eprintln!("skipped: this CPU (or OS) has no AVX: the Sse save is not used here");
        return;
    }
    let avx512 = avx512_enabled();
    if !avx512 {
        eprintln!("no AVX-512 here: zmm upper halves, zmm16 and k1 are not checked");
    }
    // Only the low halves are saved, and no vzeroupper runs: legacy SSE in the
    // handler leaves bits 128 and up of every register as the program left them.
    let (plain, probed, hits) = run_wide(VectorSave::Sse { mxcsr: true }, avx512);
    assert_eq!(hits, 1);
    assert_eq!(plain.cx, 0x0123_4567_89ab_cdef, "the program works");
    assert_eq!(
        probed, plain,
        "ymm/zmm upper halves, zmm16, k1 and MXCSR survive a handler that uses SSE"
    );
    let (plain, probed, _) = run_wide(VectorSave::Sse { mxcsr: false }, avx512);
    assert_ne!(
        probed.r11 & 1,
        plain.r11 & 1,
        "without its save the invalid-operation flag leaks"
    );
}

#[test]
fn xsave_keeps_zmm_state_too() {
    let Some(size) = xsave_size() else {
        eprintln!("skipped: no XSAVE here");
        return;
    };
    if !avx_enabled() {
        eprintln!("skipped: no AVX here");
        return;
    }
    let avx512 = avx512_enabled();
    if !avx512 {
        eprintln!("no AVX-512 here: only ymm state is checked");
    }
    let (plain, probed, hits) = run_wide(VectorSave::Xsave { size }, avx512);
    assert_eq!(hits, 1);
    assert_eq!(probed, plain);
}

/// Flags come back through `sahf` + an overflowing `add` when only arithmetic flags
/// differ from user mode's normal state (every one of the six, OF included), and
/// through `popfq` otherwise (here DF, which a handler may set).
#[test]
fn flags_restore_fast_and_slow_paths() {
    for f in [
        0x202 | flags::OF,
        0x202 | flags::CF | flags::ZF | flags::SF,
        0x202 | 0x8d5,
        0x202,
        0x202 | flags::DF | flags::CF,
    ] {
        let run = run_optprobe(
            VectorSave::None,
            false,
            Rec {
                set_flags: Some(f),
                ..Rec::default()
            },
        );
        assert_eq!(
            run.probed.flags & (0x8d5 | flags::DF),
            f & (0x8d5 | flags::DF),
            "{f:#x}"
        );
    }
}

/// What the two handlers of a predicted kretprobe return saw.
#[derive(Default)]
struct Predicted {
    /// The entry handler sends the function to this stub (0: it leaves the
    /// select slot alone, as for a plain kprobe).
    stub: u64,
    real_ret: u64,
    entry_hits: u64,
    ret_hits: u64,
    ret_seen: PtRegs,
}

extern "C" fn predicted_entry(regs: *mut PtRegs, data: u64) {
    // SAFETY: data is the test's Predicted; regs is the select stub's frame,
    // whose spare slot holds the resume address; regs.sp is the function's
    // return address slot (the stub is at the function's entry).
    unsafe {
        let p = &mut *(data as *mut Predicted);
        p.entry_hits += 1;
        if p.stub == 0 {
            return;
        }
        let sel = (regs as *mut u8).add(SELECT_SLOT) as *mut u64;
        let slot = (*regs).sp as *mut u64;
        p.real_ret = *slot;
        *slot = *sel + RESUME_LEN;
        *sel = p.stub;
    }
}

extern "C" fn predicted_ret(regs: *mut PtRegs, data: u64) {
    // SAFETY: data is the test's Predicted; regs is the return stub's frame.
    unsafe {
        let p = &mut *(data as *mut Predicted);
        p.ret_hits += 1;
        p.ret_seen = *regs;
        (*regs).ip = p.real_ret;
        (*regs).dx = 0xd0d0;
    }
}

/// A caller that calls f and lands, and f, whose first two instructions the
/// probe's jump replaces (the first copies the return address f runs with
/// into r9):
///
/// ```text
/// caller: e8 rel32        call f
///         (landing)
/// f:      4c 8b 0c 24     mov (%rsp),%r9
///         48 8d 47 01     lea 0x1(%rdi),%rax
///         48 01 c0        add %rax,%rax
///         c3              ret
/// ```
///
/// `entry`: the function-entry stub (as the runtime builds for kretprobes),
/// else the mid-function one.
fn run_predicted(
    stub_mode: Option<VectorSave>,
    entry: bool,
) -> (PtRegs, Box<Predicted>, u64, u64, u64) {
    let sb = Sandbox::new();
    let caller = sb.at(CODE);
    let f = sb.at(CODE + 0x100);
    let code = [
        0x4c, 0x8b, 0x0c, 0x24, 0x48, 0x8d, 0x47, 0x01, 0x48, 0x01, 0xc0, 0xc3,
    ];
    sb.write(f, &code);
    let call = Instruction::with_branch(Code::Call_rel32_64, f).unwrap();
    let c = BlockEncoder::encode(
        64,
        InstructionBlock::new(&[call], caller),
        BlockEncoderOptions::NONE,
    )
    .unwrap()
    .code_buffer;
    sb.write(caller, &c);
    let landing = caller + c.len() as u64;
    sb.land(landing);
    let mut p = Box::new(Predicted::default());
    let data = &mut *p as *mut Predicted as u64;
    let stub_at = sb.at(CODE + 0x8000);
    let mut t = 0;
    if let Some(v) = stub_mode {
        let h = Handler {
            func: predicted_ret as extern "C" fn(_, _) as usize as u64,
            data,
        };
        let (bytes, t_off) = predicted_return_stub(stub_at, h, v).unwrap();
        sb.write(stub_at, &bytes);
        p.stub = stub_at;
        t = stub_at + t_off;
    }
    let info = decode_function(&code, f).unwrap();
    let region = check_region(&info, f, JMP_LEN).unwrap();
    assert_eq!(region.len, 8);
    let h = Handler {
        func: predicted_entry as extern "C" fn(_, _) as usize as u64,
        data,
    };
    let tramp = sb.at(CODE + 0x10000);
    let v = VectorSave::None;
    let stub = optprobe_trampoline(tramp, &code, &region, h, v, entry);
    sb.write(tramp, &stub.unwrap());
    sb.write(f, &jmp_rel32(f, tramp).unwrap());
    let mut r = sb.regs();
    r.di = 20;
    r.dx = 3;
    r.flags |= flags::CF;
    let out = sb.run(caller, &r);
    (out, p, landing, t, sb.at(STACK_TOP))
}

#[test]
fn select_stub_left_alone_runs_the_function_as_before() {
    for entry in [false, true] {
        let (out, p, landing, _, top) = run_predicted(None, entry);
        assert_eq!((p.entry_hits, p.ret_hits), (1, 0));
        assert_eq!((out.ip, out.ax, out.dx, out.sp), (landing, 42, 3, top));
        assert_eq!(out.r9, landing, "f ran with its real return address");
    }
}

#[test]
fn predicted_return_stub_calls_the_function_and_returns_to_the_caller() {
    let (plain, ..) = run_predicted(None, true);
    for (v, entry) in [
        (VectorSave::None, true),
        (VectorSave::Xmm, true),
        (VectorSave::None, false),
    ] {
        let (out, p, landing, t, top) = run_predicted(Some(v), entry);
        assert_eq!((p.entry_hits, p.ret_hits), (1, 1), "{v:?}");
        // The function ran whole (the relocated region, then its own code)
        // with T as its return address (what the stub's call pushed, and
        // what the runtime's is_ret_trampoline knows), and returned there,
        // with its stack as on a plain return.
        assert_eq!(p.ret_seen.r9, t, "{v:?} {entry}");
        assert_eq!(p.ret_seen.ip, t, "{v:?}");
        assert_eq!((p.ret_seen.ax, p.ret_seen.sp), (42, top), "{v:?}");
        assert_eq!(p.real_ret, landing, "{v:?}");
        // Back at the caller: the return value, the handler's change to rdx.
        assert_eq!(
            (out.ip, out.ax, out.dx, out.sp),
            (landing, 42, 0xd0d0, top),
            "{v:?}"
        );
        // the flags the function's `add` left (the return handler ran in between)
        assert_eq!(
            out.flags & flags::STATUS,
            plain.flags & flags::STATUS,
            "{v:?}"
        );
    }
}

/// The entry stub reads the flags with `lahf`/`seto` instead of `pushfq`:
/// the handler sees every combination of the six arithmetic flags (and IF),
/// and the probed code finds them as they were.
#[test]
fn entry_stub_saves_every_arithmetic_flag_without_pushfq() {
    // 48 89 f8   mov %rdi,%rax
    // 48 89 f1   mov %rsi,%rcx      (the region; neither changes a flag)
    let code = [0x48, 0x89, 0xf8, 0x48, 0x89, 0xf1];
    let sb = Sandbox::new();
    let f = sb.at(CODE);
    sb.write(f, &code);
    sb.land(f + code.len() as u64);
    let info = decode_function(&code, f).unwrap();
    let region = check_region(&info, f, JMP_LEN).unwrap();
    let mut rec = Box::new(Rec::default());
    let h = Handler {
        func: handler as extern "C" fn(_, _) as usize as u64,
        data: &mut *rec as *mut Rec as u64,
    };
    let tramp = sb.at(CODE + 0x10000);
    let t = optprobe_trampoline(tramp, &code, &region, h, VectorSave::None, true).unwrap();
    // 9c 58: pushfq; pop %rax (the mid-function stub's way)
    let pushf = |b: Vec<u8>| b.windows(2).any(|w| w == [0x9c, 0x58]);
    let hole = Handler { func: 1, data: 2 };
    assert!(pushf(
        body(Stub::ProbeSelect, 3, hole, VectorSave::None).unwrap()
    ));
    assert_eq!(
        pushf(body(Stub::EntrySelect, 3, hole, VectorSave::None).unwrap()),
        !lahf_sahf()
    );
    sb.write(tramp, &t);
    sb.write(f, &jmp_rel32(f, tramp).unwrap());
    const ARITH: [u64; 6] = [flags::CF, 0x4, 0x10, flags::ZF, flags::SF, flags::OF];
    for bits in 0..64u32 {
        let want: u64 = (0..6)
            .filter(|k| bits & (1 << k) != 0)
            .map(|k| ARITH[k])
            .sum();
        let mut r = sb.regs();
        r.flags = (r.flags & !0x8d5) | want;
        let out = sb.run(f, &r);
        assert_eq!(rec.seen.flags & 0x8d5, want, "handler's view of {want:#x}");
        assert_ne!(rec.seen.flags & 0x200, 0, "IF");
        assert_eq!(out.flags & 0x8d5, want, "after the stub, {want:#x}");
    }
    assert_eq!(rec.hits, 64);
}
