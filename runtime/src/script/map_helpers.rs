//! The array helpers of the helper table ([`super::helper_table::HELPERS`]):
//! compiled handlers call them with `(ctx, off, keys, ...)` where `off` is
//! the array's offset in the globals area and `keys` one i64 per key (a
//! long, or a string pointer). A full array sets ERR_OVERFLOW (capacity in
//! `error_arg`). Hit-path safe: no allocation, no locks.

use core::sync::atomic::Ordering;

use super::ctx::{ProbeCtx, ERRMSG_MAX, ERR_EMPTY_AGG, ERR_OVERFLOW, ERR_USER};
use super::globals::{c_len, copy_str, stats, Globals};
use super::map::{Keys, Kind, Map, MapError};

/// The array at `off`, or None without a globals area.
///
/// # Safety
/// `ctx` is the running handler's live context; `off` an array's offset in
/// its globals area (the module's layout).
pub(super) unsafe fn map(ctx: *mut ProbeCtx, off: i64) -> Option<(Globals, Map)> {
    // SAFETY: caller contract.
    let c = unsafe { &*ctx };
    if c.globals.is_null() {
        return None;
    }
    // SAFETY: the session's globals area; `off` comes from the module's layout.
    let g = unsafe { Globals::from_raw(c.globals) };
    // SAFETY: as above.
    let m = unsafe { Map::at(&g, off as u64) };
    Some((g, m))
}

/// Record a failed insert in the handler's context.
///
/// # Safety
/// `ctx` is the running handler's live context.
unsafe fn full(ctx: *mut ProbeCtx, e: MapError) {
    let n = match e {
        MapError::Full(n) => n,
        MapError::Busy => {
            // SAFETY: the handler's live ctx; a static NUL-terminated message.
            unsafe {
                copy_str(
                    (*ctx).errmsg_ptr(),
                    c"array insert lock held by a running thread for too long".as_ptr()
                        as *const u8,
                    ERRMSG_MAX,
                );
                (*ctx).error = ERR_USER;
            }
            return;
        }
    };
    // SAFETY: the handler's live ctx.
    unsafe {
        (*ctx).error = ERR_OVERFLOW;
        (*ctx).error_arg = n;
    }
    // SAFETY: caller contract; offset 0 is the globals header, only used
    // for its counters.
    if let Some((g, _)) = unsafe { map(ctx, 0) } {
        g.header().map_full.fetch_add(1, Ordering::Relaxed);
    }
}

/// Offset (in the globals area) of entry `i`'s value.
pub(super) fn value_off(g: &Globals, m: &Map, i: usize) -> u64 {
    m.value_ptr(i) as u64 - g.base() as u64
}

/// `a[k]`: a long value (0 when absent); a string value is copied to `dst` ("" when absent).
///
/// # Safety
/// Helper contract (module docs); `dst` valid for `cap` bytes when the value is a string.
pub(crate) unsafe extern "C" fn map_get(
    ctx: *mut ProbeCtx,
    off: i64,
    keys: Keys,
    dst: *mut u8,
    cap: i64,
) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    // SAFETY: helper contract.
    let found = unsafe { m.find(keys) };
    match (m.value_kind(), found) {
        (Kind::Str, Some(i)) => {
            // SAFETY: a string value slot of capacity m.cap(); dst per contract.
            unsafe { g.load_str(value_off(&g, &m, i), (cap as usize).min(m.cap()), dst) };
            0
        }
        (Kind::Str, None) => {
            if cap > 0 {
                // SAFETY: dst valid for cap >= 1 bytes.
                unsafe { *dst = 0 };
            }
            0
        }
        (_, Some(i)) => m.long(i).load(Ordering::Relaxed) as i64,
        (_, None) => 0,
    }
}

/// `a[k] = v`: `v` is a long, or a string pointer for a string array.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_set(ctx: *mut ProbeCtx, off: i64, keys: Keys, v: i64) {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return;
    };
    // SAFETY: helper contract.
    match unsafe { m.find_or_insert(keys) } {
        Ok(i) if m.value_kind() == Kind::Str => {
            // SAFETY: a string value slot; v is a NUL-terminated string.
            unsafe { g.store_str(value_off(&g, &m, i), m.cap(), v as *const u8) }
        }
        Ok(i) => m.long(i).store(v as u64, Ordering::Relaxed),
        // SAFETY: the caller's contract (the live context).
        Err(e) => unsafe { full(ctx, e) },
    }
}

/// `a[k] += d` / `a[k]++`: atomic; returns the new value.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_add(ctx: *mut ProbeCtx, off: i64, keys: Keys, d: i64) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((_, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    // SAFETY: helper contract.
    match unsafe { m.find_or_insert(keys) } {
        Ok(i) => (m.long(i).fetch_add(d as u64, Ordering::Relaxed) as i64).wrapping_add(d),
        Err(e) => {
            // SAFETY: the caller's contract (the live context).
            unsafe { full(ctx, e) };
            0
        }
    }
}

/// `[k] in a`.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_in(ctx: *mut ProbeCtx, off: i64, keys: Keys) -> i64 {
    // SAFETY: helper contract.
    // SAFETY: the caller's contract (the live context, an array's offset).
    unsafe { map(ctx, off) }.map_or(0, |(_, m)| i64::from(unsafe { m.find(keys) }.is_some()))
}

/// `delete a[k]`.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_delete(ctx: *mut ProbeCtx, off: i64, keys: Keys) {
    // SAFETY: the caller's contract (the live context, an array's offset).
    if let Some((_, m)) = unsafe { map(ctx, off) } {
        // SAFETY: helper contract.
        unsafe { m.delete(keys) };
    }
}

/// `delete a`.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_clear(ctx: *mut ProbeCtx, off: i64) {
    // SAFETY: the caller's contract (the live context, an array's offset).
    if let Some((_, m)) = unsafe { map(ctx, off) } {
        m.clear();
    }
}

/// `a[k] <<< v`; returns the value's offset in the globals area (where
/// compiled code adds to the element's histograms), or -1 after an error.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_agg(ctx: *mut ProbeCtx, off: i64, keys: Keys, v: i64) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return -1;
    };
    // SAFETY: helper contract.
    match unsafe { m.find_or_insert(keys) } {
        Ok(i) => {
            let o = value_off(&g, &m, i);
            g.long(o + stats::COUNT).fetch_add(1, Ordering::Relaxed);
            g.long(o + stats::SUM).fetch_add(v, Ordering::Relaxed);
            g.long(o + stats::MIN).fetch_min(v, Ordering::Relaxed);
            g.long(o + stats::MAX).fetch_max(v, Ordering::Relaxed);
            o as i64
        }
        Err(e) => {
            // SAFETY: the caller's contract (the live context).
            unsafe { full(ctx, e) };
            -1
        }
    }
}

/// `print(@hist_...(a[k]))`: the histogram at `hoff` inside the element's
/// value (an empty one when the element is absent).
///
/// # Safety
/// Helper contract.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe extern "C" fn map_hist_print(
    ctx: *mut ProbeCtx,
    off: i64,
    keys: Keys,
    hoff: i64,
    kind: i64,
    lo: i64,
    step: i64,
    n: i64,
) {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return;
    };
    // SAFETY: helper contract.
    let (at, n) = match unsafe { m.find(keys) } {
        Some(i) => (value_off(&g, &m, i) as i64 + hoff, n),
        None => (0, 0),
    };
    // SAFETY: the element's buckets lie inside the globals area.
    unsafe { super::h_out::hist_print(ctx, at, kind, lo, step, n) };
}

/// `@count(a[k])` (op 0), `@sum` (1), `@min` (2), `@max` (3), `@avg` (4).
/// Anything but @count/@sum of an absent or empty entry is ERR_EMPTY_AGG.
///
/// # Safety
/// Helper contract.
pub(crate) unsafe extern "C" fn map_stat(ctx: *mut ProbeCtx, off: i64, keys: Keys, op: i64) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    // SAFETY: helper contract.
    let (count, sum, min, max) = match unsafe { m.find(keys) } {
        Some(i) => g.read_stats(value_off(&g, &m, i)),
        None => (0, 0, 0, 0),
    };
    if count == 0 && op >= 2 {
        // SAFETY: the handler's live ctx.
        unsafe { (*ctx).error = ERR_EMPTY_AGG };
        return 0;
    }
    stat_value(op, count, sum, min, max)
}

/// The statistic `op` of an entry: never panics, whatever the op or the
/// (shared, concurrently updated) counters hold.
fn stat_value(op: i64, count: i64, sum: i64, min: i64, max: i64) -> i64 {
    match op {
        0 => count,
        1 => sum,
        2 => min,
        3 => max,
        // A zero or corrupt count never divides by zero or overflows (i64::MIN / -1).
        4 => sum.checked_div(count).unwrap_or(0),
        _ => 0,
    }
}

/// Entry `i` compared with entry `j`: by value (`by` < 0) or by key `by`
/// (reversed when `desc`), then by every key in ascending order, so equal
/// values come out in a deterministic order.
/// The aggregate a statistics array is sorted by (`foreach (k in a @sum-)`):
/// `agg` is 0 or 1 @count, 2 @sum, 3 @min, 4 @max, 5 @avg.
fn stat_key(g: &Globals, off: u64, agg: i64) -> i64 {
    let (count, sum, min, max) = g.read_stats(off);
    match agg {
        2 => sum,
        3 => min,
        4 => max,
        5 => sum.checked_div(count).unwrap_or(0),
        _ => count,
    }
}

fn compare(
    g: &Globals,
    m: &Map,
    by: i64,
    agg: i64,
    desc: bool,
    i: usize,
    j: usize,
) -> core::cmp::Ordering {
    let cap = m.cap();
    let key = |e: usize, k: usize| -> (i64, &[u8]) {
        if m.is_str_key(k) {
            let p = m.key_str(e, k);
            // SAFETY: a NUL-terminated key inside the entry.
            (0, unsafe { core::slice::from_raw_parts(p, c_len(p, cap)) })
        } else {
            (m.key_long(e, k), &[])
        }
    };
    let primary = if by < 0 {
        let (oi, oj) = (value_off(g, m, i), value_off(g, m, j));
        match m.value_kind() {
            Kind::Long => g
                .long(oi)
                .load(Ordering::Relaxed)
                .cmp(&g.long(oj).load(Ordering::Relaxed)),
            Kind::Stats => stat_key(g, oi, agg).cmp(&stat_key(g, oj, agg)),
            Kind::Str => {
                // SAFETY: string values are NUL-terminated after their sequence word.
                let (a, b) = unsafe {
                    let (pa, pb) = (g.base().add(oi as usize + 8), g.base().add(oj as usize + 8));
                    (
                        core::slice::from_raw_parts(pa, c_len(pa, cap)),
                        core::slice::from_raw_parts(pb, c_len(pb, cap)),
                    )
                };
                a.cmp(b)
            }
        }
    } else {
        key(i, by as usize).cmp(&key(j, by as usize))
    };
    let primary = if desc { primary.reverse() } else { primary };
    (0..m.key_count()).fold(primary, |o, k| o.then_with(|| key(i, k).cmp(&key(j, k))))
}

/// foreach: the live entries' indices into `buf` (room for `n` u32),
/// sorted when `sort` says so, at most `limit` (< 0: all). Returns how many.
/// `sort`: 0 none; 1 the value; 2 + k key k; +256 descending; bits 9..11
/// the aggregate of a statistics value (see [`stat_key`]).
///
/// # Safety
/// Helper contract; `buf` valid for `n` u32.
pub(crate) unsafe extern "C" fn map_sorted(
    ctx: *mut ProbeCtx,
    off: i64,
    buf: *mut u32,
    n: i64,
    sort: i64,
    limit: i64,
) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    // SAFETY: helper contract.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, usize::try_from(n).unwrap_or(0)) };
    let mut len = m.live(out);
    let by = sort & 0xff;
    if by != 0 {
        let desc = sort & 256 != 0;
        let key = if by == 1 { -1 } else { by - 2 };
        let agg = (sort >> 9) & 7;
        let cmp = |a: u32, b: u32| compare(&g, &m, key, agg, desc, a as usize, b as usize);
        // Insertion sort: in place, no allocation, stable; arrays are small
        // (MAXMAPENTRIES, 2048 by default).
        for i in 1..len {
            let mut j = i;
            while j > 0 && cmp(out[j - 1], out[j]) == core::cmp::Ordering::Greater {
                out.swap(j - 1, j);
                j -= 1;
            }
        }
    }
    if limit >= 0 {
        len = len.min(limit as usize);
    }
    len as i64
}

/// Key `k` of entry `i`: a long is returned; a string is copied to `dst`.
///
/// # Safety
/// Helper contract; `dst` valid for `cap` bytes for a string key.
pub(crate) unsafe extern "C" fn map_key(
    ctx: *mut ProbeCtx,
    off: i64,
    i: i64,
    k: i64,
    dst: *mut u8,
    cap: i64,
) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((_, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    let (i, k) = (i as usize, k as usize);
    if m.is_str_key(k) {
        // SAFETY: dst per contract; the key is NUL-terminated.
        unsafe { super::globals::copy_str(dst, m.key_str(i, k), (cap as usize).min(m.cap())) };
        0
    } else {
        m.key_long(i, k)
    }
}

/// The value of entry `i`: a long is returned; a string is copied to `dst`.
///
/// # Safety
/// Helper contract; `dst` valid for `cap` bytes for a string value.
pub(crate) unsafe extern "C" fn map_value(
    ctx: *mut ProbeCtx,
    off: i64,
    i: i64,
    dst: *mut u8,
    cap: i64,
) -> i64 {
    // SAFETY: the caller's contract (the live context, an array's offset).
    let Some((g, m)) = (unsafe { map(ctx, off) }) else {
        return 0;
    };
    let i = i as usize;
    match m.value_kind() {
        Kind::Str => {
            // SAFETY: a string value slot; dst per contract.
            unsafe { g.load_str(value_off(&g, &m, i), (cap as usize).min(m.cap()), dst) };
            0
        }
        _ => m.long(i).load(Ordering::Relaxed) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::stat_value;

    #[test]
    fn stat_value_never_panics() {
        assert_eq!(stat_value(4, 4, 10, 0, 0), 2);
        assert_eq!(stat_value(4, 0, 10, 0, 0), 0);
        assert_eq!(stat_value(-1, 0, 10, 0, 0), 0);
        assert_eq!(stat_value(4, -1, i64::MIN, 0, 0), 0);
        assert_eq!(stat_value(i64::MAX, 3, 1, 2, 3), 0);
    }
}
