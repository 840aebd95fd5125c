//! System call sites of a library's text (libc's), found by one linear sweep.
//!
//! For the runtime's syscall probes (runtime/src/syscall/sites.rs): libc is the
//! Syscall User Dispatch exempt range, so its `syscall` instructions are not
//! trapped; the sites that may issue a number that must be seen are moved out of
//! libc instead. This module only reads bytes: it finds every `syscall`
//! instruction, the instruction that last set `eax` before it in the same
//! straight-line run (a backward scan over at most [`MAX_BACK`] instructions), and
//! every direct branch target of the text.
//!
//! A site is **patchable** ([`SysSite::patch`]) when the number is set by
//! `mov eax, imm32` (5 bytes) or `mov rax, simm32` (7 bytes), the instructions
//! between it and the `syscall` are plain (no control flow, no RIP-relative
//! operand: they are copied byte for byte), and no direct branch targets any of
//! them or the `syscall` itself. Replacing only that `mov` — one whole
//! instruction of at least 5 bytes — by a `jmp rel32` is safe against threads
//! stopped anywhere: no thread can be stopped inside one instruction, and a
//! thread stopped after it (at an instruction in between, or blocked in the
//! `syscall`) resumes on bytes that were not changed.
//!
//! Other sites (`xor eax, eax; syscall` of read, numbers in registers such as
//! `syscall()`'s, branch targets in between) are handled by the runtime with an
//! int3 on the `syscall` instruction; [`SysSite::nr`] is their number when the
//! backward scan proved it.
//!
//! Limits (a linear sweep of gcc output): indirect branch targets (jump tables,
//! function pointers) are not known; a jump table whose target is a `syscall`
//! preceded by its `mov` in the same function is not a pattern gcc or glibc's
//! assembly produces.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, OpKind, Register,
};

/// Instructions looked at before a `syscall` for the one that sets `eax`.
pub const MAX_BACK: usize = 8;

/// One `syscall` instruction of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysSite {
    /// Address of the 2-byte `syscall`.
    pub syscall: u64,
    /// The system call number, when the scan proved it.
    pub nr: Option<u32>,
    /// The `mov` that sets the number can be replaced by a jump (see the module docs):
    /// (its address, its length: 5 or 7).
    pub patch: Option<(u64, u8)>,
}

impl SysSite {
    /// Bytes from the `mov` up to (not including) the `syscall`: what a trampoline
    /// runs before its own `syscall` (the `mov` and the plain instructions after it).
    pub fn prefix<'a>(&self, text: &'a [u8], base: u64) -> Option<&'a [u8]> {
        let (at, _) = self.patch?;
        text.get((at - base) as usize..(self.syscall - base) as usize)
    }
}

/// Does `i` write eax (or any part of rax)?
fn writes_rax(info: &mut InstructionInfoFactory, i: &iced_x86::Instruction) -> bool {
    info.info(i).used_registers().iter().any(|u| {
        u.register().full_register() == Register::RAX
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::ReadWrite
                    | OpAccess::CondWrite
                    | OpAccess::ReadCondWrite
            )
    })
}

/// Every `syscall` of `text` (mapped at `base`), classified. Allocates; not for a hit
/// path. Also returns how many instructions the sweep decoded.
pub fn find(text: &[u8], base: u64) -> (Vec<SysSite>, usize) {
    let mut dec = Decoder::with_ip(64, text, base, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut targets: Vec<u64> = Vec::new();
    // The last MAX_BACK instructions of the current straight-line run.
    let mut ring: Vec<iced_x86::Instruction> = Vec::with_capacity(MAX_BACK + 1);
    // (syscall address, candidate writer index info)
    struct Cand {
        syscall: u64,
        /// Start of the eax writer and the instructions after it (addresses), its
        /// kind, and whether everything after it is plain.
        writer: Option<(u64, Code, u32, bool)>,
        /// Addresses of the instructions between the writer and the syscall.
        between: Vec<u64>,
    }
    let mut cands: Vec<Cand> = Vec::new();
    let mut n = 0usize;
    let mut i = iced_x86::Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut i);
        n += 1;
        if i.code() == Code::INVALID {
            ring.clear();
            continue;
        }
        match i.op0_kind() {
            OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16
                if matches!(
                    i.flow_control(),
                    FlowControl::UnconditionalBranch
                        | FlowControl::ConditionalBranch
                        | FlowControl::Call
                ) =>
            {
                targets.push(i.near_branch_target());
            }
            _ => {}
        }
        if i.code() == Code::Syscall {
            let mut writer = None;
            let mut between = Vec::new();
            let mut plain = true;
            for p in ring.iter().rev() {
                if writes_rax(&mut info, p) {
                    let imm = match p.code() {
                        Code::Mov_r32_imm32 if p.op0_register() == Register::EAX => {
                            Some(p.immediate32())
                        }
                        Code::Mov_rm64_imm32
                            if p.op0_kind() == OpKind::Register
                                && p.op0_register() == Register::RAX =>
                        {
                            Some(p.immediate32())
                        }
                        Code::Xor_r32_rm32 | Code::Xor_rm32_r32
                            if p.op0_register() == Register::EAX
                                && p.op1_kind() == OpKind::Register
                                && p.op1_register() == Register::EAX =>
                        {
                            Some(0)
                        }
                        _ => None,
                    };
                    if let Some(nr) = imm {
                        writer = Some((p.ip(), p.code(), nr, plain));
                    }
                    break;
                }
                if p.flow_control() != FlowControl::Next || p.is_ip_rel_memory_operand() {
                    plain = false;
                }
                between.push(p.ip());
            }
            cands.push(Cand {
                syscall: i.ip(),
                writer,
                between,
            });
        }
        if i.flow_control() != FlowControl::Next && i.code() != Code::Syscall {
            // A run ends at control flow: the next instruction may be reached
            // from elsewhere only (a branch target the scan checks below).
            ring.clear();
        } else {
            if ring.len() == MAX_BACK {
                ring.remove(0);
            }
            ring.push(i);
        }
    }
    targets.sort_unstable();
    targets.dedup();
    let is_target = |a: u64| targets.binary_search(&a).is_ok();
    let sites = cands
        .into_iter()
        .map(|c| {
            let (nr, patch) = match c.writer {
                // A branch to the syscall or to an instruction after the writer may
                // come with another number: nothing is proved.
                Some(_) if is_target(c.syscall) || c.between.iter().any(|&a| is_target(a)) => {
                    (None, None)
                }
                Some((at, code, nr, plain)) => {
                    let len = match code {
                        Code::Mov_r32_imm32 => Some(5u8),
                        Code::Mov_rm64_imm32 => Some(7u8),
                        _ => None,
                    };
                    let patch = match len {
                        // The mov is exactly `b8 imm32` or `48 c7 c0 imm32` (no prefix).
                        Some(l) if plain && (c.syscall - at) < 64 => {
                            let off = (at - base) as usize;
                            let ok = match l {
                                5 => text.get(off) == Some(&0xb8),
                                _ => text.get(off..off + 3) == Some(&[0x48, 0xc7, 0xc0][..]),
                            };
                            ok.then_some((at, l))
                        }
                        _ => None,
                    };
                    (Some(nr), patch)
                }
                None => (None, None),
            };
            SysSite {
                syscall: c.syscall,
                nr,
                patch,
            }
        })
        .collect();
    (sites, n)
}

/// A `syscall; ret` in `text` right after a `mov eax, imm32` (a trivial wrapper
/// such as getppid's: `b8 6e 00 00 00 0f 05 c3`), so that it is an instruction
/// boundary: the address of its `syscall`.
///
/// Both searches run in every process of a followed tree as the runtime starts,
/// over the whole of libc's text: `memchr::memmem` (SIMD) instead of a byte-wise
/// window compare.
pub fn find_gadget(text: &[u8], base: u64) -> Option<u64> {
    memchr::memmem::find_iter(text, &[0x0f, 0x05, 0xc3])
        .find(|&p| p >= 5 && text[p - 5] == 0xb8)
        .map(|p| base + p as u64)
}

/// glibc's signal restorer `mov rax, 15; syscall` (`__restore_rt`): its address.
pub fn find_restorer(text: &[u8], base: u64) -> Option<u64> {
    const PAT: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    memchr::memmem::find(text, &PAT).map(|p| base + p as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1000;

    #[test]
    fn adjacent_and_gapped_movs_are_patchable_registers_are_not() {
        let code: Vec<u8> = [
            &[0xb8, 0x6e, 0, 0, 0, 0x0f, 0x05, 0xc3][..], // getppid: mov eax,110; syscall; ret
            &[0xb8, 0xca, 0, 0, 0, 0x31, 0xd2, 0x0f, 0x05, 0xc3], // mov eax,202; xor edx,edx; syscall
            &[0x31, 0xc0, 0x0f, 0x05, 0xc3],                      // xor eax,eax; syscall (read)
            &[0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x0f, 0x05, 0xc3], // mov rax,rdi; mov rdi,rsi; syscall
            &[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05],          // mov rax,15; syscall
        ]
        .concat();
        let (s, _) = find(&code, BASE);
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[0],
            SysSite {
                syscall: BASE + 5,
                nr: Some(110),
                patch: Some((BASE, 5))
            }
        );
        assert_eq!(s[1].nr, Some(202));
        assert_eq!(s[1].patch, Some((BASE + 8, 5)));
        assert_eq!(
            s[1].prefix(&code, BASE).unwrap(),
            &[0xb8, 0xca, 0, 0, 0, 0x31, 0xd2]
        );
        assert_eq!(s[2].nr, Some(0));
        assert_eq!(s[2].patch, None);
        assert_eq!(s[3].nr, None);
        assert_eq!(s[3].patch, None);
        assert_eq!(s[4].nr, Some(15));
        assert_eq!(s[4].patch, Some((BASE + 32, 7)));
        assert_eq!(find_gadget(&code, BASE), Some(BASE + 5));
        assert_eq!(find_restorer(&code, BASE), Some(BASE + 32));
    }

    #[test]
    fn a_branch_to_the_syscall_or_between_proves_nothing() {
        // jmp to the syscall (skipping the mov): the number may be anything.
        let code = [
            0xeb, 0x05, // jmp +5 -> the syscall
            0xb8, 0x27, 0, 0, 0, // mov eax,39
            0x0f, 0x05, 0xc3,
        ];
        let (s, _) = find(&code, BASE);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].nr, None);
        assert_eq!(s[0].patch, None);
        // A branch between the mov and the syscall.
        let code = [
            0xeb, 0x05, // jmp +5 -> xor edx,edx
            0xb8, 0x27, 0, 0, 0, // mov eax,39
            0x31, 0xd2, 0x0f, 0x05, 0xc3,
        ];
        let (s, _) = find(&code, BASE);
        assert_eq!((s[0].nr, s[0].patch), (None, None));
        // A branch to the mov itself is fine (it lands on the jump).
        let code = [0xeb, 0x00, 0xb8, 0x27, 0, 0, 0, 0x0f, 0x05, 0xc3];
        let (s, _) = find(&code, BASE);
        assert_eq!(s[0].patch, Some((BASE + 2, 5)));
    }

    #[test]
    fn rip_relative_or_branches_in_between_are_not_copied() {
        // mov eax,1; mov rdi,[rip+0]; syscall: number known, not patchable.
        let code = [
            0xb8, 0x01, 0, 0, 0, 0x48, 0x8b, 0x3d, 0, 0, 0, 0, 0x0f, 0x05, 0xc3,
        ];
        let (s, _) = find(&code, BASE);
        assert_eq!(s[0].nr, Some(1));
        assert_eq!(s[0].patch, None);
    }

    #[test]
    fn the_host_libc_has_patchable_sites_a_gadget_and_a_restorer() {
        // The libc this test links: find its text through /proc/self/maps.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let Some(line) = maps
            .lines()
            .find(|l| l.contains("r-xp") && l.contains("/libc.so.6"))
        else {
            return; // not glibc: nothing to check
        };
        let range = line.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        // SAFETY: the mapping is readable r-x text of this process.
        let text = unsafe { core::slice::from_raw_parts(a as *const u8, (b - a) as usize) };
        let t = std::time::Instant::now();
        let (s, n) = find(text, a);
        let took = t.elapsed();
        assert!(n > 10_000, "decoded {n} instructions");
        let patchable = s.iter().filter(|x| x.patch.is_some()).count();
        let known = s.iter().filter(|x| x.nr.is_some()).count();
        eprintln!(
            "libc: {n} instructions, {} syscall sites, {patchable} patchable, {known} with a proved number, swept in {took:?}",
            s.len()
        );
        assert!(
            s.len() > 100 && patchable * 2 > s.len(),
            "{patchable} of {}",
            s.len()
        );
        assert!(find_gadget(text, a).is_some());
        assert!(find_restorer(text, a).is_some());
    }
}
