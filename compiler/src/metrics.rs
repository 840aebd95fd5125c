//! A session's globals as Prometheus metrics (`ptap --serve ADDR`).
//!
//! [`Plan::new`] decides, once, what each global becomes: a long scalar is a
//! gauge, or a counter when the script only ever adds to it (`x++`,
//! `x += v`, never `delete`d); a string scalar an info metric; statistics a
//! histogram (the buckets of the script's `@hist_log`/`@hist_linear` of it,
//! else only `+Inf`, which gives `_count` and `_sum`); an array one series
//! per key, the keys as labels `key1`, `key2`, ... . [`Snapshot::take`] reads
//! the shared globals area without taking any lock the hit path takes (the
//! same reads `end` uses), and [`Snapshot::encode`] writes Prometheus's text
//! format with the prometheus-client crate.
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ptap_lang::checked::{CheckedScript, DeleteTarget, ExprKind, HistKind, LValue, Stmt, StmtKind};
use ptap_lang::walk::{walk_expr, walk_stmt};
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::map::{Kind as MapKind, Map};
use ptap_rt_core::script::meta::{GlobalKind, Meta};

use crate::codegen::hist;

/// How one global is exposed.
#[derive(Debug, Clone, PartialEq)]
pub enum Exposed {
    Gauge,
    Counter,
    Info,
    /// Statistics, with the buckets' upper bounds of the script's first
    /// histogram of it (and where its buckets start in the statistics slot).
    Histogram(Option<(HistKind, u64)>),
}

/// One global's metric.
#[derive(Debug, Clone)]
pub struct MetricPlan {
    /// The global's index in the module's metadata.
    pub global: usize,
    /// The sanitized metric name, `ptap_` + the global's name.
    pub name: String,
    pub help: String,
    pub exposed: Exposed,
}

/// What every global of a script becomes, and the labels every series carries.
#[derive(Debug, Clone)]
pub struct Plan {
    pub metrics: Vec<MetricPlan>,
    /// `script`, `host`, `target`: on the `ptap_session_info` metric.
    pub script: String,
}

/// `ptap_` + `name` with every character outside `[a-zA-Z0-9_]` as `_`.
pub fn metric_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("ptap_{clean}")
}

/// Globals the script changes in a way a counter may not: assigned with
/// anything but `+=`, decremented, or deleted.
fn not_monotonic(script: &CheckedScript) -> Vec<bool> {
    let mut bad = vec![false; script.globals.len()];
    let global_of = |t: &LValue| match t {
        LValue::Global(g) | LValue::Element { global: g, .. } => Some(*g),
        _ => None,
    };
    let mut visit_expr = |e: &ptap_lang::checked::Expr| match &e.kind {
        ExprKind::Assign { target, op, .. } => {
            if let Some(g) = global_of(target) {
                if op.0 != Some(ptap_lang::ast::BinOp::Add) {
                    bad[g] = true;
                }
            }
        }
        ExprKind::IncDec { target, op, .. } => {
            if let Some(g) = global_of(target) {
                if *op == ptap_lang::ast::IncDec::Dec {
                    bad[g] = true;
                }
            }
        }
        _ => {}
    };
    let mut deleted = Vec::new();
    let bodies = script
        .functions
        .iter()
        .map(|f| &f.body)
        .chain(script.probes.iter().map(|p| &p.body));
    for body in bodies {
        for s in body {
            walk_stmt(s, &mut visit_expr);
            deletes(s, &mut deleted);
        }
    }
    for p in &script.probes {
        p.entry_exprs
            .iter()
            .for_each(|e| walk_expr(e, &mut visit_expr));
    }
    for g in deleted {
        bad[g] = true;
    }
    bad
}

/// The globals `delete` statements under `s` name.
fn deletes(s: &Stmt, out: &mut Vec<usize>) {
    match &s.kind {
        StmtKind::Delete(DeleteTarget::Global(g) | DeleteTarget::Element { global: g, .. }) => {
            out.push(*g)
        }
        StmtKind::Block(b) => b.iter().for_each(|s| deletes(s, out)),
        StmtKind::If { then, els, .. } => {
            deletes(then, out);
            if let Some(e) = els {
                deletes(e, out);
            }
        }
        StmtKind::While { body, .. } | StmtKind::For { body, .. } => deletes(body, out),
        StmtKind::Foreach(f) => deletes(&f.body, out),
        StmtKind::Try { body, catch, .. } => {
            body.iter().chain(catch).for_each(|s| deletes(s, out));
        }
        _ => {}
    }
}

impl Plan {
    /// The plan for `script`, whose module's metadata is `meta`.
    pub fn new(script: &CheckedScript, meta: &Meta, script_name: &str) -> Plan {
        let bad = not_monotonic(script);
        let hists = hist::collect(script).unwrap_or_default();
        let mut metrics = Vec::new();
        for (i, gl) in meta.globals.iter().enumerate() {
            // Globals the compiler adds for the standard library start with `__`.
            if gl.name.starts_with("__") {
                continue;
            }
            let value_kind = match (&gl.kind, &gl.array) {
                (GlobalKind::Array, Some(a)) => match a.value {
                    MapKind::Long => GlobalKind::Long,
                    MapKind::Str => GlobalKind::Str,
                    MapKind::Stats => GlobalKind::Stats,
                },
                (k, _) => *k,
            };
            // The script's global of that name (a REPL session's metadata
            // lists its globals in the order they came, not the script's).
            let si = script.globals.iter().position(|s| s.name == gl.name);
            let exposed = match value_kind {
                GlobalKind::Long if si.and_then(|s| bad.get(s)) == Some(&false) => Exposed::Counter,
                GlobalKind::Long | GlobalKind::Array => Exposed::Gauge,
                GlobalKind::Str => Exposed::Info,
                GlobalKind::Stats => Exposed::Histogram(si.and_then(|s| {
                    let h = hists.get(s)?.iter();
                    h.filter(|(k, _)| *k != HistKind::SumSquares)
                        .copied()
                        .next()
                })),
            };
            let help = match &exposed {
                Exposed::Counter => format!("ptap global `{}` (only ever added to)", gl.name),
                Exposed::Gauge => format!("ptap global `{}`", gl.name),
                Exposed::Info => format!("ptap string global `{}` (as the label `value`)", gl.name),
                Exposed::Histogram(_) => format!("ptap statistics `{}` (<<<)", gl.name),
            };
            metrics.push(MetricPlan {
                global: i,
                name: metric_name(&gl.name),
                help,
                exposed,
            });
        }
        Plan {
            metrics,
            script: script_name.to_string(),
        }
    }
}

/// One series: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Long(i64),
    Str(String),
    /// count, sum, and (upper bound, cumulative count) buckets.
    Hist(u64, f64, Vec<(f64, u64)>),
}

/// A series' labels and value.
type Series = (Vec<(String, String)>, Value);

/// A point-in-time copy of every metric's series.
#[derive(Debug, Clone)]
pub struct Snapshot {
    families: Vec<(MetricPlan, Vec<Series>)>,
    info: Vec<(String, String)>,
    map_full: u64,
}

/// Upper bounds of the buckets of `kind` and the cumulative counts from the
/// raw per-bucket `counts` (SystemTap's layout: see codegen/hist.rs). A log
/// histogram is exposed with the fixed bounds 0, 1, 3, 7, ..., 2^40 - 1 (so
/// every scrape has the same buckets): negative values count in `le="0"`,
/// larger ones only in `+Inf`.
fn cumulative(kind: HistKind, counts: &[i64]) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        total = total.saturating_add(c.max(0) as u64);
        let upper = match kind {
            // Bucket 64 holds 0 (and, cumulatively, the negatives below it),
            // 64 + n the values of n significant bits (up to 2^n - 1).
            HistKind::Log => {
                let n = i as i64 - 64;
                if !(0..=LOG_MAX_BITS).contains(&n) {
                    continue;
                }
                (2f64).powi(n as i32) - 1.0
            }
            // Underflow, one bucket per step from lo (up to hi), overflow.
            HistKind::SumSquares => continue,
            HistKind::Linear { lo, step, .. } => {
                if i + 1 == counts.len() {
                    f64::INFINITY
                } else {
                    (lo + step * i as i64) as f64 - 1.0
                }
            }
        };
        if upper.is_finite() {
            out.push((upper, total));
        }
    }
    out
}

/// The largest log bucket exposed: values of up to 40 significant bits.
const LOG_MAX_BITS: i64 = 40;

fn stats_value(g: &Globals, off: u64, h: Option<(HistKind, u64)>) -> Value {
    let (count, sum, _, _) = g.read_stats(off);
    let buckets = match h {
        Some((kind, at)) => {
            let n = hist::buckets(kind) as usize;
            let counts: Vec<i64> = (0..n)
                .map(|b| g.long(off + at + 8 * b as u64).load(Ordering::Relaxed))
                .collect();
            cumulative(kind, &counts)
        }
        None => Vec::new(),
    };
    Value::Hist(count.max(0) as u64, sum as f64, buckets)
}

impl Snapshot {
    /// Read every planned global of `g` (laid out by `meta`). `target` is
    /// the target's description for `ptap_session_info`.
    pub fn take(plan: &Plan, meta: &Meta, g: &Globals, host: &str, target: &str) -> Snapshot {
        let cap = meta.limits.maxstringlen as usize + 1;
        let mut families = Vec::new();
        for m in &plan.metrics {
            let Some(gl) = meta.globals.get(m.global) else {
                continue;
            };
            let hist = match m.exposed {
                Exposed::Histogram(h) => h,
                _ => None,
            };
            let mut series = Vec::new();
            match (&gl.kind, &gl.array) {
                (GlobalKind::Array, Some(a)) => {
                    // SAFETY: an array laid out by the compiler at this offset
                    // and initialised by init_globals.
                    let map = unsafe { Map::at(g, gl.offset) };
                    let mut idx = vec![0u32; map.nslots()];
                    let n = map.live(&mut idx);
                    for &i in &idx[..n] {
                        let i = i as usize;
                        let labels = (0..a.keys.len())
                            .map(|k| (format!("key{}", k + 1), key_text(&map, i, k)))
                            .collect();
                        let off = map.value_ptr(i) as u64 - g.base() as u64;
                        let v = match map.value_kind() {
                            MapKind::Long => Value::Long(g.long(off).load(Ordering::SeqCst)),
                            MapKind::Str => Value::Str(g.read_str(off, map.cap())),
                            MapKind::Stats => stats_value(g, off, hist),
                        };
                        series.push((labels, v));
                    }
                }
                (GlobalKind::Long, _) => series.push((
                    Vec::new(),
                    Value::Long(g.long(gl.offset).load(Ordering::SeqCst)),
                )),
                (GlobalKind::Str, _) => {
                    series.push((Vec::new(), Value::Str(g.read_str(gl.offset, cap))))
                }
                (GlobalKind::Stats, _) => {
                    series.push((Vec::new(), stats_value(g, gl.offset, hist)))
                }
                (GlobalKind::Array, None) => {}
            }
            families.push((m.clone(), series));
        }
        Snapshot {
            families,
            info: vec![
                ("host".into(), host.into()),
                ("script".into(), plan.script.clone()),
                ("target".into(), target.into()),
            ],
            map_full: g.header().map_full.load(Ordering::Acquire),
        }
    }

    /// The Prometheus text exposition format (0.0.4, what every Prometheus
    /// and promtool read) of this snapshot.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Key `k` of entry `i` as label text.
pub fn key_text(m: &Map, i: usize, k: usize) -> String {
    if m.is_str_key(k) {
        let p = m.key_str(i, k);
        // SAFETY: a NUL-terminated key of at most cap bytes inside the entry.
        let n = unsafe { ptap_rt_core::script::globals::c_len(p, m.cap()) };
        // SAFETY: n bytes are readable (c_len stopped inside the key).
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into_owned()
    } else {
        m.key_long(i, k).to_string()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut e = encoder.encode_descriptor(
            "ptap_session",
            "the ptap session: host, script and target",
            None,
            MetricType::Info,
        )?;
        e.encode_info(&self.info)?;
        let full = ConstCounter::new(self.map_full);
        let e = encoder.encode_descriptor(
            "ptap_map_full",
            "array inserts dropped because the array was full",
            None,
            full.metric_type(),
        )?;
        full.encode(e)?;
        for (m, series) in &self.families {
            let ty = match m.exposed {
                Exposed::Counter => MetricType::Counter,
                Exposed::Gauge => MetricType::Gauge,
                Exposed::Info => MetricType::Info,
                Exposed::Histogram(_) => MetricType::Histogram,
            };
            let mut desc = encoder.encode_descriptor(&m.name, &m.help, None, ty)?;
            for (labels, v) in series {
                let mut e = desc.encode_family(labels)?;
                match (v, &m.exposed) {
                    (Value::Long(n), Exposed::Counter) => e
                        .encode_counter::<Vec<(String, String)>, u64, f64>(
                            &(*n).max(0).unsigned_abs(),
                            None,
                        )?,
                    (Value::Long(n), _) => e.encode_gauge(n)?,
                    (Value::Str(s), _) => e.encode_info(&vec![("value".to_string(), s.clone())])?,
                    (Value::Hist(count, sum, buckets), _) => {
                        let mut b = buckets.clone();
                        b.push((f64::INFINITY, *count));
                        // Each bucket's own count, as the encoder adds them up.
                        let mut prev = 0;
                        let own: Vec<(f64, u64)> = b
                            .iter()
                            .map(|&(u, c)| {
                                let d = c.saturating_sub(prev);
                                prev = c;
                                (u, d)
                            })
                            .collect();
                        e.encode_histogram::<Vec<(String, String)>>(*sum, *count, &own, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_sanitized() {
        assert_eq!(metric_name("fails"), "ptap_fails");
        assert_eq!(metric_name("a.b-c"), "ptap_a_b_c");
    }

    #[test]
    fn log_buckets_are_cumulative_with_their_upper_bounds() {
        let mut counts = vec![0i64; 128];
        counts[60] = 4; // negatives: in le="0"
        counts[64] = 2; // 0
        counts[65] = 3; // 1
        counts[67] = 1; // 4..7
        counts[120] = 9; // 2^55: only in +Inf
        let c = cumulative(HistKind::Log, &counts);
        assert_eq!(c.len(), 41);
        assert_eq!(c[0], (0.0, 6));
        let c: Vec<(f64, u64)> = c.iter().map(|&(u, n)| (u, n - 4)).collect();
        assert!(c.contains(&(0.0, 2)));
        assert!(c.contains(&(1.0, 5)));
        assert!(c.contains(&(3.0, 5)));
        assert!(c.contains(&(7.0, 6)));
        assert_eq!(c.last().unwrap().1, 6);
    }

    #[test]
    fn linear_buckets_end_before_the_overflow() {
        // lo 0, hi 20, step 10: underflow, [0,10), [10,20), [20,30)?, overflow
        let counts = vec![1, 2, 3, 4, 5];
        let c = cumulative(
            HistKind::Linear {
                lo: 0,
                hi: 20,
                step: 10,
            },
            &counts,
        );
        assert_eq!(c, vec![(-1.0, 1), (9.0, 3), (19.0, 6), (29.0, 10)]);
    }
}
