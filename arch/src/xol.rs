//! Out-of-line execution of the displaced instruction ("XOL").
//!
//! [`prepare`] runs at registration time (it allocates); [`after_step`] and
//! [`fault_fixup`] run on the hit path (no allocation, no panic).
//!
//! # Slot layout (one layout for both boosting and single-stepping)
//!
//! ```text
//! slot+0          relocated sequence ("body"), 1..=5 instructions
//! slot+body_len   jmp orig+insn_len            (the jump back; never single-stepped)
//! ...             unused
//! slot+56         8-byte constant: orig+insn_len (only for the indirect-call rewrite)
//! ```
//!
//! * Boosting: set `ip = slot` and return from the trap; the body runs and the jump back
//!   (or the instruction's own transfer: `ret`, `jmp *x`, the rewritten call) leaves the slot.
//! * Single-step: set `ip = slot` and EFLAGS.TF; after each trap call [`after_step`] until it
//!   says [`StepResult::Done`]. A rewritten indirect call is 2 (or 5) instructions, a `rep`
//!   string instruction traps once per iteration: both report `Continue` in between.
//!
//! The slot must be within ±2 GiB of the original code (RIP-relative operands and the
//! jump back are rel32), and must be readable (the constant is loaded from it).
//!
//! Known differences from running in place:
//! * boosted `syscall`: rcx (the kernel's saved return address) is `slot+2`, not
//!   `orig+2`. Code never reads rcx after a syscall (the ABI clobbers it). When the syscall
//!   is single-stepped, [`after_step`] restores rcx and r11 exactly.
//! * single-stepped `syscall`: the kernel returns with TF restored, so the CPU traps only
//!   after the NEXT instruction — the jump back — and the trap reports `orig+2`.
//!   [`after_step`] accepts that. The same shadow applies after `mov ss` / `pop ss`.
//! * a signal delivered while a thread is in a boosted slot shows the slot address in its
//!   ucontext (faults are mapped back with [`fault_fixup`]).

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock, MemoryOperand, OpKind,
    Register,
};

use crate::decode::{self, Class, Insn};
use crate::emulate::Emulation;
use crate::regs::PtRegs;
use crate::ArchError;

/// Bytes per XOL slot. The longest body (the 5-instruction indirect-call rewrite through
/// an rsp-relative operand with an index, ≤ 34 bytes) plus the jump back (5) plus the
/// 8-byte constant fit with room to spare.
pub const SLOT_SIZE: usize = 64;
/// Offset of the 8-byte constant (the original return address) inside a slot.
pub const DATA_OFFSET: usize = SLOT_SIZE - 8;
/// Most instructions a relocated sequence may have.
pub const MAX_STEPS: usize = 6;

/// How the displaced instruction is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Run [`Prepared::slot`] (copied to the slot address given to [`prepare`]).
    Slot,
    /// No slot: call [`crate::emulate::emulate`] with this.
    Emulate(Emulation),
}

/// One instruction of a relocated sequence: its offset in the slot and how far rsp is
/// from its original value when that instruction starts (used to undo a partial sequence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub offset: u8,
    pub sp_delta: i8,
}

/// The displaced instruction, ready to run out of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// Original address of the instruction.
    pub orig: u64,
    /// Its length (the probe replaces its first byte by int3).
    pub insn_len: u8,
    pub kind: Kind,
    /// Slot contents; the first `slot_len` bytes are meaningful. All zero for `Emulate`.
    pub slot: [u8; SLOT_SIZE],
    /// Bytes of `slot` to copy (0 for `Emulate`).
    pub slot_len: u8,
    /// Length of the relocated sequence; the jump back starts at this offset.
    pub body_len: u8,
    /// The instructions of the body (`n_steps` of them).
    pub steps: [Step; MAX_STEPS],
    pub n_steps: u8,
    /// The instruction is `syscall`: when it was single-stepped, [`after_step`] puts the
    /// original return address in rcx and clears TF from the flags the CPU saved in r11.
    pub is_syscall: bool,
}

impl Prepared {
    /// The instructions of the body.
    pub fn steps(&self) -> &[Step] {
        self.steps.get(..self.n_steps as usize).unwrap_or(&[])
    }

    /// The meaningful bytes of the slot.
    pub fn slot_bytes(&self) -> &[u8] {
        self.slot.get(..self.slot_len as usize).unwrap_or(&[])
    }

    /// Address after the displaced instruction.
    pub fn next(&self) -> u64 {
        self.orig.wrapping_add(self.insn_len as u64)
    }
}

/// What [`after_step`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepResult {
    /// Still inside the relocated sequence: keep TF set and resume.
    Continue,
    /// The displaced instruction is complete; `regs.ip` is now an address in the
    /// original program (post_handler time).
    Done,
}

/// Can the instruction at the start of `bytes` (at runtime address `addr`) be probed?
/// Returns it, or the reason it cannot (for `-EINVAL`-style refusals and `-v` messages).
pub fn can_probe(bytes: &[u8], addr: u64) -> Result<Insn, ArchError> {
    let i = decode::decode_one(bytes, addr)?;
    let len = i.len();
    check_class(&i, &bytes[..len])?;
    Ok(Insn {
        addr,
        len: len as u8,
    })
}

fn check_class(i: &Instruction, raw: &[u8]) -> Result<Class, ArchError> {
    match decode::classify(i, raw) {
        Class::Refused(_) if i.code() == Code::Int3 => Err(ArchError::Int3Present),
        Class::Refused(why) => Err(ArchError::CannotRelocate(why)),
        c => Ok(c),
    }
}

/// Prepare the instruction at `orig` (`bytes` holds at least the whole instruction, at
/// most 15 bytes are looked at) to run from the slot at `slot`.
pub fn prepare(bytes: &[u8], orig: u64, slot: u64) -> Result<Prepared, ArchError> {
    let bytes = &bytes[..bytes.len().min(decode::MAX_INSN_LEN)];
    let i = decode::decode_one(bytes, orig)?;
    let raw = &bytes[..i.len()];
    let class = check_class(&i, raw)?;
    let next = i.next_ip();
    let mut p = Prepared {
        orig,
        insn_len: i.len() as u8,
        kind: Kind::Slot,
        slot: [0; SLOT_SIZE],
        slot_len: 0,
        body_len: 0,
        steps: [Step::default(); MAX_STEPS],
        n_steps: 0,
        is_syscall: class == Class::Syscall,
    };
    let emulation = match class {
        Class::RelCall { target } => Some(Emulation::Call { target, ret: next }),
        Class::RelJmp { target } => Some(Emulation::Jmp { target }),
        Class::Jcc { cond, target } => Some(Emulation::Jcc { cond, target, next }),
        Class::Loop {
            kind,
            count,
            target,
        } => Some(Emulation::Loop {
            kind,
            count,
            target,
            next,
        }),
        _ => None,
    };
    if let Some(e) = emulation {
        p.kind = Kind::Emulate(e);
        return Ok(p);
    }
    let r = relocate(&[(i, raw, class)], slot, SLOT_SIZE, next)?;
    if r.steps.len() > MAX_STEPS {
        return Err(ArchError::SlotTooSmall);
    }
    p.slot[..r.bytes.len()].copy_from_slice(&r.bytes);
    p.slot_len = r.bytes.len() as u8;
    p.body_len = r.body_len as u8;
    p.steps[..r.steps.len()].copy_from_slice(&r.steps);
    p.n_steps = r.steps.len() as u8;
    Ok(p)
}

/// After a single step in the slot at `slot`: if the body is finished at its end, move
/// `regs.ip` to the original next instruction; if it left the slot (ret, jmp, call), leave
/// `regs.ip` alone. Hit path: no allocation, no panic.
pub fn after_step(p: &Prepared, slot: u64, regs: &mut PtRegs) -> StepResult {
    if p.kind != Kind::Slot {
        return StepResult::Done;
    }
    let off = regs.ip.wrapping_sub(slot);
    // After `syscall` the kernel returns with TF restored and the CPU traps only after the
    // NEXT instruction, the jump back: so ip is then already the original next address.
    if off == p.body_len as u64 || (p.is_syscall && regs.ip == p.next()) {
        regs.ip = p.next();
        if p.is_syscall {
            // What `syscall` at the original address would have left (rcx = next rip,
            // r11 = rflags, without the TF the single step added).
            regs.cx = p.next();
            regs.r11 &= !crate::regs::flags::TF;
        }
        return StepResult::Done;
    }
    if off < p.body_len as u64 && p.steps().iter().any(|s| s.offset as u64 == off) {
        return StepResult::Continue;
    }
    StepResult::Done
}

/// A fault (SIGSEGV, SIGBUS, …) was raised with `regs.ip` inside the slot at `slot`:
/// undo what the relocated sequence had done so far (rsp) and set `regs.ip` to the
/// original address, so the fault can be delivered as if no probe were there.
/// Returns false (and changes nothing) if `regs.ip` is not an instruction of the body.
/// Hit path: no allocation, no panic.
pub fn fault_fixup(p: &Prepared, slot: u64, regs: &mut PtRegs) -> bool {
    if p.kind != Kind::Slot {
        return false;
    }
    let off = regs.ip.wrapping_sub(slot);
    match p.steps().iter().find(|s| s.offset as u64 == off) {
        Some(s) if off < p.body_len as u64 => {
            regs.sp = regs.sp.wrapping_sub(s.sp_delta as i64 as u64);
            regs.ip = p.orig;
            true
        }
        _ => false,
    }
}

/// A relocated instruction sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relocated {
    /// Code (and, if any, constants at the end of the `capacity` bytes).
    pub bytes: Vec<u8>,
    /// Length of the relocated instructions; the jump back follows.
    pub body_len: usize,
    pub steps: Vec<Step>,
}

/// `a` can reach `b` with a rel32 from anywhere in [a, a + span].
fn reachable(a: u64, span: u64, b: u64) -> bool {
    let near = |x: u64| {
        let d = b.wrapping_sub(x) as i64;
        (i32::MIN as i64 + 16..=i32::MAX as i64 - 16).contains(&d)
    };
    near(a) && near(a.wrapping_add(span))
}

/// Relocate decoded instructions (with their raw bytes and class) to run at `dest`,
/// followed by `jmp back`. `capacity` bytes are available at `dest`; constants go at its
/// end (8 bytes each, the first at `dest + capacity - 8`). Registration time only.
///
/// Relative jmp/jcc are widened to rel32 and re-targeted; a relative call becomes
/// `push $orig_ret; jmp target` (the same as the indirect-call rewrite); loop/jrcxz are
/// refused (rel8 only). [`prepare`] never passes those here: it emulates them.
pub fn relocate(
    insns: &[(Instruction, &[u8], Class)],
    dest: u64,
    capacity: usize,
    back: u64,
) -> Result<Relocated, ArchError> {
    let span = capacity as u64;
    if !reachable(dest, span, back) {
        return Err(ArchError::OutOfRange);
    }
    if let Some(r) = relocate_plain(insns, dest, capacity, back) {
        return Ok(r);
    }
    relocate_encoded(insns, dest, capacity, back)
}

/// The common case without iced-x86's BlockEncoder: instructions that do
/// not depend on their address are copied as they are, then `jmp rel32`
/// back. That is byte for byte what [`relocate_encoded`] emits for them (each
/// becomes a `db` of its raw bytes), at a fraction of the cost: the
/// encoder was a third of the time to arm 10,000 probes, each site being
/// relocated three times (single-step slot, region slot, trampoline).
/// None when the fast path does not apply.
fn relocate_plain(
    insns: &[(Instruction, &[u8], Class)],
    dest: u64,
    capacity: usize,
    back: u64,
) -> Option<Relocated> {
    let plain = |(i, _, c): &(Instruction, &[u8], Class)| {
        !i.is_ip_rel_memory_operand()
            && matches!(
                c,
                Class::Plain | Class::IndirectJmp | Class::Ret | Class::Syscall
            )
    };
    if !insns.iter().all(plain) {
        return None;
    }
    let body_len: usize = insns.iter().map(|(_, raw, _)| raw.len()).sum();
    if body_len + 5 > capacity || body_len > u8::MAX as usize {
        return None;
    }
    let mut bytes = Vec::with_capacity(body_len + 5);
    let mut steps = Vec::with_capacity(insns.len());
    for (_, raw, _) in insns {
        steps.push(Step {
            offset: bytes.len() as u8,
            sp_delta: 0,
        });
        bytes.extend_from_slice(raw);
    }
    let from = dest.wrapping_add(body_len as u64 + 5);
    let rel = i32::try_from(back.wrapping_sub(from) as i64).ok()?;
    bytes.push(0xe9);
    bytes.extend_from_slice(&rel.to_le_bytes());
    Some(Relocated {
        bytes,
        body_len,
        steps,
    })
}

/// [`relocate`] through iced-x86's BlockEncoder (RIP-relative operands,
/// branches, calls).
pub(crate) fn relocate_encoded(
    insns: &[(Instruction, &[u8], Class)],
    dest: u64,
    capacity: usize,
    back: u64,
) -> Result<Relocated, ArchError> {
    let span = capacity as u64;
    if !reachable(dest, span, back) {
        return Err(ArchError::OutOfRange);
    }
    let mut out: Vec<(Instruction, i8)> = Vec::with_capacity(insns.len() + 4);
    let mut consts: Vec<u64> = Vec::new();
    for (i, raw, class) in insns {
        if i.is_ip_rel_memory_operand() {
            let t = i.ip_rel_memory_address();
            // Targets below 4 GiB can still use [eip+d32]; BlockEncoder picks that itself.
            if t > u32::MAX as u64 && !reachable(dest, span, t) {
                return Err(ArchError::OutOfRange);
            }
        }
        if let Some(t) = class.target() {
            if !reachable(dest, span, t) {
                return Err(ArchError::OutOfRange);
            }
        }
        let Some(data_off) = capacity.checked_sub(8 * (consts.len() + 1)) else {
            return Err(ArchError::SlotTooSmall);
        };
        let data_addr = dest.wrapping_add(data_off as u64);
        let used = write_one(i, raw, *class, data_addr, &mut out)?;
        if used {
            consts.push(i.next_ip());
        }
    }
    let body_count = out.len();
    out.push((
        Instruction::with_branch(Code::Jmp_rel32_64, back).map_err(iced)?,
        0,
    ));
    let instrs: Vec<Instruction> = out.iter().map(|(i, _)| *i).collect();
    let opts = BlockEncoderOptions::DONT_FIX_BRANCHES
        | BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS;
    let enc = BlockEncoder::encode(64, InstructionBlock::new(&instrs, dest), opts).map_err(iced)?;
    let code = enc.code_buffer;
    let code_room = capacity.saturating_sub(8 * consts.len());
    if code.len() > code_room {
        return Err(ArchError::SlotTooSmall);
    }
    let offs = &enc.new_instruction_offsets;
    let body_len = offs[body_count] as usize;
    let mut steps = Vec::with_capacity(body_count);
    for (k, (_, delta)) in out[..body_count].iter().enumerate() {
        let off = offs[k];
        if off == u32::MAX || off > u8::MAX as u32 {
            return Err(ArchError::CannotRelocate("iced-x86 rewrote an instruction"));
        }
        steps.push(Step {
            offset: off as u8,
            sp_delta: *delta,
        });
    }
    let mut bytes = code;
    if !consts.is_empty() {
        bytes.resize(capacity, 0);
        for (k, c) in consts.iter().enumerate() {
            let at = capacity - 8 * (k + 1);
            bytes[at..at + 8].copy_from_slice(&c.to_le_bytes());
        }
    }
    Ok(Relocated {
        bytes,
        body_len,
        steps,
    })
}

fn iced(_: iced_x86::IcedError) -> ArchError {
    ArchError::CannotRelocate("iced-x86 cannot re-encode this instruction")
}

fn db(raw: &[u8]) -> Result<Instruction, ArchError> {
    Instruction::with_declare_byte(raw).map_err(iced)
}

/// `push qword ptr [rip + data_addr]`: pushes the 8-byte constant stored in the slot.
fn push_const(data_addr: u64) -> Result<Instruction, ArchError> {
    let m = MemoryOperand::with_base_displ(Register::RIP, data_addr as i64);
    Instruction::with1(Code::Push_rm64, m).map_err(iced)
}

/// Is the memory operand based on the stack pointer?
fn rsp_based(i: &Instruction) -> bool {
    i.op0_kind() == OpKind::Memory && matches!(i.memory_base(), Register::RSP | Register::ESP)
}

/// Add `by` to an rsp-based operand's displacement (rsp moved by -`by` before it is read).
fn adjust_rsp_operand(i: &mut Instruction, by: i64) {
    if rsp_based(i) {
        let d = i.memory_displacement64() as i64 + by;
        i.set_memory_displacement64(d as u64);
        if i.memory_displ_size() == 0 {
            i.set_memory_displ_size(1); // encoder widens to 4 bytes if it does not fit i8
        }
    }
}

/// The `write_one` of the relocator: emit what does `i`'s work at a new address, with
/// each instruction's rsp delta. All RIP-relative fix-ups happen here: an instruction
/// with a RIP-relative operand is handed to the BlockEncoder with its absolute target
/// (iced keeps `[rip+d]` as an absolute address), everything position independent is
/// copied byte for byte. Returns true if the 8-byte constant at `data_addr` (the original
/// return address) is used.
fn write_one(
    i: &Instruction,
    raw: &[u8],
    class: Class,
    data_addr: u64,
    out: &mut Vec<(Instruction, i8)>,
) -> Result<bool, ArchError> {
    match class {
        Class::Plain | Class::RipRelative | Class::IndirectJmp | Class::Ret | Class::Syscall => {
            let ins = if i.is_ip_rel_memory_operand() {
                *i
            } else {
                db(raw)?
            };
            out.push((ins, 0));
            Ok(false)
        }
        Class::RelJmp { .. } | Class::Jcc { .. } => {
            // Relative branch: widened to rel32 here (DONT_FIX_BRANCHES keeps the
            // BlockEncoder from doing it), re-targeted by the BlockEncoder.
            let mut j = *i;
            j.as_near_branch();
            out.push((j, 0));
            Ok(false)
        }
        Class::Loop { .. } => Err(ArchError::CannotRelocate(
            "loop/jrcxz has only a rel8 form and cannot be moved (it is emulated on the trap path)",
        )),
        Class::RelCall { target } => {
            out.push((push_const(data_addr)?, 0));
            out.push((
                Instruction::with_branch(Code::Jmp_rel32_64, target).map_err(iced)?,
                -8,
            ));
            Ok(true)
        }
        Class::IndirectCall => {
            write_indirect_call(i, data_addr, out)?;
            Ok(true)
        }
        Class::Refused(why) => Err(ArchError::CannotRelocate(why)),
    }
}

/// `call r/m64` run elsewhere must push the ORIGINAL return address, read its operand with
/// the original rsp, and leave the flags alone.
///
/// Usual form (2 instructions):
/// ```text
/// push [rip -> const]      ; [S-8] = orig+len
/// jmp  OPERAND'            ; OPERAND' = OPERAND, with disp+8 if rsp-based
/// ```
/// If the operand is rsp-based and may overlap [S-8, S) (an index register, or a
/// displacement in -15..=-1), the push would clobber it before the jmp reads it; then:
/// ```text
/// lea  rsp, [rsp-8]        ; S-8 (lea: flags untouched)
/// push OPERAND'            ; [S-16] = target (address computed before rsp moves)
/// push [rip -> const]      ; [S-24] = orig+len
/// pop  [rsp+8]             ; rsp = S-16, then [S-8] = orig+len
/// ret                      ; ip = target, rsp = S-8
/// ```
fn write_indirect_call(
    i: &Instruction,
    data_addr: u64,
    out: &mut Vec<(Instruction, i8)>,
) -> Result<(), ArchError> {
    let overlap = rsp_based(i) && {
        let d = i.memory_displacement64() as i64;
        i.memory_index() != Register::None || (-15..=-1).contains(&d)
    };
    let mut operand = *i;
    operand.set_has_repne_prefix(false); // `bnd call` -> plain push/jmp
    adjust_rsp_operand(&mut operand, 8);
    if !overlap {
        operand.set_code(Code::Jmp_rm64);
        out.push((push_const(data_addr)?, 0));
        out.push((operand, -8));
        return Ok(());
    }
    operand.set_code(Code::Push_rm64);
    let lea = Instruction::with2(
        Code::Lea_r64_m,
        Register::RSP,
        MemoryOperand::with_base_displ(Register::RSP, -8),
    )
    .map_err(iced)?;
    let pop = Instruction::with1(
        Code::Pop_rm64,
        MemoryOperand::with_base_displ(Register::RSP, 8),
    )
    .map_err(iced)?;
    out.push((lea, 0));
    out.push((operand, -8));
    out.push((push_const(data_addr)?, -16));
    out.push((pop, -24));
    out.push((Instruction::with(Code::Retnq), -16));
    Ok(())
}

#[cfg(test)]
#[path = "xol_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "xol_signal_tests.rs"]
mod signal_tests;
