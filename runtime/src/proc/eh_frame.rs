//! A small DWARF call-frame (.eh_frame) unwinder for `dump_stack`.
//!
//! gcc -O2 omits frame pointers, so a precise backtrace needs the CFI the
//! compiler leaves for C++ exceptions. Hand-written rather than gimli
//! because (1) it must run in a signal handler without allocating or
//! locking (it reads the in-memory `.eh_frame_hdr` search table of each
//! loaded object, bounds-checked against the object's PT_LOAD segments, and
//! the target's stack only through fault-free `process_vm_readv` copies),
//! and (2) the workspace's gimli (0.31) is not in this machine's offline
//! registry. It covers what gcc/clang emit for x86-64 code (CIE/FDE with
//! `zR`/`zPLR` augmentations, the common DW_CFA ops, remember/restore
//! state); anything else (DWARF expressions, 64-bit DWARF) stops the unwind
//! and the caller falls back to a stack scan.

use crate::proc::symbols::{self, Index, Obj};

/// DWARF register numbers 0..=16: rax rdx rcx rbx rsi rdi rbp rsp r8..r15, ra.
pub const NREGS: usize = 17;
const RSP: usize = 7;
const RA: usize = 16;
const MAX_STATES: usize = 8;
const MAX_OPS: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    Undefined,
    Same,
    Offset(i64),
}

#[derive(Clone, Copy)]
struct Row {
    cfa_reg: usize,
    cfa_off: i64,
    rules: [Rule; NREGS],
}

impl Row {
    fn new() -> Row {
        Row {
            cfa_reg: RSP,
            cfa_off: 8,
            rules: [Rule::Same; NREGS],
        }
    }
}

/// Bounds-checked reader over mapped, readable memory [lo, hi).
struct Reader {
    pos: u64,
    lo: u64,
    hi: u64,
}

impl Reader {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.pos < self.lo || self.pos.checked_add(N as u64)? > self.hi {
            return None;
        }
        let mut b = [0u8; N];
        // SAFETY: [pos, pos+N) lies inside a mapped PT_LOAD segment of a loaded object.
        unsafe { core::ptr::copy_nonoverlapping(self.pos as *const u8, b.as_mut_ptr(), N) };
        self.pos += N as u64;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes::<2>().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }
    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }
    /// A DW_EH_PE-encoded pointer (`datarel` relative to `data_base`).
    fn encoded(&mut self, enc: u8, data_base: u64) -> Option<u64> {
        if enc == 0xff {
            return None;
        }
        let start = self.pos;
        let v = match enc & 0x0f {
            0x00 | 0x04 => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(self.u16()?),
            0x03 => u64::from(self.u32()?),
            0x09 => self.sleb()? as u64,
            0x0a => self.u16()? as i16 as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            0x0c => self.u64()?,
            _ => return None,
        };
        let base = match enc & 0x70 {
            0x00 => 0,
            0x10 => start,
            0x30 => data_base,
            _ => return None,
        };
        if enc & 0x80 != 0 {
            return None; // indirect: not used for pc_begin/table entries
        }
        Some(base.wrapping_add(v))
    }
}

fn reader_for(obj: &Obj, addr: u64) -> Option<Reader> {
    let &(lo, hi) = obj.all.iter().find(|&&(s, e)| addr >= s && addr < e)?;
    Some(Reader { pos: addr, lo, hi })
}

/// The FDE covering `pc`, from the object's binary-search table.
fn find_fde(obj: &Obj, pc: u64) -> Option<u64> {
    let hdr = obj.eh_frame_hdr;
    if hdr == 0 {
        return None;
    }
    let mut r = reader_for(obj, hdr)?;
    if r.u8()? != 1 {
        return None;
    }
    let (ptr_enc, cnt_enc, tab_enc) = (r.u8()?, r.u8()?, r.u8()?);
    r.encoded(ptr_enc, hdr)?;
    let count = r.encoded(cnt_enc, hdr)?;
    if tab_enc != 0x3b || count == 0 {
        return None; // datarel|sdata4 is what every linker writes
    }
    let table = r.pos;
    let entry = |i: u64| -> Option<(u64, u64)> {
        let mut e = Reader {
            pos: table + i * 8,
            lo: r.lo,
            hi: r.hi,
        };
        let loc = hdr.wrapping_add(e.u32()? as i32 as i64 as u64);
        let fde = hdr.wrapping_add(e.u32()? as i32 as i64 as u64);
        Some((loc, fde))
    };
    let (mut lo, mut hi) = (0u64, count);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if entry(mid)?.0 <= pc {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (loc, fde) = entry(lo)?;
    (loc <= pc).then_some(fde)
}

struct Cie {
    caf: u64,
    daf: i64,
    ra: usize,
    fde_enc: u8,
    has_z: bool,
    instr: (u64, u64),
}

fn parse_cie(obj: &Obj, cie: u64) -> Option<Cie> {
    let mut r = reader_for(obj, cie)?;
    let len = r.u32()?;
    if len == 0 || len == 0xffff_ffff {
        return None;
    }
    let end = r.pos + u64::from(len);
    if r.u32()? != 0 {
        return None; // not a CIE
    }
    let version = r.u8()?;
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let c = r.u8()?;
        if c == 0 {
            break;
        }
        if n == aug.len() {
            return None;
        }
        aug[n] = c;
        n += 1;
    }
    let caf = r.uleb()?;
    let daf = r.sleb()?;
    let ra = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    } as usize;
    let mut fde_enc = 0u8;
    let has_z = n > 0 && aug[0] == b'z';
    if has_z {
        let alen = r.uleb()?;
        let aend = r.pos + alen;
        for &c in &aug[1..n] {
            match c {
                b'R' => fde_enc = r.u8()?,
                b'P' => {
                    let penc = r.u8()?;
                    r.encoded(penc & 0x7f, 0)?;
                }
                b'L' => {
                    r.u8()?;
                }
                b'S' => {}
                _ => break,
            }
        }
        r.pos = aend;
    } else if n > 0 {
        return None; // unknown augmentation without a length
    }
    Some(Cie {
        caf,
        daf,
        ra: ra.min(NREGS - 1),
        fde_enc,
        has_z,
        instr: (r.pos, end),
    })
}

/// Run CFA instructions in [start, end) until the location passes `pc`.
fn execute(
    obj: &Obj,
    span: (u64, u64),
    cie: &Cie,
    row: &mut Row,
    init: &Row,
    loc: &mut u64,
    pc: u64,
) -> Option<()> {
    let mut r = reader_for(obj, span.0)?;
    r.hi = r.hi.min(span.1);
    let mut stack = [Row::new(); MAX_STATES];
    let mut depth = 0usize;
    let reg = |x: u64| -> Option<usize> { ((x as usize) < NREGS).then_some(x as usize) };
    for _ in 0..MAX_OPS {
        if r.pos >= span.1 {
            return Some(());
        }
        let op = r.u8()?;
        let (hi2, low) = (op & 0xc0, u64::from(op & 0x3f));
        let advance = match hi2 {
            0x40 => Some(low * cie.caf),
            0x80 => {
                let off = r.uleb()? as i64 * cie.daf;
                if let Some(x) = reg(low) {
                    row.rules[x] = Rule::Offset(off);
                }
                None
            }
            0xc0 => {
                if let Some(x) = reg(low) {
                    row.rules[x] = init.rules[x];
                }
                None
            }
            _ => match op {
                0x00 => None,
                0x02 => Some(u64::from(r.u8()?) * cie.caf),
                0x03 => Some(u64::from(r.u16()?) * cie.caf),
                0x04 => Some(u64::from(r.u32()?) * cie.caf),
                0x05 => {
                    let x = r.uleb()?;
                    let off = r.uleb()? as i64 * cie.daf;
                    if let Some(x) = reg(x) {
                        row.rules[x] = Rule::Offset(off);
                    }
                    None
                }
                0x06 => {
                    if let Some(x) = reg(r.uleb()?) {
                        row.rules[x] = init.rules[x];
                    }
                    None
                }
                0x07 => {
                    if let Some(x) = reg(r.uleb()?) {
                        row.rules[x] = Rule::Undefined;
                    }
                    None
                }
                0x08 => {
                    if let Some(x) = reg(r.uleb()?) {
                        row.rules[x] = Rule::Same;
                    }
                    None
                }
                0x0a => {
                    if depth == MAX_STATES {
                        return None;
                    }
                    stack[depth] = *row;
                    depth += 1;
                    None
                }
                0x0b => {
                    if depth == 0 {
                        return None;
                    }
                    depth -= 1;
                    // The whole row, CFA rule included, as libgcc does.
                    *row = stack[depth];
                    None
                }
                0x0c => {
                    row.cfa_reg = reg(r.uleb()?)?;
                    row.cfa_off = r.uleb()? as i64;
                    None
                }
                0x0d => {
                    row.cfa_reg = reg(r.uleb()?)?;
                    None
                }
                0x0e => {
                    row.cfa_off = r.uleb()? as i64;
                    None
                }
                0x11 => {
                    let x = r.uleb()?;
                    let off = r.sleb()? * cie.daf;
                    if let Some(x) = reg(x) {
                        row.rules[x] = Rule::Offset(off);
                    }
                    None
                }
                0x12 => {
                    row.cfa_reg = reg(r.uleb()?)?;
                    row.cfa_off = r.sleb()? * cie.daf;
                    None
                }
                0x13 => {
                    row.cfa_off = r.sleb()? * cie.daf;
                    None
                }
                0x2e => {
                    r.uleb()?; // GNU_args_size
                    None
                }
                0x10 => {
                    // expression rule for a register: its value is unknown to us.
                    let x = r.uleb()?;
                    let n = r.uleb()?;
                    r.pos = r.pos.checked_add(n)?;
                    if let Some(x) = reg(x) {
                        row.rules[x] = Rule::Undefined;
                    }
                    None
                }
                _ => return None, // def_cfa_expression, val_*, set_loc, 64-bit ...
            },
        };
        if let Some(a) = advance {
            *loc = loc.wrapping_add(a);
            if *loc > pc {
                return Some(());
            }
        }
    }
    None
}

/// The code range `[start, end)` of the FDE covering `pc`: the bounds of a
/// function that has no sized symbol (a stripped library's local
/// functions, IFUNC implementations), for the probe layer's boundary and
/// jump-optimization checks. Read with this module's in-memory CFI reader
/// (already in the target for unwinding) rather than a DWARF crate.
pub fn fde_bounds(obj: &Obj, pc: u64) -> Option<(u64, u64)> {
    let fde = find_fde(obj, pc)?;
    let mut r = reader_for(obj, fde)?;
    let len = r.u32()?;
    if len == 0 || len == 0xffff_ffff {
        return None;
    }
    let cie_field = r.pos;
    let cie_off = u64::from(r.u32()?);
    let cie = parse_cie(obj, cie_field.checked_sub(cie_off)?)?;
    let pc_begin = r.encoded(cie.fde_enc, 0)?;
    let pc_range = r.encoded(cie.fde_enc & 0x0f, 0)?;
    let end = pc_begin.checked_add(pc_range)?;
    (pc >= pc_begin && pc < end).then_some((pc_begin, end))
}

/// The unwind row at `pc` (None: no usable CFI).
fn row_at(obj: &Obj, pc: u64) -> Option<(Row, usize)> {
    let fde = find_fde(obj, pc)?;
    let mut r = reader_for(obj, fde)?;
    let len = r.u32()?;
    if len == 0 || len == 0xffff_ffff {
        return None;
    }
    let end = r.pos + u64::from(len);
    let cie_field = r.pos;
    let cie_off = u64::from(r.u32()?);
    let cie = parse_cie(obj, cie_field.checked_sub(cie_off)?)?;
    let pc_begin = r.encoded(cie.fde_enc, 0)?;
    let pc_range = r.encoded(cie.fde_enc & 0x0f, 0)?;
    if pc < pc_begin || pc >= pc_begin.wrapping_add(pc_range) {
        return None;
    }
    if cie.has_z {
        let alen = r.uleb()?;
        r.pos += alen;
    }
    let mut row = Row::new();
    let mut loc = pc_begin;
    let init_dummy = Row::new();
    execute(
        obj,
        cie.instr,
        &cie,
        &mut row,
        &init_dummy,
        &mut 0u64,
        u64::MAX,
    )?;
    let init = row;
    execute(obj, (r.pos, end), &cie, &mut row, &init, &mut loc, pc)?;
    Some((row, cie.ra))
}

fn read_stack(addr: u64) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: v is a valid 8-byte destination; the read cannot fault.
    let r = unsafe { crate::base::peek::read(&mut v as *mut u64 as *mut u8, addr, 8) };
    (r == 0).then_some(v)
}

/// One frame: DWARF registers (index 16 = ip) and which are known.
#[derive(Clone, Copy)]
pub struct Frame {
    pub regs: [u64; NREGS],
    pub known: u32,
    /// Where the return address of this frame was read from (0 for the first).
    pub ra_slot: u64,
}

impl Frame {
    pub fn from_ptregs(r: &crate::abi::PtRegs) -> Frame {
        let regs = [
            r.ax, r.dx, r.cx, r.bx, r.si, r.di, r.bp, r.sp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
            r.r14, r.r15, r.ip,
        ];
        Frame {
            regs,
            known: (1 << NREGS) - 1,
            ra_slot: 0,
        }
    }
    pub fn ip(&self) -> u64 {
        self.regs[RA]
    }
}

/// Why the unwind stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// The return address is undefined: the outermost frame (e.g. _start).
    End,
    /// No usable CFI, or unreadable stack.
    Lost,
}

/// Unwind one frame. `first` is true for the interrupted frame itself
/// (its ip is exact; callers' ips are return addresses, looked up at ip-1).
pub fn step(idx: &Index, f: &Frame, first: bool) -> Result<Frame, Stop> {
    let ip = f.ip();
    let pc = if first { ip } else { ip.wrapping_sub(1) };
    let obj = symbols::executable(idx, pc).ok_or(Stop::Lost)?;
    let (row, ra) = row_at(obj, pc).ok_or(Stop::Lost)?;
    if f.known & (1 << row.cfa_reg) == 0 {
        return Err(Stop::Lost);
    }
    let cfa = f.regs[row.cfa_reg].wrapping_add(row.cfa_off as u64);
    let mut next = *f;
    next.ra_slot = 0;
    for x in 0..NREGS {
        match row.rules[x] {
            Rule::Same => {}
            Rule::Undefined => next.known &= !(1 << x),
            Rule::Offset(o) => {
                let at = cfa.wrapping_add(o as u64);
                match read_stack(at) {
                    Some(v) => {
                        next.regs[x] = v;
                        next.known |= 1 << x;
                        if x == ra {
                            next.ra_slot = at;
                        }
                    }
                    None => return Err(Stop::Lost),
                }
            }
        }
    }
    if ra != RA {
        next.regs[RA] = next.regs[ra];
    }
    if next.known & (1 << ra) == 0 {
        return Err(Stop::End);
    }
    next.regs[RSP] = cfa;
    next.known |= 1 << RSP;
    if next.regs[RA] == 0 {
        return Err(Stop::End);
    }
    // Stacks grow down: a caller's frame is above. Anything else is a loop.
    if cfa <= f.regs[RSP] && !first {
        return Err(Stop::Lost);
    }
    Ok(next)
}
