//! A name -> symbol map over the symbol index, for registration-time lookups
//! of many probes (`register_kprobes` on thousands of functions). Same answer
//! as `symbols::lookup` (which scans every symbol of every object per name):
//! unqualified names only, first global symbol in object order wins, a
//! local one only if no global appears (the main executable's local beats
//! later objects). Qualified names (`lib:sym`) go to the dynamic linker's
//! tables first (`symbols::quick_lookup`: no index is built for them), then
//! like ifuncs and misses to `symbols::lookup`. Not used on the hit path.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::proc::symbols::{self, Found, Index};

struct Cache {
    /// Address of the index the map was built from.
    index: usize,
    /// Base name (before `@`) -> (object, symbol) in index order; None until
    /// [`MAP_AFTER`] lookups were made against this index.
    map: Option<HashMap<String, Vec<(u32, u32)>>>,
    /// Lookups made against this index so far.
    lookups: usize,
}

/// Building the map hashes every symbol of every object (milliseconds with a
/// large library), which only pays off over many lookups: a process of a
/// followed tree usually resolves a handful of names, so the first lookups
/// scan the index (`symbols::lookup`, the same answer) and the map is built
/// at the next one.
const MAP_AFTER: usize = 16;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

static FORK_CACHE: crate::base::forklock::MutexSlot<Option<Cache>> =
    crate::base::forklock::MutexSlot::new(&CACHE);

/// [`CACHE`] for the fork handlers (`crate::base::forklock`).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_CACHE
}

fn build(idx: &Index) -> HashMap<String, Vec<(u32, u32)>> {
    let mut map: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    for (oi, o) in idx.objs.iter().enumerate() {
        if o.is_runtime {
            continue;
        }
        for (si, s) in o.syms.iter().enumerate() {
            let base = s.name.split('@').next().unwrap_or(s.name);
            map.entry(base.to_string())
                .or_default()
                .push((oi as u32, si as u32));
        }
    }
    map
}

/// `symbols::lookup`, through the map when it can answer.
pub fn lookup(name: &str) -> Option<Found> {
    if name.contains(':') {
        return symbols::quick_lookup(name).or_else(|| symbols::lookup(name));
    }
    let idx = symbols::get_or_build();
    let hit = {
        let mut g = match CACHE.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let here = idx as *const Index as usize;
        if g.as_ref().is_some_and(|c| c.index != here) {
            *g = None; // built from an older index
        }
        let c = g.get_or_insert_with(|| Cache {
            index: here,
            map: None,
            lookups: 0,
        });
        c.lookups += 1;
        if c.map.is_none() && c.lookups > MAP_AFTER {
            c.map = Some(build(idx));
        }
        c.map
            .as_ref()
            .map(|m| m.get(name).and_then(|cands| pick(idx, cands)))
    };
    match hit {
        Some(Some(Some(f))) => Some(f),
        // An ifunc, or not in this index: the full lookup (resolves ifuncs,
        // rebuilds the index once).
        _ => symbols::lookup(name),
    }
}

/// The symbol `symbols::lookup` would pick among `cands`; Some(None) when it
/// is an ifunc (left to the full lookup).
fn pick(idx: &Index, cands: &[(u32, u32)]) -> Option<Option<Found>> {
    let mut best: Option<(u32, Found)> = None;
    for &(oi, si) in cands {
        if let Some((bo, _)) = best {
            if bo != oi && idx.objs[bo as usize].is_main {
                break;
            }
        }
        let s = &idx.objs[oi as usize].syms[si as usize];
        if s.ifunc {
            return Some(None);
        }
        let f = Found {
            addr: s.addr,
            func: s.addr,
            size: s.size,
        };
        if s.global {
            return Some(Some(f));
        }
        if best.is_none() {
            best = Some((oi, f));
        }
    }
    best.map(|b| Some(b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before and after the map is built, the answer is `symbols::lookup`'s.
    #[test]
    fn same_answer_as_the_scan_before_and_after_the_map() {
        let names = [
            "malloc",
            "free",
            "write",
            "close",
            "memcpy",
            "strlen",
            "no_such_function_anywhere",
            "getpid",
        ];
        let key = |f: Option<Found>| f.map(|f| (f.addr, f.func, f.size));
        for _ in 0..(MAP_AFTER / names.len() + 2) {
            for n in names {
                assert_eq!(key(lookup(n)), key(symbols::lookup(n)), "{n}");
            }
        }
        let g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            g.as_ref().is_some_and(|c| c.map.is_some()),
            "the map is built after {MAP_AFTER} lookups"
        );
    }
}
