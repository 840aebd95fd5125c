//! Jump optimization ("optprobes"): may the bytes at a probe address be replaced by a
//! 5-byte `jmp` to a per-probe trampoline? The rules are Linux's (kprobes.rst,
//! arch/x86/kernel/kprobes/opt.c `can_optimize`), applied to a whole decoded function:
//!
//! 1. the function was decoded whole, from its start ([`decode_function`]);
//! 2. the replaced region — the instructions covering the jump's bytes — lies inside it;
//! 3. the region holds no call (a callee could return into the middle of the jump) and
//!    only instructions that can run out of line;
//! 4. no branch of the function targets bytes 1..n of the region;
//! 5. the function has no indirect jump (a jump table could target the region).
//!
//! The last Linux rule — no thread is stopped inside the region while it is patched — is
//! the runtime's to check (it sees the threads). Branch targets that a sweep cannot see
//! (C++ landing pads, `setjmp` returns, other functions jumping in) can be passed to
//! [`check_region_with`].
//!
//! [`decode_function`]: crate::decode::decode_function

use core::fmt;

use crate::decode::{self, Class, FnInsn, FunctionInfo};
use crate::xol::{self, Relocated};
use crate::ArchError;

/// Length of the jump written at the probe address (`jmp rel32`).
pub const JMP_LEN: usize = 5;

/// The instructions a jump-optimized probe replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: u64,
    /// Whole instructions: ≥ the jump's length.
    pub len: usize,
    pub insns: Vec<FnInsn>,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.addr.wrapping_add(self.len as u64)
    }
}

/// Why a probe stays on the trap path (shown by `ptap -v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address is not inside the decoded function.
    OutsideFunction { addr: u64 },
    /// The address is not an instruction boundary.
    NotBoundary { addr: u64 },
    /// The instructions covering `need` bytes run past the function's end.
    CrossesFunctionEnd { need: usize, available: u64 },
    /// The function contains an indirect jump.
    IndirectJump { at: u64 },
    /// A call instruction lies in the region.
    CallInRegion { at: u64 },
    /// An instruction of the region cannot run out of line.
    NotRelocatable { at: u64, why: &'static str },
    /// A branch targets the inside of the region.
    BranchIntoRegion { from: u64, to: u64 },
    /// A target given by the caller (landing pad, …) is inside the region.
    ExternalTargetInRegion { to: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::OutsideFunction { addr } => {
                write!(f, "{addr:#x} is outside the function")
            }
            Refusal::NotBoundary { addr } => {
                write!(f, "{addr:#x} is not an instruction boundary")
            }
            Refusal::CrossesFunctionEnd { need, available } => write!(
                f,
                "the {need}-byte jump would cross the function's end ({available} bytes left)"
            ),
            Refusal::IndirectJump { at } => {
                write!(
                    f,
                    "the function has an indirect jump at {at:#x} (jump table?)"
                )
            }
            Refusal::CallInRegion { at } => {
                write!(f, "the replaced instructions include a call at {at:#x}")
            }
            Refusal::NotRelocatable { at, why } => {
                write!(
                    f,
                    "the instruction at {at:#x} cannot run out of line: {why}"
                )
            }
            Refusal::BranchIntoRegion { from, to } => write!(
                f,
                "the branch at {from:#x} targets {to:#x}, inside the replaced instructions"
            ),
            Refusal::ExternalTargetInRegion { to } => {
                write!(
                    f,
                    "{to:#x} is a branch target inside the replaced instructions"
                )
            }
        }
    }
}

/// Check the optprobe rules for replacing `n` bytes at `addr` (n = [`JMP_LEN`] for a
/// jump-optimized probe).
pub fn check_region(func: &FunctionInfo, addr: u64, n: usize) -> Result<Region, Refusal> {
    check_region_with(func, addr, n, &[])
}

/// [`check_region`] with extra branch targets the sweep cannot see (landing pads …).
pub fn check_region_with(
    func: &FunctionInfo,
    addr: u64,
    n: usize,
    extra_targets: &[u64],
) -> Result<Region, Refusal> {
    if !(func.start..func.end).contains(&addr) {
        return Err(Refusal::OutsideFunction { addr });
    }
    let first = func.index_of(addr).ok_or(Refusal::NotBoundary { addr })?;
    let mut len = 0usize;
    let mut last = first;
    while len < n {
        let Some(i) = func.insns.get(last) else {
            return Err(Refusal::CrossesFunctionEnd {
                need: n,
                available: func.end - addr,
            });
        };
        len += i.len as usize;
        last += 1;
    }
    if let Some(&at) = func.indirect_jumps.first() {
        return Err(Refusal::IndirectJump { at });
    }
    let insns = func.insns[first..last].to_vec();
    for i in &insns {
        match i.class {
            c if c.is_call() => return Err(Refusal::CallInRegion { at: i.addr }),
            Class::Refused(why) => return Err(Refusal::NotRelocatable { at: i.addr, why }),
            Class::Loop { .. } => {
                let why = "loop/jrcxz has only a rel8 form";
                return Err(Refusal::NotRelocatable { at: i.addr, why });
            }
            _ => {}
        }
    }
    let inside = |t: u64| t > addr && t - addr < len as u64;
    if let Some(&(from, to)) = func.internal_branches.iter().find(|(_, t)| inside(*t)) {
        return Err(Refusal::BranchIntoRegion { from, to });
    }
    if let Some(&to) = extra_targets.iter().find(|t| inside(**t)) {
        return Err(Refusal::ExternalTargetInRegion { to });
    }
    Ok(Region { addr, len, insns })
}

/// Relocate the region's instructions to run at `dest` (inside a trampoline), followed by
/// `jmp region.end()`. `code` holds the ORIGINAL bytes of the region (at least
/// `region.len`); `capacity` bytes are available at `dest`. Registration time only.
pub fn relocate_region(
    code: &[u8],
    region: &Region,
    dest: u64,
    capacity: usize,
) -> Result<Relocated, ArchError> {
    if code.len() < region.len {
        return Err(ArchError::Truncated);
    }
    let mut list = Vec::with_capacity(region.insns.len());
    let mut off = 0usize;
    for fi in &region.insns {
        let raw = &code[off..off + fi.len as usize];
        let i = decode::decode_one(raw, fi.addr)?;
        if i.len() != fi.len as usize {
            return Err(ArchError::NotBoundary);
        }
        list.push((i, raw, decode::classify(&i, raw)));
        off += fi.len as usize;
    }
    xol::relocate(&list, dest, capacity, region.end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_function;

    const F: u64 = 0x401000;

    fn func(code: &[u8]) -> FunctionInfo {
        decode_function(code, F).unwrap()
    }

    // A function gcc -O2 could emit:
    const GOOD: &[u8] = &[
        0x48, 0x83, 0xec, 0x08, //                  401000 sub $0x8,%rsp
        0x48, 0x8b, 0x05, 0xf5, 0x0f, 0x00, 0x00, // 401004 mov 0xff5(%rip),%rax
        0x85, 0xc0, //                              40100b test %eax,%eax
        0x74, 0x02, //                              40100d je 401011
        0x31, 0xc0, //                              40100f xor %eax,%eax
        0x48, 0x83, 0xc4, 0x08, //                  401011 add $0x8,%rsp
        0xc3, //                                    401015 ret
    ];

    #[test]
    fn entry_region_is_whole_instructions() {
        let r = check_region(&func(GOOD), F, JMP_LEN).unwrap();
        assert_eq!((r.addr, r.len), (F, 11)); // sub (4) + mov rip-rel (7)
        assert_eq!(r.insns.len(), 2);
    }

    #[test]
    fn branch_into_region_refused() {
        // je at 40100d targets 401011; a region starting at 40100f covers 401011? no:
        // 40100f xor (2) + 401011 add (4) = 6 bytes, the target 401011 is byte 2 of it.
        let e = check_region(&func(GOOD), F + 0xf, JMP_LEN).unwrap_err();
        assert_eq!(
            e,
            Refusal::BranchIntoRegion {
                from: F + 0xd,
                to: F + 0x11
            }
        );
        assert_eq!(
            e.to_string(),
            "the branch at 0x40100d targets 0x401011, inside the replaced instructions"
        );
        // starting AT the target is fine: 401011 add (4) + ret (1) = 5
        let r = check_region(&func(GOOD), F + 0x11, JMP_LEN).unwrap();
        assert_eq!(r.len, 5);
    }

    #[test]
    fn end_of_function_and_boundaries() {
        let e = check_region(&func(GOOD), F + 0x15, JMP_LEN).unwrap_err();
        assert_eq!(
            e,
            Refusal::CrossesFunctionEnd {
                need: 5,
                available: 1
            }
        );
        assert_eq!(
            check_region(&func(GOOD), F + 1, JMP_LEN),
            Err(Refusal::NotBoundary { addr: F + 1 })
        );
        assert_eq!(
            check_region(&func(GOOD), F + 0x16, JMP_LEN),
            Err(Refusal::OutsideFunction { addr: F + 0x16 })
        );
    }

    #[test]
    fn calls_and_indirect_jumps_refused() {
        let with_call: &[u8] = &[
            0x55, //                         push %rbp
            0xe8, 0x00, 0x00, 0x00, 0x00, // call .+5
            0x5d, //                         pop %rbp
            0xc3, //                         ret
        ];
        assert_eq!(
            check_region(&func(with_call), F, JMP_LEN),
            Err(Refusal::CallInRegion { at: F + 1 })
        );
        let with_ijmp: &[u8] = &[
            0x48, 0x83, 0xec, 0x08, //       sub $0x8,%rsp
            0x48, 0x89, 0xe5, //             mov %rsp,%rbp
            0xff, 0xe0, //                   jmp *%rax
        ];
        let e = check_region(&func(with_ijmp), F, JMP_LEN).unwrap_err();
        assert_eq!(e, Refusal::IndirectJump { at: F + 7 });
        assert_eq!(
            e.to_string(),
            "the function has an indirect jump at 0x401007 (jump table?)"
        );
    }

    #[test]
    fn unrelocatable_and_external_targets() {
        let with_hlt: &[u8] = &[0x90, 0xf4, 0x90, 0x90, 0x90, 0xc3]; // nop; hlt; nop*3; ret
        assert!(matches!(
            check_region(&func(with_hlt), F, JMP_LEN),
            Err(Refusal::NotRelocatable { at, .. }) if at == F + 1
        ));
        let with_loop: &[u8] = &[0x90, 0xe2, 0xfd, 0x90, 0x90, 0xc3]; // nop; loop F; nop*2; ret
        assert!(matches!(
            check_region(&func(with_loop), F, JMP_LEN),
            Err(Refusal::NotRelocatable { at, .. }) if at == F + 1
        ));
        assert_eq!(
            check_region_with(&func(GOOD), F, JMP_LEN, &[F + 4]),
            Err(Refusal::ExternalTargetInRegion { to: F + 4 })
        );
        assert!(check_region_with(&func(GOOD), F, JMP_LEN, &[F, F + 11]).is_ok());
    }

    #[test]
    fn relocated_region_bytes() {
        let f = func(GOOD);
        let r = check_region(&f, F, JMP_LEN).unwrap();
        let dest = F + 0x10_0000;
        let out = relocate_region(GOOD, &r, dest, 64).unwrap();
        let mut want = vec![0x48, 0x83, 0xec, 0x08]; // sub $0x8,%rsp (copied)
        want.extend([0x48, 0x8b, 0x05]); // mov X(%rip),%rax re-encoded at dest+4
        want.extend((((F + 11 + 0xff5) as i64 - (dest + 11) as i64) as i32).to_le_bytes());
        want.push(0xe9); // jmp F+11
        want.extend((((F + 11) as i64 - (dest + 16) as i64) as i32).to_le_bytes());
        assert_eq!(out.bytes, want);
        assert_eq!(out.body_len, 11);
        assert_eq!(out.steps.len(), 2);
    }
}
