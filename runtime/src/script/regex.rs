//! `=~` in handlers: a Thompson-NFA simulation over a program compiled by
//! ptap (compiler/src/codegen/regex.rs) and embedded in the module.
//!
//! Hand-written on purpose: the match runs inside the target on the hit
//! path — no allocation, bounded stack, linear time — and ptap's workspace
//! has no regex engine whose compiled automata can be shipped and run that
//! way. The program is small: at most [`MAX_INSTR`] instructions.
//!
//! Program bytes (little endian u32 words): `n_instr, n_classes`, the
//! instructions, then 32-byte bitmaps (one per class). An instruction is
//! `op << 24 | arg`; `SPLIT` takes the next word as its second target.

pub const OP_CHAR: u32 = 1;
pub const OP_ANY: u32 = 2;
pub const OP_CLASS: u32 = 3;
pub const OP_SPLIT: u32 = 4;
pub const OP_JMP: u32 = 5;
pub const OP_MATCH: u32 = 6;
pub const OP_BOL: u32 = 7;
pub const OP_EOL: u32 = 8;
/// Most instructions (words) in a program.
pub const MAX_INSTR: usize = 512;

struct Prog<'a> {
    words: &'a [u8],
    n: usize,
    classes: &'a [u8],
}

impl Prog<'_> {
    fn word(&self, i: usize) -> u32 {
        let at = 8 + 4 * i;
        match self.words.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => OP_MATCH << 24, // malformed: cannot happen with ptap's compiler
        }
    }

    fn in_class(&self, k: usize, c: u8) -> bool {
        self.classes
            .get(32 * k + (c as usize >> 3))
            .is_some_and(|b| b & (1 << (c & 7)) != 0)
    }
}

/// A set of instruction indices: membership bits + insertion order.
struct List {
    seen: [u64; MAX_INSTR / 64],
    pcs: [u16; MAX_INSTR],
    len: usize,
}

impl List {
    fn new() -> List {
        List {
            seen: [0; MAX_INSTR / 64],
            pcs: [0; MAX_INSTR],
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.seen = [0; MAX_INSTR / 64];
        self.len = 0;
    }
}

/// Add `pc` and everything reachable from it without consuming input at
/// position `pos` of a `len`-byte subject. Returns true if MATCH is reached.
fn add(p: &Prog<'_>, l: &mut List, pc: usize, pos: usize, len: usize) -> bool {
    let mut stack = [0u16; MAX_INSTR];
    let mut sp = 0;
    let push = |stack: &mut [u16; MAX_INSTR], sp: &mut usize, pc: usize| {
        if *sp < stack.len() {
            stack[*sp] = pc as u16;
            *sp += 1;
        }
    };
    push(&mut stack, &mut sp, pc);
    while sp > 0 {
        sp -= 1;
        let pc = stack[sp] as usize;
        if pc >= p.n || l.seen[pc / 64] & (1 << (pc % 64)) != 0 {
            continue;
        }
        l.seen[pc / 64] |= 1 << (pc % 64);
        let w = p.word(pc);
        let (op, arg) = (w >> 24, (w & 0xff_ffff) as usize);
        match op {
            OP_MATCH => return true,
            OP_JMP => push(&mut stack, &mut sp, arg),
            OP_SPLIT => {
                // Second target first on the stack: the first is explored first.
                push(&mut stack, &mut sp, p.word(pc + 1) as usize);
                push(&mut stack, &mut sp, arg);
            }
            OP_BOL if pos == 0 => push(&mut stack, &mut sp, pc + 1),
            OP_EOL if pos == len => push(&mut stack, &mut sp, pc + 1),
            OP_BOL | OP_EOL => {}
            _ => {
                if l.len < MAX_INSTR {
                    l.pcs[l.len] = pc as u16;
                    l.len += 1;
                }
            }
        }
    }
    false
}

/// Does `prog` match anywhere in `s`?
pub fn is_match(prog: &[u8], s: &[u8]) -> bool {
    let word = |at: usize| {
        prog.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (n, nclasses) = (word(0).min(MAX_INSTR), word(4));
    let cls_at = 8 + 4 * n;
    let p = Prog {
        words: prog,
        n,
        classes: prog.get(cls_at..cls_at + 32 * nclasses).unwrap_or(&[]),
    };
    let (mut cur, mut next) = (List::new(), List::new());
    for pos in 0..=s.len() {
        // Unanchored search: a new thread starts at every position.
        if add(&p, &mut cur, 0, pos, s.len()) {
            return true;
        }
        let Some(&c) = s.get(pos) else { break };
        next.clear();
        for k in 0..cur.len {
            let pc = cur.pcs[k] as usize;
            let w = p.word(pc);
            let (op, arg) = (w >> 24, w & 0xff_ffff);
            let ok = match op {
                OP_CHAR => c as u32 == arg,
                OP_ANY => true,
                OP_CLASS => p.in_class(arg as usize, c),
                _ => false,
            };
            if ok && add(&p, &mut next, pc + 1, pos + 1, s.len()) {
                return true;
            }
        }
        core::mem::swap(&mut cur, &mut next);
        next.clear();
    }
    false
}
