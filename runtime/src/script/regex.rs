//! `=~` in handlers: a Thompson-NFA simulation over a program compiled by
//! ptap (compiler/src/codegen/regex.rs) and embedded in the module.
//!
//! Hand-written on purpose: the match runs inside the target on the hit
//! path — no allocation, bounded stack, linear time — and ptap's workspace
//! has no regex engine whose compiled automata can be shipped and run that
//! way. The program is small: at most [`MAX_INSTR`] instructions.
//!
//! Program bytes (little endian u32 words): `n_instr, n_classes, n_groups`,
//! the instructions, then 32-byte bitmaps (one per class). An instruction is
//! `op << 24 | arg`; `SPLIT` takes the next word as its second target;
//! `SAVE k` records the current position in capture slot `k` (slots 0/1 are
//! the whole match, `2n`/`2n+1` the n-th parenthesized subexpression).
//!
//! [`captures`] (for `matched(n)`) is a Pike VM: every thread carries its own
//! fixed array of [`NSLOTS`] positions. To keep its stack use bounded and
//! small it only runs programs of at most [`MAX_CAP_INSTR`] instructions:
//! two thread lists of `MAX_CAP_INSTR` entries (8 + 4 * NSLOTS bytes each)
//! plus a work stack of `3 * MAX_CAP_INSTR + 1` 8-byte entries, about 12 KiB
//! in all. Submatch rules are leftmost, then the first alternative / the
//! greedy repetition first (Perl's), not POSIX leftmost-longest.

pub const OP_CHAR: u32 = 1;
pub const OP_ANY: u32 = 2;
pub const OP_CLASS: u32 = 3;
pub const OP_SPLIT: u32 = 4;
pub const OP_JMP: u32 = 5;
pub const OP_MATCH: u32 = 6;
pub const OP_BOL: u32 = 7;
pub const OP_EOL: u32 = 8;
pub const OP_SAVE: u32 = 9;
/// Most instructions (words) in a program.
pub const MAX_INSTR: usize = 512;
/// Most instructions of a program whose captures [`captures`] tracks.
pub const MAX_CAP_INSTR: usize = 64;
/// Parenthesized subexpressions that capture (later ones only group).
pub const MAX_GROUPS: usize = 9;
/// Capture slots: the whole match and [`MAX_GROUPS`] subexpressions.
pub const NSLOTS: usize = 2 * (MAX_GROUPS + 1);
/// A capture slot that was not set (the group did not take part).
pub const UNSET: u32 = u32::MAX;
/// Bytes of the program header.
const HEADER: usize = 12;

struct Prog<'a> {
    words: &'a [u8],
    n: usize,
    classes: &'a [u8],
}

impl Prog<'_> {
    fn word(&self, i: usize) -> u32 {
        let at = HEADER + 4 * i;
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
            OP_SAVE => push(&mut stack, &mut sp, pc + 1),
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

fn header_word(prog: &[u8], at: usize) -> usize {
    prog.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn parse(prog: &[u8]) -> Prog<'_> {
    let (n, nclasses) = (header_word(prog, 0).min(MAX_INSTR), header_word(prog, 4));
    let cls_at = HEADER + 4 * n;
    Prog {
        words: prog,
        n,
        classes: prog
            .get(cls_at..cls_at.saturating_add(nclasses.saturating_mul(32)))
            .unwrap_or(&[]),
    }
}

/// Capturing parenthesized subexpressions of `prog` (at most [`MAX_GROUPS`]).
pub fn groups(prog: &[u8]) -> usize {
    header_word(prog, 8).min(MAX_GROUPS)
}

/// Can [`captures`] run `prog`?
pub fn can_capture(prog: &[u8]) -> bool {
    header_word(prog, 0) <= MAX_CAP_INSTR
}

/// Does `prog` match anywhere in `s`?
pub fn is_match(prog: &[u8], s: &[u8]) -> bool {
    let p = parse(prog);
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

/// Pike-VM thread list: instruction + that thread's capture slots.
struct CapList {
    seen: u64,
    pcs: [u16; MAX_CAP_INSTR],
    caps: [[u32; NSLOTS]; MAX_CAP_INSTR],
    len: usize,
}

const _: () = assert!(MAX_CAP_INSTR <= 64); // `seen` is one u64

impl CapList {
    fn new() -> CapList {
        CapList {
            seen: 0,
            pcs: [0; MAX_CAP_INSTR],
            caps: [[UNSET; NSLOTS]; MAX_CAP_INSTR],
            len: 0,
        }
    }
}

/// Work item of [`cap_add`]: explore `pc`, or put `val` back in slot `slot`.
#[derive(Clone, Copy)]
struct Work {
    restore: bool,
    slot: u8,
    pc: u16,
    val: u32,
}

/// Add the thread at `pc` (slots `caps`) and everything reachable from it
/// without consuming input at `pos`, in priority order. Every instruction is
/// explored at most once and pushes at most three items, so the stack of
/// `3 * MAX_CAP_INSTR + 1` items never overflows.
fn cap_add(
    p: &Prog<'_>,
    l: &mut CapList,
    pc: usize,
    caps: &mut [u32; NSLOTS],
    pos: usize,
    len: usize,
) {
    const NONE: Work = Work {
        restore: false,
        slot: 0,
        pc: 0,
        val: 0,
    };
    let mut stack = [NONE; 3 * MAX_CAP_INSTR + 1];
    let mut sp = 0;
    let push = |stack: &mut [Work; 3 * MAX_CAP_INSTR + 1], sp: &mut usize, w: Work| {
        if *sp < stack.len() {
            stack[*sp] = w;
            *sp += 1;
        }
    };
    let go = |pc: usize| Work {
        restore: false,
        slot: 0,
        pc: pc as u16,
        val: 0,
    };
    push(&mut stack, &mut sp, go(pc));
    while sp > 0 {
        sp -= 1;
        let w = stack[sp];
        if w.restore {
            caps[w.slot as usize] = w.val;
            continue;
        }
        let pc = w.pc as usize;
        if pc >= p.n || pc >= MAX_CAP_INSTR || l.seen & (1 << pc) != 0 {
            continue;
        }
        l.seen |= 1 << pc;
        let word = p.word(pc);
        let (op, arg) = (word >> 24, (word & 0xff_ffff) as usize);
        match op {
            OP_JMP => push(&mut stack, &mut sp, go(arg)),
            OP_SPLIT => {
                push(&mut stack, &mut sp, go(p.word(pc + 1) as usize));
                push(&mut stack, &mut sp, go(arg));
            }
            OP_SAVE => {
                if arg < NSLOTS {
                    let old = caps[arg];
                    caps[arg] = pos as u32;
                    push(
                        &mut stack,
                        &mut sp,
                        Work {
                            restore: true,
                            slot: arg as u8,
                            pc: 0,
                            val: old,
                        },
                    );
                }
                push(&mut stack, &mut sp, go(pc + 1));
            }
            OP_BOL if pos == 0 => push(&mut stack, &mut sp, go(pc + 1)),
            OP_EOL if pos == len => push(&mut stack, &mut sp, go(pc + 1)),
            OP_BOL | OP_EOL => {}
            _ => {
                if l.len < MAX_CAP_INSTR {
                    l.pcs[l.len] = pc as u16;
                    l.caps[l.len] = *caps;
                    l.len += 1;
                }
            }
        }
    }
}

/// The leftmost match of `prog` in `s` and its capture slots (byte offsets
/// into `s`, [`UNSET`] for groups that did not take part), or None when
/// there is no match or the program is too large ([`can_capture`]) or `s`
/// is longer than 4 GiB.
pub fn captures(prog: &[u8], s: &[u8]) -> Option<[u32; NSLOTS]> {
    if !can_capture(prog) || s.len() >= UNSET as usize {
        return None;
    }
    let p = parse(prog);
    let (mut cur, mut next) = (CapList::new(), CapList::new());
    let mut best: Option<[u32; NSLOTS]> = None;
    for pos in 0..=s.len() {
        if best.is_none() {
            // Unanchored search: a new, lowest-priority thread at every position.
            let mut fresh = [UNSET; NSLOTS];
            cap_add(&p, &mut cur, 0, &mut fresh, pos, s.len());
        }
        if cur.len == 0 {
            break;
        }
        next.seen = 0;
        next.len = 0;
        let c = s.get(pos).copied();
        for k in 0..cur.len {
            let pc = cur.pcs[k] as usize;
            let w = p.word(pc);
            let (op, arg) = (w >> 24, w & 0xff_ffff);
            if op == OP_MATCH {
                // Threads after this one have lower priority: cut them.
                best = Some(cur.caps[k]);
                break;
            }
            let ok = match (op, c) {
                (_, None) => false,
                (OP_CHAR, Some(c)) => c as u32 == arg,
                (OP_ANY, Some(_)) => true,
                (OP_CLASS, Some(c)) => p.in_class(arg as usize, c),
                _ => false,
            };
            if ok {
                let mut caps = cur.caps[k];
                cap_add(&p, &mut next, pc + 1, &mut caps, pos + 1, s.len());
            }
        }
        core::mem::swap(&mut cur, &mut next);
        next.seen = 0;
        next.len = 0;
        if c.is_none() {
            break;
        }
    }
    // A MATCH thread still queued after the last byte.
    if best.is_none() {
        for k in 0..cur.len {
            if p.word(cur.pcs[k] as usize) >> 24 == OP_MATCH {
                best = Some(cur.caps[k]);
                break;
            }
        }
    }
    best
}
