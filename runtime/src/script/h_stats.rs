//! `@variance` of statistics (helpers of [`super::helper_table::HELPERS`]). A
//! statistics value whose script reads `@variance` keeps the sum of the
//! squares of its values as a 128-bit number (low word, high word) among its
//! histogram buckets; compiled `<<<` adds to it atomically (a carry from
//! the low word goes to the high word). The variance is then exact:
//! `(n * Σx² - (Σx)²) / (n * (n - 1))`, rounded toward zero, where SystemTap
//! keeps a running estimate whose precision its optional bit shift sets.
//! Hit-path safe: no allocation, no locks.

use core::sync::atomic::Ordering;

use super::ctx::{ProbeCtx, ERR_EMPTY_AGG};
use super::globals::{stats, Globals};
use super::h_args::globals_of;
use super::map::Keys;
use super::map_helpers::{map, value_off};

/// The sample variance of `count` values of sum `sum` and sum of squares
/// `sq` (0 below two values). Never panics, whatever the (shared,
/// concurrently updated) counters hold.
pub fn variance(count: i64, sum: i64, sq: u128) -> i64 {
    if count < 2 {
        return 0;
    }
    let n = count as u128;
    let s2 = (sum as i128).unsigned_abs().pow(2);
    let Some(nsq) = n.checked_mul(sq) else {
        // Σx² near 2^128 / n: floating point keeps the magnitude right.
        let (nf, sf) = (count as f64, sum as f64);
        let v = (sq as f64 - sf * sf / nf) / (nf - 1.0);
        return v as i64; // `as` saturates (and maps NaN to 0).
    };
    // n Σx² >= (Σx)² always holds for real values; torn reads may break it.
    let d = nsq.saturating_sub(s2) / (n * (n - 1));
    i64::try_from(d).unwrap_or(i64::MAX)
}

/// The statistics slot at `off` in `g` and its sum of squares at `off + sq`.
fn read(g: &Globals, off: u64, sq: u64) -> i64 {
    let (count, sum, _, _) = g.read_stats(off);
    let lo = g.long(off + sq).load(Ordering::SeqCst) as u64;
    let hi = g.long(off + sq + 8).load(Ordering::SeqCst) as u64;
    variance(count, sum, (hi as u128) << 64 | lo as u128)
}

/// The slot and its two words lie inside the globals area.
fn fits(g: &Globals, off: u64, sq: u64) -> bool {
    off.checked_add(sq)
        .and_then(|e| e.checked_add(16))
        .is_some_and(|e| e <= g.size() as u64 && sq >= stats::MAX + 8)
}

/// `@variance(s)` of the statistics global at `off` (its sum of squares at
/// `off + sq`); an empty one is an error, as for `@avg`.
///
/// # Safety
/// `ctx` is the running handler's live context.
pub(crate) unsafe extern "C" fn stat_variance(ctx: *mut ProbeCtx, off: i64, sq: i64) -> i64 {
    // SAFETY: caller contract.
    let Some(g) = globals_of(unsafe { &*ctx }) else {
        return 0;
    };
    let (off, sq) = (off as u64, sq as u64);
    if !fits(&g, off, sq) {
        return 0;
    }
    if g.long(off + stats::COUNT).load(Ordering::SeqCst) == 0 {
        // SAFETY: the handler's live ctx.
        unsafe { (*ctx).error = ERR_EMPTY_AGG };
        return 0;
    }
    read(&g, off, sq)
}

/// `@variance(a[k])`: the array at `off`, its values' sum of squares at `sq`
/// in the value; an absent or empty element is an error, as for `@avg`.
///
/// # Safety
/// `ctx` is the running handler's live context; `off` an array's offset in
/// its globals area; `keys` the array's keys.
pub(crate) unsafe extern "C" fn map_variance(
    ctx: *mut ProbeCtx,
    off: i64,
    keys: Keys,
    sq: i64,
) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    // SAFETY: helper contract.
    let at = unsafe { m.find(keys) }.map(|i| value_off(&g, &m, i));
    match at {
        Some(v) if fits(&g, v, sq as u64) && g.read_stats(v).0 != 0 => read(&g, v, sq as u64),
        _ => {
            // SAFETY: the handler's live ctx.
            unsafe { (*ctx).error = ERR_EMPTY_AGG };
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::variance;

    fn exact(xs: &[i64]) -> i64 {
        let sq: u128 = xs.iter().map(|&x| (x as i128 * x as i128) as u128).sum();
        variance(xs.len() as i64, xs.iter().sum(), sq)
    }

    #[test]
    fn sample_variance() {
        assert_eq!(exact(&[2, 4, 6]), 4);
        assert_eq!(exact(&[1, 2, 3, 4, 5]), 2); // 2.5
        assert_eq!(exact(&[7]), 0);
        assert_eq!(exact(&[-3, 3]), 18);
        assert_eq!(exact(&[i64::MAX, i64::MIN]), i64::MAX);
        assert_eq!(variance(3, 0, u128::MAX), i64::MAX);
        assert_eq!(variance(-1, i64::MIN, 5), 0);
    }
}
