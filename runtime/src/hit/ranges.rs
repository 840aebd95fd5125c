//! Code ranges of trampolines and region slots: which probe a fault inside
//! relocated instructions belongs to, and `in_trampoline`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A trampoline or region slot, for fault mapping and `in_trampoline`.
/// `insns`: (offset of a relocated instruction, its original address,
/// rsp delta the relocation introduced before it).
const RANGE_CAP: usize = 1 << 15;

const MAX_INSNS: usize = 8;

struct Range {
    start: AtomicU64,
    len: AtomicU64,
    /// Offset in the range where the relocated instructions start (0 = none).
    body: AtomicU64,
    n: AtomicUsize,
    /// The probe address whose code this is.
    site: AtomicU64,
    insns: [(AtomicU64, AtomicU64, AtomicU64); MAX_INSNS],
}

static RANGES: [Range; RANGE_CAP] = [const {
    Range {
        start: AtomicU64::new(0),
        len: AtomicU64::new(0),
        body: AtomicU64::new(0),
        n: AtomicUsize::new(0),
        site: AtomicU64::new(0),
        insns: [const { (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)) }; MAX_INSNS],
    }
}; RANGE_CAP];

static N_RANGES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn add_range(start: u64, len: u64, body: u64, insns: &[(u64, u64, i64)], site: u64) {
    let i = N_RANGES.load(Ordering::Relaxed);
    if i >= RANGE_CAP {
        return;
    }
    let r = &RANGES[i];
    r.len.store(len, Ordering::Relaxed);
    r.body.store(body, Ordering::Relaxed);
    r.site.store(site, Ordering::Relaxed);
    for (k, &(off, orig, d)) in insns.iter().take(MAX_INSNS).enumerate() {
        r.insns[k].0.store(off, Ordering::Relaxed);
        r.insns[k].1.store(orig, Ordering::Relaxed);
        r.insns[k].2.store(d as u64, Ordering::Relaxed);
    }
    r.n.store(insns.len().min(MAX_INSNS), Ordering::Relaxed);
    r.start.store(start, Ordering::Release);
    N_RANGES.store(i + 1, Ordering::Release);
}

fn find_range(ip: u64) -> Option<&'static Range> {
    let n = N_RANGES.load(Ordering::Acquire).min(RANGE_CAP);
    RANGES[..n].iter().find(|r| {
        let s = r.start.load(Ordering::Acquire);
        s != 0 && ip >= s && ip < s + r.len.load(Ordering::Relaxed)
    })
}

/// Is `ip` inside one of our trampolines or region slots?
pub fn in_trampoline(ip: u64) -> bool {
    find_range(ip).is_some()
}

/// A fault at `ip` inside the relocated instructions of a trampoline or a
/// region slot: (original address of the faulting instruction, rsp delta,
/// probe address).
pub fn fault_owner(ip: u64) -> Option<(u64, i64, u64)> {
    let r = find_range(ip)?;
    let off = ip - r.start.load(Ordering::Acquire);
    let n = r.n.load(Ordering::Relaxed);
    r.insns[..n].iter().find_map(|(o, a, d)| {
        (o.load(Ordering::Relaxed) == off).then(|| {
            (
                a.load(Ordering::Relaxed),
                d.load(Ordering::Relaxed) as i64,
                r.site.load(Ordering::Relaxed),
            )
        })
    })
}
