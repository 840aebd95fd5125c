//! How much stack a handler can need, checked against the stack the runtime
//! gives handlers (`ptap_rt_core::hit::threads::HANDLER_STACK`): a script
//! whose strings and nested calls would overflow it is refused here with
//! the numbers, instead of killing the target when the probe fires.
//!
//! A function's frame is the sum of its sized stack slots (string buffers,
//! arrays' key and format scratch: what grows with MAXSTRINGLEN) plus
//! [`PER_FRAME`] for spills and saved registers. A handler needs its own
//! frame plus the deepest chain of script functions it calls, each function
//! counted with its own callees; a chain that can recurse is bounded by
//! MAXNESTING calls of the largest frame on it.

use std::collections::HashMap;

use ptap_lang::Span;

/// Spills, saved registers and the return address of one compiled frame.
const PER_FRAME: u64 = 256;

/// Kept for the runtime below the handler (its dispatch and `ProbeCtx`,
/// about 2 KiB) and for the helpers a handler calls (formatting, maps,
/// symbolizing: a few KiB each), with room to spare.
pub(crate) const RUNTIME_RESERVE: u64 = 32 << 10;

/// What was compiled: frames and calls of the script functions, in
/// `FuncId` order, and of each handler.
#[derive(Default)]
pub(crate) struct Frames {
    pub functions: Vec<(u64, Vec<usize>)>,
    /// (frame, calls, span of its probe) of every handler.
    pub handlers: Vec<(u64, Vec<usize>, Span)>,
}

/// The stack need of a handler over the limit, and its probe.
pub(crate) struct TooDeep {
    pub need: u64,
    pub span: Span,
}

/// One entry: the first handler whose worst case exceeds `limit` bytes.
pub(crate) fn check(frames: &Frames, maxnesting: u64, limit: u64) -> Result<(), TooDeep> {
    let mut memo = HashMap::new();
    for (frame, calls, span) in &frames.handlers {
        let callees = calls
            .iter()
            .map(|&c| depth(frames, c, maxnesting, &mut memo, &mut Vec::new()))
            .max()
            .unwrap_or(0);
        let need = frame + PER_FRAME + callees;
        if need > limit {
            return Err(TooDeep { need, span: *span });
        }
    }
    Ok(())
}

/// Worst-case bytes below a call of function `f` (its frame and its
/// deepest chain of callees).
fn depth(
    frames: &Frames,
    f: usize,
    maxnesting: u64,
    memo: &mut HashMap<usize, u64>,
    path: &mut Vec<usize>,
) -> u64 {
    if let Some(&d) = memo.get(&f) {
        return d;
    }
    let largest = frames
        .functions
        .iter()
        .map(|(fr, _)| fr + PER_FRAME)
        .max()
        .unwrap_or(0);
    let cap = maxnesting.max(1) * largest;
    if path.contains(&f) {
        // Recursion: as deep as MAXNESTING allows.
        return cap;
    }
    let Some((frame, calls)) = frames.functions.get(f) else {
        return 0;
    };
    path.push(f);
    let below = calls
        .iter()
        .map(|&c| depth(frames, c, maxnesting, memo, path))
        .max()
        .unwrap_or(0);
    path.pop();
    let d = (frame + PER_FRAME + below).min(cap);
    memo.insert(f, d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span::default()
    }

    #[test]
    fn a_chain_adds_up_and_recursion_is_bounded_by_maxnesting() {
        // f0 calls f1 (4 KiB frame); f2 calls itself.
        let functions = vec![(1000, vec![1]), (4096, vec![]), (2000, vec![2])];
        let chain = Frames {
            functions: functions.clone(),
            handlers: vec![(500, vec![0], span())],
        };
        let need = 500 + 1000 + 4096 + 3 * PER_FRAME;
        assert!(check(&chain, 10, need).is_ok());
        assert_eq!(check(&chain, 10, need - 1).err().unwrap().need, need);
        // The recursive one: MAXNESTING frames of the largest function.
        let rec = Frames {
            functions,
            handlers: vec![(100, vec![2], span())],
        };
        let need = 100 + PER_FRAME + 10 * (4096 + PER_FRAME);
        assert_eq!(check(&rec, 10, need - 1).err().unwrap().need, need);
        assert!(check(&rec, 10, need).is_ok());
        assert!(check(&rec, 2, 100 + PER_FRAME + 2 * (4096 + PER_FRAME)).is_ok());
    }
}
