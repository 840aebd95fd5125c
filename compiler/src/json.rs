//! `-f json`: one JSON object per line for everything a session prints (the
//! shapes are documented in docs/output.md and kept stable):
//!
//! ```text
//! {"type":"printf","data":"text"}                      printf/print output, as written
//! {"type":"hist","data":[{"min":M,"max":X,"count":C}]}  print(@hist_log(s)) and friends
//! {"type":"error","msg":"ERROR: ..."}                   run-time errors
//! {"type":"warning","msg":"WARNING: ..."}               warnings
//! {"type":"diagnostic","msg":"ptap: ..."}               the runtime's messages
//! {"type":"global","name":N,"value":V}                  globals written, never read (end)
//! {"type":"map","name":N,"data":[{"key":[K..],"value":V}]}
//! {"type":"summary","errors":..,"skipped":..,...}       always last
//! ```
use ptap_compiler::output::{self, Rendered};
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::map::{Kind as MapKind, Map};
use ptap_rt_core::script::meta::{GlobalKind, Meta};
use ptap_rt_core::script::record::{self, FMT_HIST};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// One line: `v` and a newline.
fn line(v: Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// A REC_FORMAT record as a JSON line, its text from `render` (a script's
/// formats; a REPL session's, of all its modules).
pub fn record_with(render: impl FnOnce(&[u8]) -> Rendered, payload: &[u8]) -> String {
    if let Some((FMT_HIST, vals)) = record::decode(payload) {
        if let Some((kind, counts)) = output::decode_hist(&vals) {
            let n = counts.len();
            let buckets: Vec<Value> = counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c != 0)
                .map(|(i, &c)| {
                    let (min, max) = output::bucket_range(kind, i, n);
                    json!({"min": min, "max": max, "count": c})
                })
                .collect();
            return line(json!({"type": "hist", "data": buckets}));
        }
    }
    match render(payload) {
        Rendered::Out(t) => line(json!({"type": "printf", "data": t})),
        Rendered::Raw(b) => line(json!({"type": "printf", "data": String::from_utf8_lossy(&b)})),
        Rendered::Error(t) => line(json!({"type": "error", "msg": t.trim_end()})),
        Rendered::Warning(t) => line(json!({"type": "warning", "msg": t.trim_end()})),
    }
}

/// A warning line of ptap's own (system-wide losses).
pub fn warning(msg: &str) -> String {
    line(json!({"type": "warning", "msg": msg.trim_end()}))
}

/// Text the target wrote directly (C modules' printk) or a runtime diagnostic.
pub fn text(diagnostic: bool, bytes: &[u8]) -> String {
    let t = String::from_utf8_lossy(bytes);
    if diagnostic {
        line(json!({"type": "diagnostic", "msg": t.trim_end()}))
    } else {
        line(json!({"type": "printf", "data": t}))
    }
}

fn stats_json(c: i64, s: i64, mi: i64, ma: i64) -> Value {
    let (mi, ma, avg) = if c == 0 { (0, 0, 0) } else { (mi, ma, s / c) };
    json!({"count": c, "sum": s, "min": mi, "max": ma, "avg": avg})
}

/// The globals written but never read, as JSON lines (the `-f json` form
/// of the end-of-session print).
pub fn unread_globals(meta: &Meta, g: &Globals) -> String {
    let cap = meta.limits.maxstringlen as usize + 1;
    let mut out = String::new();
    if ptap_compiler::codegen::host::aborted(g) {
        return out;
    }
    for gl in meta.globals.iter().filter(|gl| gl.written && !gl.read) {
        let value = match gl.kind {
            GlobalKind::Long => json!(g.long(gl.offset).load(Ordering::SeqCst)),
            GlobalKind::Str => json!(g.read_str(gl.offset, cap)),
            GlobalKind::Stats => {
                let (c, s, mi, ma) = g.read_stats(gl.offset);
                stats_json(c, s, mi, ma)
            }
            GlobalKind::Array => {
                out.push_str(&line(json!({
                    "type": "map", "name": gl.name, "data": map_entries(gl, g)
                })));
                continue;
            }
        };
        out.push_str(&line(
            json!({"type": "global", "name": gl.name, "value": value}),
        ));
    }
    out
}

fn map_entries(gl: &ptap_rt_core::script::meta::MetaGlobal, g: &Globals) -> Vec<Value> {
    let Some(a) = &gl.array else {
        return Vec::new();
    };
    // SAFETY: an array laid out by the compiler at this offset and
    // initialised by init_globals.
    let m = unsafe { Map::at(g, gl.offset) };
    let mut idx = vec![0u32; m.nslots()];
    let n = m.live(&mut idx);
    idx[..n]
        .iter()
        .map(|&i| {
            let i = i as usize;
            let key: Vec<Value> = (0..a.keys.len())
                .map(|k| {
                    if m.is_str_key(k) {
                        json!(ptap_compiler::metrics::key_text(&m, i, k))
                    } else {
                        json!(m.key_long(i, k))
                    }
                })
                .collect();
            let off = m.value_ptr(i) as u64 - g.base() as u64;
            let value = match m.value_kind() {
                MapKind::Long => json!(g.long(off).load(Ordering::SeqCst)),
                MapKind::Str => json!(g.read_str(off, m.cap())),
                MapKind::Stats => {
                    let (c, s, mi, ma) = g.read_stats(off);
                    stats_json(c, s, mi, ma)
                }
            };
            json!({"key": key, "value": value})
        })
        .collect()
}

/// The end-of-session counts (always printed with `-f json`).
pub fn summary(g: &Globals, dropped: u64) -> String {
    let h = g.header();
    let errors = h.errors.load(Ordering::Acquire);
    let nmissed = h.nmissed.load(Ordering::Acquire);
    let reentrancy = h.reentrancy.load(Ordering::Acquire);
    let map_full = h.map_full.load(Ordering::Acquire);
    let unwound = h.unwound.load(Ordering::Acquire);
    line(json!({
        "type": "summary",
        "errors": errors,
        "skipped": nmissed.saturating_add(reentrancy),
        "nmissed": nmissed,
        "reentrancy": reentrancy,
        "map_full": map_full,
        "output_lost": dropped,
        "unwound": unwound,
    }))
}
