//! Module metadata: the globals layout, the probe points, the format and
//! location tables, as `ptap_rt_core::script::meta::Meta`.

use std::collections::HashMap;

use ptap_lang::checked::ScalarType;
use ptap_lang::checked::{
    CheckedScript, Const, GlobalShape, Module as LibModule, PointKind, Target, TimerUnit, ValueType,
};
use ptap_lang::printf::Format;
use ptap_lang::Span;
use ptap_rt_core::script::globals::{self, Slot};
use ptap_rt_core::script::map::{Kind as MapKind, Shape, MAX_KEYS};
use ptap_rt_core::script::meta::{
    self as m, ArrayMeta, GlobalKind, InitValue, Meta, MetaGlobal, MetaLimits, MetaLoc, MetaPoint,
    MetaProbe, ModuleSpec, TargetSpec,
};

use super::CodegenError;

/// Offsets of the globals in the session's globals area.
pub(crate) struct Layout {
    pub offsets: Vec<u64>,
    pub kinds: Vec<GlobalKind>,
    /// Shapes of the array globals.
    pub arrays: Vec<Option<ArrayMeta>>,
    pub size: u64,
}

fn map_kind(t: ValueType) -> MapKind {
    match t {
        ValueType::Long => MapKind::Long,
        ValueType::String => MapKind::Str,
        ValueType::Stats => MapKind::Stats,
    }
}

/// `hists`: the histograms of each global ([`super::hist::collect`]).
/// With `base` (a REPL session), the globals it has keep their offsets and
/// new ones go after its end.
pub(crate) fn layout(
    script: &CheckedScript,
    hists: &super::hist::Hists,
    base: Option<&super::SessionBase>,
) -> Result<Layout, CodegenError> {
    let mut kinds = Vec::new();
    let mut arrays = Vec::new();
    let mut slots = Vec::new();
    let cap = script.limits.maxstringlen + 1;
    for (gi, g) in script.globals.iter().enumerate() {
        let (k, slot, arr) = match &g.shape {
            GlobalShape::Scalar(ValueType::Long) => (GlobalKind::Long, Slot::Long, None),
            GlobalShape::Scalar(ValueType::String) => (GlobalKind::Str, Slot::Str, None),
            GlobalShape::Scalar(ValueType::Stats) if !hists[gi].is_empty() => (
                GlobalKind::Stats,
                Slot::Bytes(super::hist::slot_size(&hists[gi])),
                None,
            ),
            GlobalShape::Scalar(ValueType::Stats) => (GlobalKind::Stats, Slot::Stats, None),
            GlobalShape::Array { keys, value } => {
                if keys.len() > MAX_KEYS {
                    return Err(CodegenError::unsupported(
                        "arrays with more than 8 keys",
                        g.span,
                    ));
                }
                let a = ArrayMeta {
                    keys: keys
                        .iter()
                        .map(|k| match k {
                            ScalarType::Long => MapKind::Long,
                            ScalarType::String => MapKind::Str,
                        })
                        .collect(),
                    value: map_kind(*value),
                    capacity: g.capacity.unwrap_or(script.limits.maxmapentries),
                    hist_bytes: if hists[gi].is_empty() {
                        0
                    } else {
                        super::hist::slot_size(&hists[gi]) - 32
                    },
                };
                let shape = Shape {
                    keys: a.keys.clone(),
                    value: a.value,
                    capacity: a.capacity,
                    cap,
                    hist_bytes: a.hist_bytes,
                };
                (GlobalKind::Array, Slot::Bytes(shape.size()), Some(a))
            }
        };
        kinds.push(k);
        slots.push(slot);
        arrays.push(arr);
    }
    let (offsets, size) = match base {
        None => globals::layout(&slots, script.limits.maxstringlen),
        Some(b) => continue_layout(script, &slots, &kinds, b)?,
    };
    Ok(Layout {
        offsets,
        kinds,
        arrays,
        size,
    })
}

/// Offsets of `slots` in a session that already has `base`'s globals:
/// those keep their place (their shape must not change), new ones follow.
fn continue_layout(
    script: &CheckedScript,
    slots: &[Slot],
    kinds: &[GlobalKind],
    base: &super::SessionBase,
) -> Result<(Vec<u64>, u64), CodegenError> {
    let mut end = base.globals_end;
    let mut offsets = Vec::with_capacity(slots.len());
    for (i, g) in script.globals.iter().enumerate() {
        let size = globals::slot_size(slots[i], script.limits.maxstringlen);
        match base.globals.iter().find(|b| b.name == g.name) {
            Some(b) if b.size == size && b.kind == kinds[i] => offsets.push(b.offset),
            Some(b) => {
                return Err(CodegenError::unsupported(
                    &format!(
                        "a new shape for global `{}` (it holds {} of {} bytes in this session; a global keeps the type and size it was first given)",
                        g.name,
                        kind_name(b.kind),
                        b.size
                    ),
                    g.span,
                ))
            }
            None => {
                offsets.push(end);
                end += size;
            }
        }
    }
    Ok((offsets, end))
}

fn kind_name(k: GlobalKind) -> &'static str {
    match k {
        GlobalKind::Long => "a number",
        GlobalKind::Str => "a string",
        GlobalKind::Stats => "statistics",
        GlobalKind::Array => "an array",
    }
}

/// Formats (printf and synthesized print formats), deduplicated, by id.
#[derive(Default)]
pub(crate) struct Formats {
    pub list: Vec<Format>,
}

impl Formats {
    pub(crate) fn id(&mut self, f: &Format) -> u32 {
        if let Some(i) = self.list.iter().position(|x| x == f) {
            return i as u32;
        }
        self.list.push(f.clone());
        (self.list.len() - 1) as u32
    }
}

/// Source locations of runtime errors, by id.
/// (A REPL module numbers its locations after the session's: `base`.)
#[derive(Default)]
pub(crate) struct Locations {
    pub spans: Vec<Span>,
    pub(crate) map: HashMap<Span, u32>,
    pub base: u32,
}

impl Locations {
    pub(crate) fn id(&mut self, span: Span) -> u32 {
        let base = self.base;
        *self.map.entry(span).or_insert_with(|| {
            self.spans.push(span);
            base + (self.spans.len() - 1) as u32
        })
    }
}

fn module_spec(m: &Option<LibModule>) -> Option<ModuleSpec> {
    m.as_ref().map(|m| match m {
        LibModule::Name(n) => ModuleSpec::Name(n.clone()),
        LibModule::Path(p) => ModuleSpec::Path(p.clone()),
    })
}

fn target_spec(t: &Target) -> TargetSpec {
    match t {
        Target::Symbol {
            module,
            name,
            offset,
        } => TargetSpec::Symbol {
            module: module_spec(module),
            name: name.clone(),
            offset: *offset,
        },
        Target::Pattern { module, pattern } => TargetSpec::Pattern {
            module: module_spec(module),
            pattern: pattern.clone(),
        },
        Target::Address(a) => TargetSpec::Address(*a),
        // Replaced by address points before (`dwarf_lines::expand`).
        Target::Line { .. } => TargetSpec::None,
        Target::Syscall { name, calls } => TargetSpec::Syscall {
            name: name.clone(),
            calls: calls.clone(),
        },
    }
}

fn point_kind(k: &PointKind) -> (m::PointKind, TargetSpec) {
    match k {
        PointKind::Begin => (m::PointKind::Begin, TargetSpec::None),
        PointKind::End => (m::PointKind::End, TargetSpec::None),
        PointKind::Timer { unit, n } => {
            let ns = match unit {
                TimerUnit::S => n.saturating_mul(1_000_000_000),
                TimerUnit::Ms => n.saturating_mul(1_000_000),
                TimerUnit::Us => n.saturating_mul(1_000),
                TimerUnit::Ns => *n,
                // N >= 1 (checked): the period is a second divided by N.
                TimerUnit::Hz => (1_000_000_000 / (*n).max(1)).max(1),
            };
            (m::PointKind::Timer(ns), TargetSpec::None)
        }
        PointKind::Kprobe { target } => (m::PointKind::Kprobe, target_spec(target)),
        PointKind::Jprobe { target } => (m::PointKind::Jprobe, target_spec(target)),
        PointKind::Kretprobe { target, maxactive } => (
            m::PointKind::Kretprobe(maxactive.unwrap_or(0)),
            target_spec(target),
        ),
        PointKind::ProcessBegin { module } => (
            m::PointKind::ProcessBegin,
            TargetSpec::Process {
                module: module_spec(module),
            },
        ),
        PointKind::ProcessEnd { module } => (
            m::PointKind::ProcessEnd,
            TargetSpec::Process {
                module: module_spec(module),
            },
        ),
    }
}

/// Symbol of probe `i`'s handler.
pub fn handler_symbol(i: usize) -> String {
    format!("ptap_probe_{i}")
}

/// Symbol of probe `i`'s `@entry` handler.
pub fn entry_symbol(i: usize) -> String {
    format!("ptap_entry_{i}")
}

pub(crate) fn build(
    script: &CheckedScript,
    layout: &Layout,
    formats: &Formats,
    locations: &Locations,
) -> Meta {
    let l = &script.limits;
    let globals = script
        .globals
        .iter()
        .enumerate()
        .map(|(i, g)| MetaGlobal {
            name: g.name.clone(),
            kind: layout.kinds[i],
            offset: layout.offsets[i],
            read: g.read,
            written: g.written,
            init: g.init.as_ref().map(|c| match c {
                Const::Long(v) => InitValue::Long(*v),
                Const::Str(s) => InitValue::Str(s.clone()),
            }),
            array: layout.arrays[i].clone(),
        })
        .collect();
    let probes = script
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| MetaProbe {
            handler: handler_symbol(i),
            entry_handler: (!p.entry_exprs.is_empty()).then(|| entry_symbol(i)),
            entry_values: super::expr::entry_layout(p, script.limits.maxstringlen + 1).1,
            points: p
                .points
                .iter()
                .map(|pt| {
                    let (kind, target) = point_kind(&pt.kind);
                    MetaPoint {
                        text: pt.text.clone(),
                        kind,
                        target,
                        optional: pt.optional,
                    }
                })
                .collect(),
        })
        .collect();
    // Ids below the base are the session's earlier modules' (placeholders).
    let placeholders = (0..locations.base).map(|_| MetaLoc {
        file: String::new(),
        line: 0,
        col: 0,
        token: String::new(),
    });
    let locations = placeholders
        .chain(locations.spans.iter().map(|&s| {
            let (line, col) = script.sources.line_col(s);
            let mut token: String = script.sources.slice(s).chars().take(40).collect();
            if let Some(nl) = token.find('\n') {
                token.truncate(nl);
            }
            MetaLoc {
                file: script.sources.name(s.file).to_string(),
                line: line as u32,
                col: col as u32,
                token,
            }
        }))
        .collect();
    Meta {
        limits: MetaLimits {
            maxaction: l.maxaction,
            maxstringlen: l.maxstringlen,
            maxnesting: l.maxnesting,
            maxerrors: l.maxerrors,
            maxmapentries: l.maxmapentries,
            kretactive: l.kretactive.unwrap_or(0),
            maxskipped: l.maxskipped,
        },
        globals_size: layout.size,
        globals,
        probes,
        formats: formats.list.iter().map(Format::to_source).collect(),
        locations,
    }
}
