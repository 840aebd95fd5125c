//! Test-only: execute machine code for real, in a private RWX mapping, with every
//! general-purpose register and the flags loaded from a [`PtRegs`] and saved back.
//!
//! Layout of the mapping (one per `Sandbox`, so tests can run in parallel):
//! ```text
//! base+0x000  PtRegs context (in and out)
//! base+0x100  host rsp, entry address
//! base+0x200  enter stub     base+0x400  exit stub
//! base+0x1000 .. base+0x11000   stack (sp starts at STACK_TOP)
//! base+0x20000 ..               code area for the tests
//! ```
//! A "landing" is `call exit` (5 bytes): the exit stub pops its return address, so the
//! saved `ip` is the landing's address and `sp` is what the code left.

use iced_x86::{BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock};
use iced_x86::{MemoryOperand, Register};

use crate::regs::{offset, PtRegs};

pub const SIZE: usize = 1 << 20;
const HOST_RSP: u64 = 0x100;
const ENTRY: u64 = 0x108;
const ENTER: u64 = 0x200;
const EXIT: u64 = 0x400;
pub const STACK_TOP: u64 = 0x11000;
pub const CODE: u64 = 0x20000;

pub struct Sandbox {
    pub base: u64,
}

fn rip(addr: u64) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::RIP, addr as i64)
}

fn encode(instrs: &[Instruction], at: u64) -> Vec<u8> {
    BlockEncoder::encode(
        64,
        InstructionBlock::new(instrs, at),
        BlockEncoderOptions::NONE,
    )
    .unwrap()
    .code_buffer
}

impl Sandbox {
    pub fn new() -> Sandbox {
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let sb = Sandbox { base: p as u64 };
        let ctx = sb.base;
        // enter: save callee-saved registers and rsp, load flags and every register, jump.
        let mut e = vec![];
        for r in [
            Register::RBX,
            Register::RBP,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ] {
            e.push(Instruction::with1(Code::Push_r64, r).unwrap());
        }
        e.push(Instruction::with2(Code::Mov_rm64_r64, rip(ctx + HOST_RSP), Register::RSP).unwrap());
        e.push(Instruction::with1(Code::Push_rm64, rip(ctx + offset::FLAGS as u64)).unwrap());
        e.push(Instruction::with(Code::Popfq));
        e.push(
            Instruction::with2(
                Code::Mov_r64_rm64,
                Register::RSP,
                rip(ctx + offset::SP as u64),
            )
            .unwrap(),
        );
        for (r, off) in crate::regs::GPRS {
            e.push(Instruction::with2(Code::Mov_r64_rm64, r, rip(ctx + off as u64)).unwrap());
        }
        e.push(Instruction::with1(Code::Jmp_rm64, rip(ctx + ENTRY)).unwrap());
        sb.write(ctx + ENTER, &encode(&e, ctx + ENTER));
        // exit: record ip (the landing's return address), registers, rsp, flags; go home.
        let mut x = vec![Instruction::with1(Code::Pop_rm64, rip(ctx + offset::IP as u64)).unwrap()];
        for (r, off) in crate::regs::GPRS {
            x.push(Instruction::with2(Code::Mov_rm64_r64, rip(ctx + off as u64), r).unwrap());
        }
        x.push(
            Instruction::with2(
                Code::Mov_rm64_r64,
                rip(ctx + offset::SP as u64),
                Register::RSP,
            )
            .unwrap(),
        );
        x.push(Instruction::with(Code::Pushfq));
        x.push(Instruction::with1(Code::Pop_rm64, rip(ctx + offset::FLAGS as u64)).unwrap());
        x.push(Instruction::with2(Code::Mov_r64_rm64, Register::RSP, rip(ctx + HOST_RSP)).unwrap());
        x.push(Instruction::with1(Code::Pushq_imm32, 0x202).unwrap());
        x.push(Instruction::with(Code::Popfq));
        for r in [
            Register::R15,
            Register::R14,
            Register::R13,
            Register::R12,
            Register::RBP,
            Register::RBX,
        ] {
            x.push(Instruction::with1(Code::Pop_r64, r).unwrap());
        }
        x.push(Instruction::with(Code::Retnq));
        sb.write(ctx + EXIT, &encode(&x, ctx + EXIT));
        sb
    }

    pub fn at(&self, off: u64) -> u64 {
        self.base + off
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        assert!(addr >= self.base && addr + bytes.len() as u64 <= self.base + SIZE as u64);
        // SAFETY: inside our own mapping (checked above); no code runs there concurrently.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) }
    }

    pub fn write_u64(&self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        assert!(addr >= self.base && addr + 8 <= self.base + SIZE as u64);
        // SAFETY: inside our own mapping (checked above).
        unsafe { core::ptr::read_unaligned(addr as *const u64) }
    }

    /// Put a landing (`call exit`) at `addr`.
    pub fn land(&self, addr: u64) {
        let c = Instruction::with_branch(Code::Call_rel32_64, self.base + EXIT).unwrap();
        self.write(addr, &encode(&[c], addr));
    }

    /// Registers for a run: status flags from `flags`, sp at the top of the stack.
    pub fn regs(&self) -> PtRegs {
        PtRegs {
            flags: 0x202,
            sp: self.at(STACK_TOP),
            ..Default::default()
        }
    }

    /// Run from `entry` with `regs` until a landing; returns the registers there
    /// (`ip` = the landing's address).
    pub fn run(&self, entry: u64, regs: &PtRegs) -> PtRegs {
        let mut r = *regs;
        r.flags = (r.flags & (crate::regs::flags::STATUS | crate::regs::flags::DF)) | 0x202;
        // SAFETY: the context area is ours; PtRegs is plain data.
        unsafe { core::ptr::write_unaligned(self.base as *mut PtRegs, r) };
        self.write_u64(self.base + ENTRY, entry);
        // SAFETY: the enter stub saves/restores every callee-saved register and rsp, and
        // the test code it jumps to ends at a landing (the exit stub), by construction.
        let f: extern "sysv64" fn() = unsafe { core::mem::transmute(self.base + ENTER) };
        f();
        // SAFETY: as above.
        let mut out = unsafe { core::ptr::read_unaligned(self.base as *const PtRegs) };
        out.ip -= 5;
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing refers to it any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, SIZE) };
    }
}
