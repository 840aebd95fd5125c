//! Code stubs that call a handler with a [`PtRegs`](crate::regs::PtRegs) built from the live registers, without
//! a trap: the jump-optimized probe trampoline (Linux "optprobe" template) and the
//! kretprobe return trampoline. Built once at registration (allocates); the code they
//! produce allocates nothing.
//!
//! The handler is `extern "C" fn(regs: *mut PtRegs, data: u64)` (SysV ABI), called with a
//! 16-byte aligned stack and DF clear. Changes it makes to the general-purpose registers
//! and to `flags` take effect; see each builder for `ip` and `sp`.
//!
//! Vector state: the SysV ABI lets the handler clobber every xmm/ymm/zmm register, and a
//! probe may sit where they are live (float arguments at function entry, anything in the
//! middle of a function). [`VectorSave`] says what the stub preserves. `Xsave` is always
//! correct; `Wide` (the first n registers at full width, MXCSR, then `vzeroupper`) is
//! enough when everything the handler runs is known (see docs/optprobes.md); `Xmm` only
//! if nothing the handler runs executes an AVX instruction; `None` only for handlers
//! that use no vector register at all. (The trap path needs none of this: the kernel
//! saves the whole extended state in the signal frame.)

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock, MemoryOperand, Register,
};

use crate::optprobe::Region;
use crate::regs::offset;
use crate::ArchError;

/// The x86-64 red zone below rsp that leaf code may use without moving rsp.
pub const RED_ZONE: i64 = 128;
/// Stack bytes for the PtRegs frame (168, padded to a multiple of 16).
pub const FRAME: i64 = 176;
/// User-mode segment selectors Linux reports in pt_regs.
const USER_CS: i32 = 0x33;
const USER_SS: i32 = 0x2b;

/// What a stub calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler {
    /// Address of `extern "C" fn(*mut PtRegs, u64)`.
    pub func: u64,
    /// Its second argument.
    pub data: u64,
}

/// Which vector/FPU state a stub saves around the handler call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorSave {
    /// Nothing.
    None,
    /// xmm0–xmm15 (256 bytes, movups).
    Xmm,
    /// ymm0–ymm15 (512 bytes, vmovdqu; needs AVX), and nothing else: the handler then
    /// runs with dirty upper halves, so its first legacy-SSE instruction pays the
    /// AVX→SSE transition penalty on some CPUs. Kept to measure that penalty.
    Ymm,
    /// The first `n` vector registers at their full width (ymm with `vmovdqu`, or zmm
    /// with `vmovdqu64` when `zmm`: needs AVX-512F), MXCSR when `mxcsr`, then
    /// `vzeroupper` before the call (no transition penalty in the handler); restored
    /// after it. Enough when nothing the handler runs touches other vector state (see
    /// docs/optprobes.md for the argument). Needs AVX.
    Wide { n: u8, zmm: bool, mxcsr: bool },
    /// xmm0–xmm15 (movups) and MXCSR when `mxcsr`, without `vzeroupper`: the
    /// handler runs with the target's upper halves in place. Enough when every
    /// instruction the handler runs is legacy SSE (which never writes bits 128
    /// and up; see docs/optprobes.md), and cheap only where legacy SSE after
    /// AVX costs nothing ([`sse_after_avx_is_cheap`]).
    Sse { mxcsr: bool },
    /// Everything enabled in XCR0, with `xsave64`/`xrstor64` into a buffer of `size`
    /// bytes (CPUID.(EAX=0DH,ECX=0):EBX; see [`xsave_size`]); `vzeroupper` follows the
    /// save where AVX is enabled.
    Xsave { size: u32 },
}

impl VectorSave {
    /// (alignment mask for `and rsp`, bytes reserved below the aligned rsp) of the save
    /// area; the registers are saved from the aligned rsp upwards.
    pub fn area(self) -> (i32, i32) {
        match self {
            VectorSave::None => (-16, 0),
            VectorSave::Xmm => (-16, 256),
            // one more 16-byte slot for MXCSR keeps the alignment
            VectorSave::Sse { mxcsr } => (-16, if mxcsr { 272 } else { 256 }),
            VectorSave::Ymm => (-32, 512),
            VectorSave::Wide { n, zmm, .. } => {
                let w = if zmm { 64 } else { 32 };
                // one more slot for MXCSR keeps the alignment
                (-w, w * (n.min(16) as i32 + 1))
            }
            VectorSave::Xsave { size } => (-64, ((size + 63) & !63) as i32),
        }
    }

    /// Bytes between two saved registers (0: no per-register layout, XSAVE).
    pub fn stride(self) -> u64 {
        match self {
            VectorSave::Xmm | VectorSave::Sse { .. } => 16,
            VectorSave::Ymm => 32,
            VectorSave::Wide { zmm, .. } => {
                if zmm {
                    64
                } else {
                    32
                }
            }
            VectorSave::None | VectorSave::Xsave { .. } => 0,
        }
    }
}

/// LAHF/SAHF in 64-bit mode (CPUID.80000001H:ECX bit 0; absent only on the very
/// first x86-64 CPUs).
fn lahf_sahf() -> bool {
    cpu().lahf_sahf
}

/// The CPU facts trampolines depend on, read once per process: CPUID is a
/// VM exit under a hypervisor (microseconds each), and arming 10,000 probes
/// asked for them 30,000 times (a quarter of the arming time).
#[derive(Clone, Copy)]
struct CpuFacts {
    lahf_sahf: bool,
    /// XCR0, or 0 without OSXSAVE.
    xcr0: u64,
    /// CPUID leaf 0xD EBX: the XSAVE area size for XCR0's features.
    xsave_size: Option<u32>,
}

fn read_cpu() -> CpuFacts {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let lahf_sahf = __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 != 0;
    // CPUID leaf 1 ECX bit 27: OSXSAVE (the OS enabled XSAVE and set XCR0).
    if __cpuid_count(1, 0).ecx & (1 << 27) == 0 {
        return CpuFacts {
            lahf_sahf,
            xcr0: 0,
            xsave_size: None,
        };
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx = 0 is valid when OSXSAVE is set (checked above).
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    let d = __cpuid_count(0xd, 0); // leaf 0xD exists when OSXSAVE is set
    CpuFacts {
        lahf_sahf,
        xcr0: (hi as u64) << 32 | lo as u64,
        xsave_size: Some(d.ebx),
    }
}

/// The cached [`CpuFacts`]. No lock and no allocation: the runtime calls this
/// while arming probes inside the target, and two threads racing to fill
/// the cache store the same value.
fn cpu() -> CpuFacts {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Bit 63 of STATE: filled; bit 62: LAHF/SAHF; bit 61: has XSAVE; low 32
    // bits: the XSAVE size. XCR0 goes in its own word.
    static STATE: AtomicU64 = AtomicU64::new(0);
    static XCR0: AtomicU64 = AtomicU64::new(0);
    let s = STATE.load(Ordering::Acquire);
    if s & 1 << 63 != 0 {
        return CpuFacts {
            lahf_sahf: s & 1 << 62 != 0,
            xcr0: XCR0.load(Ordering::Relaxed),
            xsave_size: (s & 1 << 61 != 0).then_some(s as u32),
        };
    }
    let f = read_cpu();
    XCR0.store(f.xcr0, Ordering::Relaxed);
    let packed = 1 << 63
        | (f.lahf_sahf as u64) << 62
        | (f.xsave_size.is_some() as u64) << 61
        | f.xsave_size.unwrap_or(0) as u64;
    STATE.store(packed, Ordering::Release);
    f
}

/// Does a legacy-SSE instruction cost nothing extra right after an AVX
/// instruction left the upper halves in use (the state a target thread may be
/// in at a probe)? Measured once per process, at registration, by timing a
/// VEX.256 write followed by one SSE instruction, with and without
/// `vzeroupper` between them (a few microseconds; more only on CPUs that do
/// pay a penalty). On those (some CPUs pay ~100 ns per hit for the AVX→SSE
/// state transition) trampolines keep [`VectorSave::Wide`], whose
/// `vzeroupper` avoids it; elsewhere [`VectorSave::Sse`] saves less state.
/// `PTAP_SSE_SAVE=0` or `=1` overrides the measurement.
pub fn sse_after_avx_is_cheap() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static CHEAP: AtomicU8 = AtomicU8::new(2); // 2 = not measured yet
    match CHEAP.load(Ordering::Relaxed) {
        0 => return false,
        1 => return true,
        _ => {}
    }
    let forced = std::env::var("PTAP_SSE_SAVE").ok();
    let cheap = match forced.as_deref() {
        Some("0") => false,
        Some("1") => avx_enabled(),
        _ => avx_enabled() && transition_penalty_ticks() < PENALTY_TICKS,
    };
    CHEAP.store(cheap as u8, Ordering::Relaxed);
    cheap
}

/// Extra TSC ticks per SSE-after-AVX step above which the penalty counts
/// (~3 ns at 3 GHz; CPUs with the penalty measure hundreds).
const PENALTY_TICKS: u64 = 10;

/// The best of a few runs of [`transition_loop`] with dirty upper halves,
/// minus the best with `vzeroupper`, per step, in TSC ticks (0 if negative).
pub(crate) fn transition_penalty_ticks() -> u64 {
    const STEPS: u64 = 64;
    let best = |clean: bool| {
        (0..5)
            .map(|_| transition_loop(STEPS, clean))
            .min()
            .unwrap_or(0)
    };
    let (dirty, clean) = (best(false), best(true));
    dirty.saturating_sub(clean) / STEPS
}

/// TSC ticks for `n` steps of: a VEX.256 write of ymm15, optionally
/// `vzeroupper`, then one legacy-SSE instruction. Needs AVX (checked by the
/// caller).
fn transition_loop(n: u64, clean: bool) -> u64 {
    let (lo0, hi0, lo1, hi1): (u32, u32, u32, u32);
    // SAFETY: AVX is enabled (caller); the asm clobbers only xmm14/xmm15 (as
    // declared) and leaves the upper halves clean (vzeroupper at the end).
    // Both variants run the same loop; `clean` adds the vzeroupper (a
    // predicted branch either way).
    unsafe {
        core::arch::asm!(
            "lfence",
            "rdtsc",
            "mov {lo0:e}, eax",
            "mov {hi0:e}, edx",
            "2:",
            "vinsertf128 ymm15, ymm15, xmm15, 1",
            "test {clean}, {clean}",
            "jz 3f",
            "vzeroupper",
            "3:",
            "addps xmm14, xmm14",
            "dec {n}",
            "jnz 2b",
            "lfence",
            "rdtsc",
            "vzeroupper",
            n = inout(reg) n => _,
            clean = in(reg) clean as u64,
            lo0 = out(reg) lo0,
            hi0 = out(reg) hi0,
            out("eax") lo1,
            out("edx") hi1,
            out("xmm14") _,
            out("xmm15") _,
            options(nostack),
        );
    }
    let t0 = (hi0 as u64) << 32 | lo0 as u64;
    let t1 = (hi1 as u64) << 32 | lo1 as u64;
    t1.wrapping_sub(t0)
}

/// Did the OS enable AVX state (XCR0 bits 1 and 2)? Then `vzeroupper` is valid.
pub fn avx_enabled() -> bool {
    xcr0() & 6 == 6
}

/// Did the OS enable the AVX-512 state (XCR0 bits 5–7, besides AVX)?
pub fn avx512_enabled() -> bool {
    xcr0() & 0xe6 == 0xe6
}

/// XCR0, or 0 without OSXSAVE.
pub fn xcr0() -> u64 {
    cpu().xcr0
}

/// Size of the XSAVE area for the features the OS enabled (CPUID leaf 0xD, EBX), or
/// `None` if the CPU has no XSAVE.
pub fn xsave_size() -> Option<u32> {
    cpu().xsave_size
}

fn err(_: iced_x86::IcedError) -> ArchError {
    ArchError::CannotRelocate("iced-x86 could not encode the trampoline")
}

fn m(base: Register, d: i64) -> MemoryOperand {
    MemoryOperand::with_base_displ(base, d)
}

/// Instruction list under construction (each helper can fail only on an iced bug).
struct Asm(Vec<Instruction>);

impl Asm {
    fn op(&mut self, i: Result<Instruction, iced_x86::IcedError>) -> Result<(), ArchError> {
        self.0.push(i.map_err(err)?);
        Ok(())
    }
    fn lea_rsp(&mut self, d: i64) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Lea_r64_m,
            Register::RSP,
            m(Register::RSP, d),
        ))
    }
    fn store(&mut self, off: usize, r: Register) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Mov_rm64_r64,
            m(Register::RSP, off as i64),
            r,
        ))
    }
    fn load(&mut self, r: Register, off: usize) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Mov_r64_rm64,
            r,
            m(Register::RSP, off as i64),
        ))
    }
    fn store_imm(&mut self, off: usize, v: i32) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Mov_rm64_imm32,
            m(Register::RSP, off as i64),
            v,
        ))
    }
    fn movabs(&mut self, r: Register, v: u64) -> Result<(), ArchError> {
        self.op(Instruction::with2(Code::Mov_r64_imm64, r, v))
    }
    fn plain(&mut self, c: Code) {
        self.0.push(Instruction::with(c));
    }

    /// Save registers into a PtRegs at rsp (already reserved), `sp_value` = rsp + sp_off.
    /// With `abi_flags` (a function's entry or return, where the ABI says
    /// DF is clear, and a CPU with LAHF in 64-bit mode) the flags are read
    /// without `pushfq` (slow: it waits for every flag, system ones
    /// included): the arithmetic ones with `lahf` and `seto`, IF set, and
    /// nothing else (see docs/optprobes.md, "Flags").
    fn save_regs(&mut self, sp_off: i64, ip: u64, abi_flags: bool) -> Result<(), ArchError> {
        for (r, off) in crate::regs::GPRS {
            self.store(off, r)?;
        }
        if abi_flags {
            self.plain(Code::Lahf); // ah = SF ZF 0 AF 0 PF 1 CF
            self.op(Instruction::with1(Code::Seto_rm8, Register::CL))?;
            self.op(Instruction::with2(
                Code::Movzx_r32_rm8,
                Register::ECX,
                Register::CL,
            ))?;
            self.op(Instruction::with2(
                Code::Shl_rm32_imm8,
                Register::ECX,
                11u32,
            ))?;
            self.op(Instruction::with2(
                Code::Movzx_r32_rm8,
                Register::EAX,
                Register::AH,
            ))?;
            self.op(Instruction::with2(
                Code::Or_r32_rm32,
                Register::EAX,
                Register::ECX,
            ))?;
            self.op(Instruction::with2(
                Code::Or_rm32_imm32,
                Register::EAX,
                0x200,
            ))?;
        } else {
            self.plain(Code::Pushfq); // writes below the frame: free stack
            self.op(Instruction::with1(Code::Pop_r64, Register::RAX))?;
        }
        self.store(offset::FLAGS, Register::RAX)?;
        self.op(Instruction::with2(
            Code::Lea_r64_m,
            Register::RAX,
            m(Register::RSP, sp_off),
        ))?;
        self.store(offset::SP, Register::RAX)?;
        self.movabs(Register::RAX, ip)?;
        self.store(offset::IP, Register::RAX)?;
        self.store_imm(offset::ORIG_AX, -1)?;
        self.store_imm(offset::CS, USER_CS)?;
        self.store_imm(offset::SS, USER_SS)
    }

    /// rbx = &PtRegs; align, save vector state, call, restore vector state, rsp = rbx.
    fn call_handler(&mut self, h: Handler, v: VectorSave, avx: bool) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RBX,
            Register::RSP,
        ))?;
        let (align, area) = v.area();
        self.op(Instruction::with2(
            Code::And_rm64_imm8,
            Register::RSP,
            align,
        ))?;
        if area > 0 {
            self.op(Instruction::with2(
                Code::Sub_rm64_imm32,
                Register::RSP,
                area,
            ))?;
        }
        let stride = v.stride() as i64;
        match v {
            VectorSave::None => {}
            // The same low-halves save; `Sse` adds MXCSR when asked.
            VectorSave::Xmm | VectorSave::Sse { .. } => {
                for k in 0..16 {
                    let mem = m(Register::RSP, stride * k as i64);
                    self.op(Instruction::with2(Code::Movups_xmmm128_xmm, mem, xmm(k)))?;
                }
                if v == (VectorSave::Sse { mxcsr: true }) {
                    self.op(Instruction::with1(Code::Stmxcsr_m32, m(Register::RSP, 256)))?;
                }
            }
            VectorSave::Ymm => {
                for k in 0..16 {
                    let mem = m(Register::RSP, stride * k as i64);
                    self.op(Instruction::with2(
                        Code::VEX_Vmovdqu_ymmm256_ymm,
                        mem,
                        ymm(k),
                    ))?;
                }
            }
            VectorSave::Wide { n, zmm, mxcsr } => {
                let n = n.min(16) as usize;
                for k in 0..n {
                    let mem = m(Register::RSP, stride * k as i64);
                    if zmm {
                        self.op(Instruction::with2(
                            Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
                            mem,
                            zmmr(k),
                        ))?;
                    } else {
                        self.op(Instruction::with2(
                            Code::VEX_Vmovdqu_ymmm256_ymm,
                            mem,
                            ymm(k),
                        ))?;
                    }
                }
                if mxcsr {
                    let mem = m(Register::RSP, stride * n as i64);
                    self.op(Instruction::with1(Code::Stmxcsr_m32, mem))?;
                }
                self.plain(Code::VEX_Vzeroupper);
            }
            VectorSave::Xsave { .. } => {
                // The XSAVE header (bytes 512..576) must be zero for XRSTOR's checks:
                // XSAVE writes only XSTATE_BV.
                for k in 0..8 {
                    self.store_imm(512 + 8 * k, 0)?;
                }
                self.xsave_mask()?;
                self.op(Instruction::with1(Code::Xsave64_mem, m(Register::RSP, 0)))?;
                if avx {
                    self.plain(Code::VEX_Vzeroupper);
                }
            }
        }
        self.plain(Code::Cld);
        self.op(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RDI,
            Register::RBX,
        ))?;
        self.movabs(Register::RSI, h.data)?;
        self.movabs(Register::RAX, h.func)?;
        self.op(Instruction::with1(Code::Call_rm64, Register::RAX))?;
        match v {
            VectorSave::None => {}
            VectorSave::Xmm | VectorSave::Sse { .. } => {
                if v == (VectorSave::Sse { mxcsr: true }) {
                    self.op(Instruction::with1(Code::Ldmxcsr_m32, m(Register::RSP, 256)))?;
                }
                for k in 0..16 {
                    let mem = m(Register::RSP, stride * k as i64);
                    self.op(Instruction::with2(Code::Movups_xmm_xmmm128, xmm(k), mem))?;
                }
            }
            VectorSave::Ymm => {
                for k in 0..16 {
                    let mem = m(Register::RSP, stride * k as i64);
                    self.op(Instruction::with2(
                        Code::VEX_Vmovdqu_ymm_ymmm256,
                        ymm(k),
                        mem,
                    ))?;
                }
            }
            VectorSave::Wide { n, zmm, mxcsr } => {
                let n = n.min(16) as usize;
                if mxcsr {
                    let mem = m(Register::RSP, stride * n as i64);
                    self.op(Instruction::with1(Code::Ldmxcsr_m32, mem))?;
                }
                for k in 0..n {
                    let mem = m(Register::RSP, stride * k as i64);
                    if zmm {
                        self.op(Instruction::with2(
                            Code::EVEX_Vmovdqu64_zmm_k1z_zmmm512,
                            zmmr(k),
                            mem,
                        ))?;
                    } else {
                        self.op(Instruction::with2(
                            Code::VEX_Vmovdqu_ymm_ymmm256,
                            ymm(k),
                            mem,
                        ))?;
                    }
                }
            }
            VectorSave::Xsave { .. } => {
                self.xsave_mask()?;
                self.op(Instruction::with1(Code::Xrstor64_mem, m(Register::RSP, 0)))?;
            }
        }
        self.op(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RSP,
            Register::RBX,
        ))
    }

    fn xsave_mask(&mut self) -> Result<(), ArchError> {
        self.op(Instruction::with2(
            Code::Mov_r32_imm32,
            Register::EAX,
            u32::MAX,
        ))?;
        self.op(Instruction::with2(
            Code::Mov_r32_imm32,
            Register::EDX,
            u32::MAX,
        ))
    }

    /// Restore flags and every general-purpose register from the PtRegs at rsp.
    ///
    /// `popfq` is slow (microcoded; the most expensive instruction of an empty hit on
    /// some CPUs). When the flags to restore differ from user mode's normal state only
    /// in the six arithmetic flags (the usual case: TF, DF, AC clear, IF set), they are
    /// set without it: OF by an `add` that overflows exactly when OF was set, then SF,
    /// ZF, AF, PF and CF by `sahf`. Anything else (a handler's redirect sets TF) takes
    /// `popfq`.
    fn restore_regs(&mut self, lahf: bool) -> Result<(), ArchError> {
        const ARITH: i32 = 0x8d5; // CF PF AF ZF SF OF
        const NORMAL: i32 = 0x202; // IF and the always-one bit 1
                                   // Labels of the lahf path (instruction ips the encoder resolves).
        const SLOW: u64 = 0x7fff_0000_0000_0001;
        const DONE: u64 = 0x7fff_0000_0000_0002;
        self.load(Register::RAX, offset::FLAGS)?;
        if lahf {
            self.op(Instruction::with2(
                Code::Mov_r32_rm32,
                Register::ECX,
                Register::EAX,
            ))?;
            self.op(Instruction::with2(
                Code::And_rm32_imm32,
                Register::ECX,
                !ARITH,
            ))?;
            self.op(Instruction::with2(
                Code::Cmp_rm32_imm32,
                Register::ECX,
                NORMAL,
            ))?;
            self.op(Instruction::with_branch(Code::Jne_rel32_64, SLOW))?;
            // ecx = OF (bit 11) as 0 or 1; 0x7f + 1 overflows a signed byte
            self.op(Instruction::with2(
                Code::Mov_r32_rm32,
                Register::ECX,
                Register::EAX,
            ))?;
            self.op(Instruction::with2(
                Code::Shr_rm32_imm8,
                Register::ECX,
                11u32,
            ))?;
            self.op(Instruction::with2(Code::And_rm32_imm8, Register::ECX, 1))?;
            self.op(Instruction::with2(
                Code::Add_rm8_imm8,
                Register::CL,
                0x7fu32,
            ))?;
            self.op(Instruction::with2(
                Code::Mov_r8_rm8,
                Register::AH,
                Register::AL,
            ))?;
            self.plain(Code::Sahf);
            self.op(Instruction::with_branch(Code::Jmp_rel32_64, DONE))?;
            let mut push = Instruction::with1(Code::Push_r64, Register::RAX).map_err(err)?;
            push.set_ip(SLOW);
            self.0.push(push); // below the frame
            self.plain(Code::Popfq);
        } else {
            self.op(Instruction::with1(Code::Push_r64, Register::RAX))?; // below the frame
            self.plain(Code::Popfq);
        }
        let first = self.0.len();
        for (r, off) in crate::regs::GPRS {
            self.load(r, off)?;
        }
        if lahf {
            // Both flag paths meet at the first register load.
            self.0[first].set_ip(DONE);
        }
        Ok(())
    }

    fn encode(&self, at: u64) -> Result<Vec<u8>, ArchError> {
        let r = BlockEncoder::encode(
            64,
            InstructionBlock::new(&self.0, at),
            BlockEncoderOptions::NONE,
        )
        .map_err(err)?;
        Ok(r.code_buffer)
    }
}

fn ymm(k: usize) -> Register {
    const Y: [Register; 16] = [
        Register::YMM0,
        Register::YMM1,
        Register::YMM2,
        Register::YMM3,
        Register::YMM4,
        Register::YMM5,
        Register::YMM6,
        Register::YMM7,
        Register::YMM8,
        Register::YMM9,
        Register::YMM10,
        Register::YMM11,
        Register::YMM12,
        Register::YMM13,
        Register::YMM14,
        Register::YMM15,
    ];
    Y[k & 15]
}

fn zmmr(k: usize) -> Register {
    const Z: [Register; 16] = [
        Register::ZMM0,
        Register::ZMM1,
        Register::ZMM2,
        Register::ZMM3,
        Register::ZMM4,
        Register::ZMM5,
        Register::ZMM6,
        Register::ZMM7,
        Register::ZMM8,
        Register::ZMM9,
        Register::ZMM10,
        Register::ZMM11,
        Register::ZMM12,
        Register::ZMM13,
        Register::ZMM14,
        Register::ZMM15,
    ];
    Z[k & 15]
}

fn xmm(k: usize) -> Register {
    const X: [Register; 16] = [
        Register::XMM0,
        Register::XMM1,
        Register::XMM2,
        Register::XMM3,
        Register::XMM4,
        Register::XMM5,
        Register::XMM6,
        Register::XMM7,
        Register::XMM8,
        Register::XMM9,
        Register::XMM10,
        Register::XMM11,
        Register::XMM12,
        Register::XMM13,
        Register::XMM14,
        Register::XMM15,
    ];
    X[k & 15]
}

/// The jump-optimized probe trampoline, to live at `at`, entered by a `jmp` written over
/// `region` (see [`crate::optprobe`]):
///
/// ```text
/// lea -(128+176)(%rsp),%rsp      skip the red zone, reserve the PtRegs frame
/// (save GPRs, flags, sp = original rsp, ip = region.addr, orig_ax = -1, cs, ss)
/// (168(%rsp) = the address of the last lea below: the select slot)
/// (align, save vector state, cld, call handler(&regs, data), restore vector state)
/// (restore flags and GPRs from the frame)
/// jmp *168(%rsp)                 normally to the next instruction
/// lea (128+176)(%rsp),%rsp
/// (the region's instructions, relocated)
/// jmp region.end
/// ```
///
/// As with Linux optprobes, a handler's change to `regs.ip` is ignored (the displaced
/// instructions always run next), and so is a change to `regs.sp`; probes that need to
/// redirect execution must stay on the trap path. A handler may send the thread to a
/// [`predicted_return_stub`] through the select slot. `code` = the region's original
/// bytes. `entry`: the region starts a function, where the ABI says DF is clear, and the
/// flags are saved without `pushfq` ([`Stub::EntrySelect`]; else [`Stub::ProbeSelect`]).
pub fn optprobe_trampoline(
    at: u64,
    code: &[u8],
    region: &Region,
    h: Handler,
    v: VectorSave,
    entry: bool,
) -> Result<Vec<u8>, ArchError> {
    let stub = if entry {
        Stub::EntrySelect
    } else {
        Stub::ProbeSelect
    };
    let mut out = body(stub, region.addr, h, v)?;
    let tail_at = at.wrapping_add(out.len() as u64);
    let tail = crate::optprobe::relocate_region(code, region, tail_at, 8 * 16)?;
    out.extend_from_slice(&tail.bytes);
    Ok(out)
}

/// The stub bodies every trampoline is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stub {
    /// Skip the red zone, save, call, restore, unskip (system call
    /// trampolines; the jump back follows).
    Probe,
    /// As `Probe`, for jump-optimized probes: before the call the stub puts
    /// the address of its last instruction (the unskip, [`RESUME_LEN`] bytes,
    /// followed by the relocated instructions) in the frame's spare slot
    /// [`SELECT_SLOT`], and after the restore it jumps wherever that slot
    /// then says. A handler leaves it, or sends the thread to a
    /// [`predicted_return_stub`] (a kretprobe's entry: see there).
    ProbeSelect,
    /// `ProbeSelect` at a function's first instruction: the flags are saved
    /// without `pushfq`, as in the return stubs (see `save_regs`).
    EntrySelect,
    /// The kretprobe return stub, ending in `jmp *regs.ip`.
    Return,
    /// The return part of [`predicted_return_stub`], ending in `ret` to
    /// `regs.ip` (predicted by the CPU: see there).
    ReturnRet,
}

impl Stub {
    pub const ALL: [Stub; 5] = [
        Stub::Probe,
        Stub::ProbeSelect,
        Stub::EntrySelect,
        Stub::Return,
        Stub::ReturnRet,
    ];

    /// Is the stub at a function's entry or return, where the ABI says DF
    /// is clear (`save_regs`' `abi_flags`)?
    fn at_abi_boundary(self) -> bool {
        matches!(self, Stub::EntrySelect | Stub::Return | Stub::ReturnRet)
    }

    /// Does it end by jumping through [`SELECT_SLOT`]?
    fn selects(self) -> bool {
        matches!(self, Stub::ProbeSelect | Stub::EntrySelect)
    }
}

/// Offset in a stub's frame of the 8 bytes after the PtRegs (padding to 16):
/// [`Stub::ProbeSelect`]'s jump target, [`Stub::ReturnRet`]'s return address.
pub const SELECT_SLOT: usize = 168;

/// Length of [`Stub::ProbeSelect`]'s last instruction, `lea 304(%rsp),%rsp`:
/// the relocated instructions start this far after the address it leaves in
/// [`SELECT_SLOT`].
pub const RESUME_LEN: u64 = 8;

/// Bytes [`predicted_return_stub`]'s entry pops: the probe stub's frame and
/// skipped red zone, and the stack slot holding the relocated code's address.
const PREDICTED_POP: i64 = RED_ZONE + FRAME + 8;

/// A stub body with `ip`, `h.func` and `h.data` in place. Position-independent
/// (the same bytes wherever it is written). Taken from [`crate::prebuilt`] when
/// the mode is there: iced-x86's encoder builds its tables on first use, ~0.5 ms
/// and ~700 KB of heap in every process (measured: a followed exec paid it for
/// its first trampoline); otherwise encoded here.
pub fn body(stub: Stub, ip: u64, h: Handler, v: VectorSave) -> Result<Vec<u8>, ArchError> {
    let (lahf, avx) = (lahf_sahf(), avx_enabled());
    if let Some(p) = crate::prebuilt::find(stub, v, lahf, avx) {
        return Ok(p.fill(ip, h, v));
    }
    encode_body(stub, ip, h, v, lahf, avx)
}

/// [`body`] by iced-x86's encoder (what the prebuilt table is generated from).
pub(crate) fn encode_body(
    stub: Stub,
    ip: u64,
    h: Handler,
    v: VectorSave,
    lahf: bool,
    avx: bool,
) -> Result<Vec<u8>, ArchError> {
    // The select stub's `lea resume(%rip),%rax` needs the offset of its last
    // instruction: encode once to learn the length (the lea's displacement is
    // always 4 bytes, so the length does not change), then again with it.
    let emit = |resume: u64| -> Result<Vec<u8>, ArchError> {
        let mut a = Asm(Vec::with_capacity(64));
        let skip = match stub {
            Stub::Probe | Stub::ProbeSelect | Stub::EntrySelect => RED_ZONE + FRAME,
            // the callee's dead frame is free: no red zone to skip
            Stub::Return | Stub::ReturnRet => FRAME,
        };
        a.lea_rsp(-skip)?;
        a.save_regs(skip, ip, lahf && stub.at_abi_boundary())?;
        if stub.selects() {
            // rax is saved: the frame's spare slot = the resume address
            a.op(Instruction::with2(
                Code::Lea_r64_m,
                Register::RAX,
                m(Register::RIP, resume as i64),
            ))?;
            a.store(SELECT_SLOT, Register::RAX)?;
        }
        a.call_handler(h, v, avx)?;
        if stub == Stub::ReturnRet {
            // the return address goes just below the caller's rsp (the slot the
            // probed function's `ret` popped), where the final `ret` takes it
            a.load(Register::RAX, offset::IP)?;
            a.store(SELECT_SLOT, Register::RAX)?;
        }
        a.restore_regs(lahf)?;
        match stub {
            Stub::Probe => a.lea_rsp(skip)?,
            Stub::ProbeSelect | Stub::EntrySelect => {
                a.op(Instruction::with1(
                    Code::Jmp_rm64,
                    m(Register::RSP, SELECT_SLOT as i64),
                ))?;
                a.lea_rsp(skip)?;
            }
            Stub::Return => {
                a.lea_rsp(skip)?;
                let ip_below = FRAME - offset::IP as i64; // 48
                a.op(Instruction::with1(
                    Code::Jmp_rm64,
                    m(Register::RSP, -ip_below),
                ))?;
            }
            Stub::ReturnRet => {
                a.lea_rsp(SELECT_SLOT as i64)?;
                a.plain(Code::Retnq);
            }
        }
        a.encode(0)
    };
    let first = emit(0)?;
    if !stub.selects() {
        return Ok(first);
    }
    let bytes = emit(first.len() as u64 - RESUME_LEN)?;
    if bytes.len() != first.len() {
        return Err(ArchError::CannotRelocate(
            "the select stub's length changed between encodings",
        ));
    }
    Ok(bytes)
}

/// The kretprobe return trampoline, to live at `at`: a probed function's return address
/// is replaced by `at`, so its `ret` lands here with rsp just above the (popped) return
/// address. The handler gets `regs.ip = at` and the return value in `regs.ax`; it MUST
/// set `regs.ip` to the real return address, where the stub then jumps:
///
/// ```text
/// lea -176(%rsp),%rsp            the callee's dead frame is free: no red zone to skip
/// (save GPRs, flags, sp, ip = at, …; call handler; restore flags and GPRs)
/// lea 176(%rsp),%rsp
/// jmp *-48(%rsp)                 regs.ip: 48 bytes below rsp, inside the 128 bytes
///                                the kernel never overwrites when delivering a signal
/// ```
pub fn return_trampoline(at: u64, h: Handler, v: VectorSave) -> Result<Vec<u8>, ArchError> {
    body(Stub::Return, at, h, v)
}

/// The predicted kretprobe return path, to live at `at`: (its bytes, the
/// offset of its return address T). A jump-optimized probe's handler sends a
/// kretprobe's function here instead of hijacking its return address with
/// the [`return_trampoline`]: it stores the address of the relocated
/// instructions in the return address slot (the real one is in the
/// kretprobe instance) and this entry in the stub's [`SELECT_SLOT`]. The
/// entry then *calls* the relocated instructions, so that the function's
/// `ret` (to T) and the stub's own `ret` (to the real return address, which
/// the caller's `call` left on the CPU's return stack) are both predicted; a
/// hijacked `ret` is a misprediction each time (measured: ~3 ns per call).
///
/// ```text
/// lea 312(%rsp),%rsp             drop the probe stub's frame and the slot
/// call *-8(%rsp)                 reads the slot, then pushes T in its place
/// T: lea -176(%rsp),%rsp         as the return trampoline, with ip = T …
/// (save; call handler; regs.ip to 168(%rsp); restore)
/// lea 168(%rsp),%rsp
/// ret                            to regs.ip
/// ```
pub fn predicted_return_stub(
    at: u64,
    h: Handler,
    v: VectorSave,
) -> Result<(Vec<u8>, u64), ArchError> {
    let mut a = Asm(Vec::with_capacity(2));
    a.lea_rsp(PREDICTED_POP)?;
    a.op(Instruction::with1(Code::Call_rm64, m(Register::RSP, -8)))?;
    let mut out = a.encode(0)?;
    let t = out.len() as u64;
    out.extend_from_slice(&body(Stub::ReturnRet, at.wrapping_add(t), h, v)?);
    Ok((out, t))
}

/// A moved system call site's trampoline, to live at `at` (see the runtime's
/// syscall/sites.rs): `prefix` (the `mov eax, N` and the plain instructions up to the
/// `syscall`, copied byte for byte) runs first, so the registers then hold the number
/// and the arguments; the handler gets them in a PtRegs (`ip` = `resume - 2`, the
/// `syscall`'s address), makes the call itself and leaves its result in `regs.ax`
/// (and what `syscall` leaves in `rcx`/`r11`); the stub then jumps to `resume` (the
/// instruction after the `syscall`):
///
/// ```text
/// (prefix)
/// lea -(128+176)(%rsp),%rsp
/// (save GPRs, flags, …; call handler; restore flags and GPRs)
/// lea (128+176)(%rsp),%rsp
/// jmp resume
/// ```
pub fn syscall_trampoline(
    at: u64,
    prefix: &[u8],
    resume: u64,
    h: Handler,
    v: VectorSave,
) -> Result<Vec<u8>, ArchError> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&body(Stub::Probe, resume.wrapping_sub(2), h, v)?);
    let j = jmp_rel32(at.wrapping_add(out.len() as u64), resume)?;
    out.extend_from_slice(&j);
    Ok(out)
}

/// The 5 bytes written over a region's start: `jmp rel32` from `site` to `trampoline`.
pub fn jmp_rel32(site: u64, trampoline: u64) -> Result<[u8; 5], ArchError> {
    let d = trampoline.wrapping_sub(site.wrapping_add(5)) as i64;
    let d = i32::try_from(d).map_err(|_| ArchError::OutOfRange)?;
    let mut b = [0xe9, 0, 0, 0, 0];
    b[1..].copy_from_slice(&d.to_le_bytes());
    Ok(b)
}

#[cfg(test)]
#[path = "trampoline_tests.rs"]
mod tests;
