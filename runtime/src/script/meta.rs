//! Probe-module metadata: the `.ptap_meta` section of a compiled module.
//!
//! Written by the compiler, read by the runtime's loader (to register
//! probes and size the globals) and by ptap (formats, locations and global
//! names for output). Plain data; the encoding is line-based text, one
//! record per line, tab-separated fields, `\t \n \\` escaped — easy to read
//! with `readelf -p .ptap_meta` and to parse without a serialization crate.

pub const SECTION: &str = ".ptap_meta";
const MAGIC_LINE: &str = "ptap-module\t1";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub limits: MetaLimits,
    /// Bytes of the globals area (header included).
    pub globals_size: u64,
    pub globals: Vec<MetaGlobal>,
    pub probes: Vec<MetaProbe>,
    /// printf formats (printf syntax), by format id.
    pub formats: Vec<String>,
    /// Source locations for runtime errors, by location id.
    pub locations: Vec<MetaLoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaLimits {
    pub maxaction: u64,
    pub maxstringlen: u64,
    pub maxnesting: u64,
    pub maxerrors: u64,
    pub maxmapentries: u64,
    /// Default kretprobe maxactive; 0: the runtime's default.
    pub kretactive: u64,
    /// MAXSKIPPED: skipped handler runs (nmissed + reentrancy) tolerated
    /// before the session is aborted.
    pub maxskipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalKind {
    Long,
    Str,
    Stats,
    /// An associative array (its shape is [`MetaGlobal::array`]).
    Array,
}

/// The shape of an array global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayMeta {
    pub keys: Vec<super::map::Kind>,
    pub value: super::map::Kind,
    pub capacity: u64,
    /// Histogram bytes after each statistics value.
    pub hist_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitValue {
    Long(i64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaGlobal {
    pub name: String,
    pub kind: GlobalKind,
    pub offset: u64,
    pub read: bool,
    pub written: bool,
    pub init: Option<InitValue>,
    /// For `GlobalKind::Array`.
    pub array: Option<ArrayMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProbe {
    /// Symbol of `extern "C" fn(*mut ProbeCtx) -> i64`.
    pub handler: String,
    /// Symbol of the entry handler that saves `@entry` values (kretprobe), if any.
    pub entry_handler: Option<String>,
    /// Number of `@entry` values (i64 each).
    pub entry_values: u32,
    pub points: Vec<MetaPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaPoint {
    /// Canonical text, e.g. `kretprobe(sys_open).maxactive(20)?` (for pp() and errors).
    pub text: String,
    pub kind: PointKind,
    pub target: TargetSpec,
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    Begin,
    End,
    /// Period in nanoseconds.
    Timer(u64),
    Kprobe,
    Jprobe,
    /// maxactive (0: default).
    Kretprobe(u64),
    /// Once in each process of the session, after its probes were armed
    /// (target: [`TargetSpec::Process`]).
    ProcessBegin,
    /// When such a process exits normally.
    ProcessEnd,
}

impl PointKind {
    /// Does a point of this kind run in the target process (so that a
    /// session with one needs a target or, where possible, system-wide
    /// events)? Begin, end and timers run in ptap.
    pub fn in_target(self) -> bool {
        !matches!(
            self,
            PointKind::Begin | PointKind::End | PointKind::Timer(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSpec {
    Name(String),
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    None,
    Symbol {
        module: Option<ModuleSpec>,
        name: String,
        offset: u64,
    },
    Pattern {
        module: Option<ModuleSpec>,
        pattern: String,
    },
    Address(u64),
    /// The processes of `process.begin`/`.end` points: all of the session's,
    /// or those whose program is `module`.
    Process {
        module: Option<ModuleSpec>,
    },
    /// System calls (name, number).
    Syscall {
        name: String,
        calls: Vec<(String, u32)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaLoc {
    pub file: String,
    pub line: u32,
    pub col: u32,
    /// The source text at the location (for "near ...").
    pub token: String,
}

impl Meta {
    /// Every array global: (offset in the globals area, shape).
    pub fn array_shapes(&self) -> Vec<(u64, super::map::Shape)> {
        let cap = self.limits.maxstringlen + 1;
        self.globals
            .iter()
            .filter_map(|gl| {
                let a = gl.array.as_ref()?;
                Some((
                    gl.offset,
                    super::map::Shape {
                        keys: a.keys.clone(),
                        value: a.value,
                        capacity: a.capacity,
                        cap,
                        hist_bytes: a.hist_bytes,
                    },
                ))
            })
            .collect()
    }

    /// The location text `file:line:col` of location `id`.
    pub fn location(&self, id: u32) -> Option<String> {
        self.locations
            .get(id as usize)
            .map(|l| format!("{}:{}:{}", l.file, l.line, l.col))
    }

    pub fn encode(&self) -> String {
        let mut o = String::new();
        let mut line = |fields: &[String]| {
            let esc: Vec<String> = fields.iter().map(|f| escape(f)).collect();
            o.push_str(&esc.join("\t"));
            o.push('\n');
        };
        let l = &self.limits;
        line(&["ptap-module".into(), "1".into()]);
        line(&[
            "limits".into(),
            l.maxaction.to_string(),
            l.maxstringlen.to_string(),
            l.maxnesting.to_string(),
            l.maxerrors.to_string(),
            l.maxmapentries.to_string(),
            l.kretactive.to_string(),
            l.maxskipped.to_string(),
        ]);
        line(&["globals_size".into(), self.globals_size.to_string()]);
        for g in &self.globals {
            let kind = match g.kind {
                GlobalKind::Long => "long",
                GlobalKind::Str => "string",
                GlobalKind::Stats => "stats",
                GlobalKind::Array => "array",
            };
            let init = match &g.init {
                None => "-".to_string(),
                Some(InitValue::Long(v)) => format!("L{v}"),
                Some(InitValue::Str(s)) => format!("S{s}"),
            };
            line(&[
                "global".into(),
                g.name.clone(),
                kind.into(),
                g.offset.to_string(),
                u8::from(g.read).to_string(),
                u8::from(g.written).to_string(),
                init,
                array_field(&g.array),
            ]);
        }
        for (i, p) in self.probes.iter().enumerate() {
            line(&[
                "probe".into(),
                p.handler.clone(),
                p.entry_handler.clone().unwrap_or_else(|| "-".into()),
                p.entry_values.to_string(),
            ]);
            for pt in &p.points {
                let (kind, arg) = match pt.kind {
                    PointKind::Begin => ("begin", 0),
                    PointKind::End => ("end", 0),
                    PointKind::Timer(ns) => ("timer", ns),
                    PointKind::Kprobe => ("kprobe", 0),
                    PointKind::Jprobe => ("jprobe", 0),
                    PointKind::Kretprobe(m) => ("kretprobe", m),
                    PointKind::ProcessBegin => ("process_begin", 0),
                    PointKind::ProcessEnd => ("process_end", 0),
                };
                let mut f = vec![
                    "point".into(),
                    i.to_string(),
                    pt.text.clone(),
                    kind.into(),
                    arg.to_string(),
                    u8::from(pt.optional).to_string(),
                ];
                f.extend(target_fields(&pt.target));
                line(&f);
            }
        }
        for f in &self.formats {
            line(&["format".into(), f.clone()]);
        }
        for l in &self.locations {
            line(&[
                "loc".into(),
                l.file.clone(),
                l.line.to_string(),
                l.col.to_string(),
                l.token.clone(),
            ]);
        }
        o
    }

    pub fn decode(text: &str) -> Result<Meta, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC_LINE) {
            return Err("not ptap module metadata (or a different version)".into());
        }
        let mut m = Meta::default();
        for (n, raw) in lines.enumerate() {
            let f: Vec<String> = raw.split('\t').map(unescape).collect();
            let bad = || format!("metadata line {}: malformed `{raw}`", n + 2);
            let num = |i: usize| -> Result<u64, String> {
                f.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad)
            };
            let s = |i: usize| -> Result<String, String> { f.get(i).cloned().ok_or_else(bad) };
            match f[0].as_str() {
                "limits" => {
                    m.limits = MetaLimits {
                        maxaction: num(1)?,
                        maxstringlen: num(2)?,
                        maxnesting: num(3)?,
                        maxerrors: num(4)?,
                        maxmapentries: num(5)?,
                        kretactive: num(6)?,
                        maxskipped: num(7)?,
                    }
                }
                "globals_size" => m.globals_size = num(1)?,
                "global" => {
                    let kind = match s(2)?.as_str() {
                        "long" => GlobalKind::Long,
                        "string" => GlobalKind::Str,
                        "stats" => GlobalKind::Stats,
                        "array" => GlobalKind::Array,
                        _ => return Err(bad()),
                    };
                    let init = s(6)?;
                    let init = if init == "-" {
                        None
                    } else if let Some(v) = init.strip_prefix('L') {
                        Some(InitValue::Long(v.parse().map_err(|_| bad())?))
                    } else if let Some(v) = init.strip_prefix('S') {
                        Some(InitValue::Str(v.to_string()))
                    } else {
                        return Err(bad());
                    };
                    m.globals.push(MetaGlobal {
                        name: s(1)?,
                        kind,
                        offset: num(3)?,
                        read: num(4)? != 0,
                        written: num(5)? != 0,
                        init,
                        array: parse_array(&s(7)?).ok_or_else(bad)?,
                    });
                }
                "probe" => {
                    let e = s(2)?;
                    m.probes.push(MetaProbe {
                        handler: s(1)?,
                        entry_handler: (e != "-").then_some(e),
                        entry_values: u32::try_from(num(3)?).map_err(|_| bad())?,
                        points: Vec::new(),
                    });
                }
                "point" => {
                    let i = num(1)? as usize;
                    let arg = num(4)?;
                    let kind = match s(3)?.as_str() {
                        "begin" => PointKind::Begin,
                        "end" => PointKind::End,
                        "timer" => PointKind::Timer(arg),
                        "kprobe" => PointKind::Kprobe,
                        "jprobe" => PointKind::Jprobe,
                        "kretprobe" => PointKind::Kretprobe(arg),
                        "process_begin" => PointKind::ProcessBegin,
                        "process_end" => PointKind::ProcessEnd,
                        _ => return Err(bad()),
                    };
                    let target = parse_target(&f[6..]).ok_or_else(bad)?;
                    let pt = MetaPoint {
                        text: s(2)?,
                        kind,
                        target,
                        optional: num(5)? != 0,
                    };
                    m.probes.get_mut(i).ok_or_else(bad)?.points.push(pt);
                }
                "format" => m.formats.push(s(1)?),
                "loc" => m.locations.push(MetaLoc {
                    file: s(1)?,
                    line: num(2)? as u32,
                    col: num(3)? as u32,
                    token: s(4)?,
                }),
                _ => return Err(bad()),
            }
        }
        Ok(m)
    }
}

fn kind_letter(k: super::map::Kind) -> char {
    match k {
        super::map::Kind::Long => 'L',
        super::map::Kind::Str => 'S',
        super::map::Kind::Stats => 'A',
    }
}

fn letter_kind(c: char) -> Option<super::map::Kind> {
    Some(match c {
        'L' => super::map::Kind::Long,
        'S' => super::map::Kind::Str,
        'A' => super::map::Kind::Stats,
        _ => return None,
    })
}

/// `-`, or `KEYS/VALUE/CAPACITY/HIST_BYTES` (e.g. `LS/L/2048/0`).
fn array_field(a: &Option<ArrayMeta>) -> String {
    match a {
        None => "-".into(),
        Some(a) => {
            let keys: String = a.keys.iter().map(|&k| kind_letter(k)).collect();
            format!(
                "{keys}/{}/{}/{}",
                kind_letter(a.value),
                a.capacity,
                a.hist_bytes
            )
        }
    }
}

fn parse_array(s: &str) -> Option<Option<ArrayMeta>> {
    if s == "-" {
        return Some(None);
    }
    let mut it = s.split('/');
    let keys = it
        .next()?
        .chars()
        .map(letter_kind)
        .collect::<Option<Vec<_>>>()?;
    let value = letter_kind(it.next()?.chars().next()?)?;
    let capacity = it.next()?.parse().ok()?;
    let hist_bytes = it.next()?.parse().ok()?;
    Some(Some(ArrayMeta {
        keys,
        value,
        capacity,
        hist_bytes,
    }))
}

fn module_field(m: &Option<ModuleSpec>) -> String {
    match m {
        None => "-".into(),
        Some(ModuleSpec::Name(n)) => format!("name:{n}"),
        Some(ModuleSpec::Path(p)) => format!("path:{p}"),
    }
}

fn parse_module(s: &str) -> Option<Option<ModuleSpec>> {
    if s == "-" {
        return Some(None);
    }
    if let Some(n) = s.strip_prefix("name:") {
        return Some(Some(ModuleSpec::Name(n.into())));
    }
    s.strip_prefix("path:")
        .map(|p| Some(ModuleSpec::Path(p.into())))
}

fn target_fields(t: &TargetSpec) -> Vec<String> {
    match t {
        TargetSpec::None => vec!["none".into()],
        TargetSpec::Symbol {
            module,
            name,
            offset,
        } => {
            vec![
                "sym".into(),
                module_field(module),
                name.clone(),
                offset.to_string(),
            ]
        }
        TargetSpec::Pattern { module, pattern } => {
            vec!["pattern".into(), module_field(module), pattern.clone()]
        }
        TargetSpec::Address(a) => vec!["addr".into(), a.to_string()],
        TargetSpec::Process { module } => vec!["process".into(), module_field(module)],
        TargetSpec::Syscall { name, calls } => {
            let c: Vec<String> = calls.iter().map(|(n, nr)| format!("{n}={nr}")).collect();
            vec!["syscall".into(), name.clone(), c.join(",")]
        }
    }
}

fn parse_target(f: &[String]) -> Option<TargetSpec> {
    Some(match f.first()?.as_str() {
        "none" => TargetSpec::None,
        "sym" => TargetSpec::Symbol {
            module: parse_module(f.get(1)?)?,
            name: f.get(2)?.clone(),
            offset: f.get(3)?.parse().ok()?,
        },
        "pattern" => TargetSpec::Pattern {
            module: parse_module(f.get(1)?)?,
            pattern: f.get(2)?.clone(),
        },
        "addr" => TargetSpec::Address(f.get(1)?.parse().ok()?),
        "process" => TargetSpec::Process {
            module: parse_module(f.get(1)?)?,
        },
        "syscall" => {
            let mut calls = Vec::new();
            for c in f.get(2)?.split(',').filter(|c| !c.is_empty()) {
                let (n, nr) = c.split_once('=')?;
                calls.push((n.to_string(), nr.parse().ok()?));
            }
            TargetSpec::Syscall {
                name: f.get(1)?.clone(),
                calls,
            }
        }
        _ => return None,
    })
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\t' => o.push_str("\\t"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

fn unescape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        match it.next() {
            Some('t') => o.push('\t'),
            Some('n') => o.push('\n'),
            Some('r') => o.push('\r'),
            Some(c) => o.push(c),
            None => o.push('\\'),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let m = Meta {
            limits: MetaLimits {
                maxaction: 1000,
                maxstringlen: 128,
                maxnesting: 10,
                maxerrors: 0,
                maxmapentries: 2048,
                kretactive: 0,
                maxskipped: 100,
            },
            globals_size: 80,
            globals: vec![
                MetaGlobal {
                    name: "n".into(),
                    kind: GlobalKind::Long,
                    offset: 64,
                    read: true,
                    written: true,
                    init: Some(InitValue::Long(-3)),
                    array: None,
                },
                MetaGlobal {
                    name: "a".into(),
                    kind: GlobalKind::Array,
                    offset: 72,
                    read: false,
                    written: true,
                    init: None,
                    array: Some(ArrayMeta {
                        keys: vec![super::super::map::Kind::Long, super::super::map::Kind::Str],
                        value: super::super::map::Kind::Stats,
                        capacity: 9,
                        hist_bytes: 1024,
                    }),
                },
            ],
            probes: vec![MetaProbe {
                handler: "ptap_probe_0".into(),
                entry_handler: None,
                entry_values: 0,
                points: vec![
                    MetaPoint {
                        text: "kprobe(libc:malloc+4)".into(),
                        kind: PointKind::Kprobe,
                        target: TargetSpec::Symbol {
                            module: Some(ModuleSpec::Name("libc".into())),
                            name: "malloc".into(),
                            offset: 4,
                        },
                        optional: false,
                    },
                    MetaPoint {
                        text: "kretprobe(sys_open)".into(),
                        kind: PointKind::Kretprobe(20),
                        target: TargetSpec::Syscall {
                            name: "open".into(),
                            calls: vec![("open".into(), 2), ("openat".into(), 257)],
                        },
                        optional: true,
                    },
                ],
            }],
            formats: vec!["%s\t%d\n".into(), "back\\slash".into()],
            locations: vec![MetaLoc {
                file: "<command line>".into(),
                line: 1,
                col: 7,
                token: "a / b".into(),
            }],
        };
        let text = m.encode();
        assert_eq!(Meta::decode(&text), Ok(m));
        assert!(Meta::decode("garbage").is_err());
        assert!(Meta::decode("ptap-module\t1\nglobal\tx").is_err());
    }
}
