//! The ptap side of a compiled script: the session's globals area, the
//! probes that run in ptap (begin, end, timers) and the end-of-run report
//! of globals written but never read. The driver calls these; the target
//! side is `ptap_rt_core::script::attach`.

use std::sync::atomic::Ordering;

use ptap_rt_core::script::ctx::{Handler, ProbeCtx};
use ptap_rt_core::script::globals::{self, Globals};
use ptap_rt_core::script::map::{Kind as MapKind, Map};
use ptap_rt_core::script::meta::{GlobalKind, InitValue, Meta, PointKind};
use ptap_rt_core::session::Session;

use super::CodegenError;

/// Bytes the session memfd needs for `meta`'s module: control block, ring,
/// then the globals area.
pub fn session_size(ring_size: usize, meta: &Meta) -> usize {
    globals::offset_in_session(ring_size) + meta.globals_size as usize
}

/// The globals area of a session whose mapping is [`session_size`] bytes.
///
/// # Safety
/// The mapping of `s` must be at least `session_size(s.ring_size(), meta)` bytes.
pub unsafe fn globals_of(s: &Session) -> Globals {
    // SAFETY: caller contract; the offset is 8-aligned (ring sizes are powers of two).
    unsafe { Globals::from_raw(s.base().add(globals::offset_in_session(s.ring_size()))) }
}

/// Initialise a zeroed globals area: header, then each initial value.
pub fn init_globals(g: &Globals, meta: &Meta, target_pid: i32) {
    g.init(meta.globals_size, target_pid);
    for gl in &meta.globals {
        init_global(g, meta, gl);
    }
}

/// Initialise one global of `meta` in a zeroed area (its initial value,
/// empty statistics, an empty array).
pub fn init_global(g: &Globals, meta: &Meta, gl: &ptap_rt_core::script::meta::MetaGlobal) {
    let cap = meta.limits.maxstringlen as usize + 1;
    {
        if gl.kind == GlobalKind::Stats {
            g.reset_stats(gl.offset);
        }
        if let Some((off, shape)) = meta.array_shapes().into_iter().find(|a| a.0 == gl.offset) {
            // SAFETY: the compiler laid this array out at `off` with this
            // shape (init also records the shape as this process's trusted one).
            unsafe { Map::at(g, off) }.init(&shape);
        }
        match (&gl.init, gl.kind) {
            (Some(InitValue::Long(v)), GlobalKind::Long) => {
                g.long(gl.offset).store(*v, Ordering::Relaxed)
            }
            (Some(InitValue::Str(s)), GlobalKind::Str) => {
                let mut b: Vec<u8> = s.bytes().take(cap - 1).collect();
                b.push(0);
                // SAFETY: a string slot of capacity `cap`; b is NUL-terminated.
                unsafe { g.store_str(gl.offset, cap, b.as_ptr()) };
            }
            _ => {}
        }
    }
}

/// Tell the globals the target's pid (`target()`), once known.
pub fn set_target(g: &Globals, pid: i32) {
    g.header().target_pid.store(pid, Ordering::Relaxed);
}

/// Which ptap-side points to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Begin,
    End,
    /// One timer point: (probe, point).
    Timer(usize, usize),
}

/// Every timer point: (probe, point, period in ns).
pub fn timers(meta: &Meta) -> Vec<(usize, usize, u64)> {
    let mut v = Vec::new();
    for (pi, p) in meta.probes.iter().enumerate() {
        for (qi, pt) in p.points.iter().enumerate() {
            if let PointKind::Timer(ns) = pt.kind {
                v.push((pi, qi, ns));
            }
        }
    }
    v
}

/// Run the begin / end / one timer probe(s) in ptap, in script order.
/// `handler(i)` gives probe i's handler: from the module loaded into ptap
/// (`ptap_rt_core::script::load::load`, ~0.1 ms; what ptap runs) or from a
/// [`super::jit::Jit`] (the tests).
/// Errors are written to the ring as error records (like the target's).
/// Returns the number of handlers that failed.
pub fn run_probes(
    meta: &Meta,
    handler: impl Fn(usize) -> Option<Handler>,
    which: Which,
    session: &Session,
    g: &Globals,
) -> usize {
    run_probes_from(0, meta, handler, which, session, g).failed
}

/// What [`run_probes_from`] ran.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ran {
    /// Handlers run.
    pub ran: usize,
    /// Of them, those that failed.
    pub failed: usize,
}

/// [`run_probes`] for a module whose probes are numbered from
/// `probe_base` in its session (a REPL entry's).
pub fn run_probes_from(
    probe_base: u32,
    meta: &Meta,
    handler: impl Fn(usize) -> Option<Handler>,
    which: Which,
    session: &Session,
    g: &Globals,
) -> Ran {
    let mut ran = Ran::default();
    if which == Which::End && aborted(g) {
        return ran;
    }
    for (pi, p) in meta.probes.iter().enumerate() {
        for (qi, pt) in p.points.iter().enumerate() {
            let hit = match which {
                Which::Begin => pt.kind == PointKind::Begin,
                Which::End => pt.kind == PointKind::End,
                Which::Timer(a, b) => (a, b) == (pi, qi),
            };
            if !hit {
                continue;
            }
            let Some(h) = handler(pi) else { continue };
            let maxaction = i64::try_from(meta.limits.maxaction).unwrap_or(i64::MAX);
            let mut ctx = ProbeCtx::new(std::ptr::null_mut(), g.base(), session.base(), maxaction);
            ctx.probe = probe_base + pi as u32;
            ctx.point = qi as u32;
            ctx.pp = pt.text.as_ptr();
            ctx.pp_len = pt.text.len() as u64;
            // SAFETY: a handler of this module; ctx points to the live
            // session and globals; no registers (the checker allows no
            // register access in begin/end/timer probes).
            if unsafe { ptap_rt_core::script::run_handler(h, &mut ctx) } != 0 {
                ran.failed += 1;
            }
            ran.ran += 1;
        }
    }
    ran
}

/// Globals written but never read, as LANGUAGE.md prints them at the end
/// (`name=value`, one per line; strings quoted as SystemTap does).
pub fn unread_globals(meta: &Meta, g: &Globals) -> String {
    let cap = meta.limits.maxstringlen as usize + 1;
    let mut out = String::new();
    if aborted(g) {
        return out;
    }
    for gl in meta.globals.iter().filter(|gl| gl.written && !gl.read) {
        match gl.kind {
            GlobalKind::Long => out.push_str(&format!(
                "{}={}\n",
                gl.name,
                g.long(gl.offset).load(Ordering::SeqCst)
            )),
            GlobalKind::Str => {
                out.push_str(&format!("{}=\"{}\"\n", gl.name, g.read_str(gl.offset, cap)))
            }
            GlobalKind::Stats => {
                let (count, sum, min, max) = g.read_stats(gl.offset);
                let (min, max, avg) = if count == 0 {
                    (0, 0, 0)
                } else {
                    (min, max, sum.checked_div(count).unwrap_or(0))
                };
                out.push_str(&format!(
                    "{} @count={count} @min={min} @max={max} @sum={sum} @avg={avg}\n",
                    gl.name
                ));
            }
            GlobalKind::Array => out.push_str(&array_report(gl, g)),
        }
    }
    out
}

/// `name[k1,k2]=v` lines of an array, largest value first (ties by key).
fn array_report(gl: &ptap_rt_core::script::meta::MetaGlobal, g: &Globals) -> String {
    let Some(a) = &gl.array else {
        return String::new();
    };
    // SAFETY: an array laid out by the compiler and initialised by init_globals.
    let m = unsafe { Map::at(g, gl.offset) };
    let mut idx = vec![0u32; m.nslots()];
    let n = m.live(&mut idx);
    let mut rows: Vec<(MapValue, String)> = idx[..n]
        .iter()
        .map(|&i| {
            let i = i as usize;
            let keys: Vec<String> = (0..a.keys.len())
                .map(|k| {
                    if m.is_str_key(k) {
                        // SAFETY: a NUL-terminated key inside the entry.
                        let p = m.key_str(i, k);
                        // SAFETY: as above.
                        let n = unsafe { ptap_rt_core::script::globals::c_len(p, m.cap()) };
                        // SAFETY: n bytes are readable.
                        let bytes = unsafe { std::slice::from_raw_parts(p, n) };
                        format!("\"{}\"", String::from_utf8_lossy(bytes))
                    } else {
                        m.key_long(i, k).to_string()
                    }
                })
                .collect();
            (map_value(&m, g, i), keys.join(","))
        })
        .collect();
    rows.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    rows.iter()
        .map(|(v, k)| format!("{}[{k}]={}\n", gl.name, v.text()))
        .collect()
}

/// A value of an array entry, for sorting and printing.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum MapValue {
    Long(i64),
    Str(String),
    /// (count, sum, min, max)
    Stats(i64, i64, i64, i64),
}

impl MapValue {
    fn text(&self) -> String {
        match self {
            MapValue::Long(v) => v.to_string(),
            MapValue::Str(s) => format!("\"{s}\""),
            MapValue::Stats(c, s, mi, ma) => {
                let (mi, ma, avg) = if *c == 0 {
                    (0, 0, 0)
                } else {
                    (*mi, *ma, s.checked_div(*c).unwrap_or(0))
                };
                format!("@count={c} @min={mi} @max={ma} @sum={s} @avg={avg}")
            }
        }
    }
}

fn map_value(m: &Map, g: &Globals, i: usize) -> MapValue {
    let off = m.value_ptr(i) as u64 - g.base() as u64;
    match m.value_kind() {
        MapKind::Long => MapValue::Long(g.long(off).load(Ordering::SeqCst)),
        MapKind::Str => MapValue::Str(g.read_str(off, m.cap())),
        MapKind::Stats => {
            let (c, s, mi, ma) = g.read_stats(off);
            MapValue::Stats(c, s, mi, ma)
        }
    }
}

/// Runtime errors counted in the globals header (all processes).
pub fn errors(g: &Globals) -> u64 {
    g.header().errors.load(Ordering::Relaxed)
}

/// Skipped handler runs counted in the globals header (all processes):
/// nmissed (kretprobes without a free instance) + reentrancy. The targets'
/// runtimes add their counts with [`Globals::add_missed`] about once a
/// second while they run, and the rest when they detach or exit.
pub fn skipped(g: &Globals) -> u64 {
    let h = g.header();
    h.nmissed
        .load(Ordering::Acquire)
        .saturating_add(h.reentrancy.load(Ordering::Acquire))
}

/// MAXSKIPPED: more handler runs were skipped than the script allows
/// (`-D MAXSKIPPED=N`, default 100, as SystemTap); the driver then stops the
/// session with [`TOO_MANY_SKIPPED`].
pub fn too_many_skipped(g: &Globals, meta: &Meta) -> bool {
    skipped(g) > meta.limits.maxskipped
}

/// What the driver prints (stderr) when [`too_many_skipped`] stops a session.
pub const TOO_MANY_SKIPPED: &str = "ERROR: Skipped too many probes, check MAXSKIPPED";

/// The end-of-session summary (empty when nothing was lost), as the driver
/// prints it on stderr after the end probes:
///
/// ```text
/// WARNING: Number of errors: N, skipped probes: M
/// WARNING: Skipped due to nmissed (kretprobe without a free instance): A
/// WARNING: Skipped due to reentrancy: B
/// WARNING: Errors due to full maps: C
/// WARNING: Output records lost (full output buffer): D
/// ```
///
/// The first line is printed whenever anything was lost; the cause lines
/// only for the causes that occurred. `skipped probes` = nmissed +
/// reentrancy (handler runs that never happened); full maps are errors
/// (each also counted in N). The skip counts are those the targets'
/// runtimes added with [`Globals::add_missed`].
pub fn summary(g: &Globals, session: &Session) -> String {
    let h = g.header();
    let errors = h.errors.load(Ordering::Acquire);
    let nmissed = h.nmissed.load(Ordering::Acquire);
    let reentrancy = h.reentrancy.load(Ordering::Acquire);
    let map_full = h.map_full.load(Ordering::Acquire);
    let dropped = session.dropped();
    let mut out = summary_text(errors, nmissed, reentrancy, map_full, dropped);
    let bad = session
        .malformed()
        .saturating_add(crate::output::malformed_records());
    if bad > 0 {
        out.push_str(&format!(
            "WARNING: Malformed output records skipped (the session memory was overwritten): {bad}\n"
        ));
    }
    out.push_str(&unwound_line(h.unwound.load(Ordering::Acquire)));
    out
}

/// The summary line for kretprobed frames left by unwinding (C++
/// exceptions, longjmp): not a skip (nothing was lost that could have been
/// traced: the function did not return), so not counted in MAXSKIPPED.
/// Empty when there were none.
pub fn unwound_line(n: u64) -> String {
    if n == 0 {
        return String::new();
    }
    format!(
        "ptap: kretprobe returns by unwinding (exception or longjmp; no return handler ran): {n}\n"
    )
}

/// [`summary`] from the counts (a pure function).
pub fn summary_text(
    errors: u64,
    nmissed: u64,
    reentrancy: u64,
    map_full: u64,
    dropped: u64,
) -> String {
    let skipped = nmissed + reentrancy;
    if errors == 0 && skipped == 0 && dropped == 0 && map_full == 0 {
        return String::new();
    }
    let mut out = format!("WARNING: Number of errors: {errors}, skipped probes: {skipped}\n");
    if nmissed > 0 {
        out.push_str(&format!(
            "WARNING: Skipped due to nmissed (kretprobe without a free instance): {nmissed}\n"
        ));
    }
    if reentrancy > 0 {
        out.push_str(&format!(
            "WARNING: Skipped due to reentrancy: {reentrancy}\n"
        ));
    }
    if map_full > 0 {
        out.push_str(&format!("WARNING: Errors due to full maps: {map_full}\n"));
    }
    if dropped > 0 {
        out.push_str(&format!(
            "WARNING: Output records lost (full output buffer): {dropped}\n"
        ));
    }
    out
}

/// `exit()` was called by some handler.
pub fn exit_requested(g: &Globals) -> bool {
    g.header().exit.load(Ordering::Acquire) != 0
}

/// `abort()` was called: no end probes and no globals report.
pub fn aborted(g: &Globals) -> bool {
    g.header().exit.load(Ordering::Acquire) == ptap_rt_core::script::attach::EXIT_ABORT
}

/// Why a probe module (`ptap run NAME.o`) cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ModuleFileError {
    #[error(transparent)]
    Load(#[from] ptap_rt_core::script::load::LoadError),
    #[error(transparent)]
    Format(#[from] crate::output::BadFormat),
}

/// A compiled script as ptap runs it: the probe module (for the target)
/// and the same module loaded into ptap (for begin/end/timer probes), with
/// its parsed formats (to render the target's records).
pub struct Program {
    /// The ELF object the target loads (`PTAP_MODULE=NAME.o`).
    pub object: Vec<u8>,
    pub module: ptap_rt_core::script::load::LoadedModule,
    pub formats: Vec<ptap_lang::printf::Format>,
}

impl Program {
    /// Compile a checked script (`ptap -e`, `ptap SCRIPT.pt`). A
    /// [`CodegenError`] renders as a diagnostic against the script's
    /// sources (`ToDiagnostic`).
    pub fn compile(script: &ptap_lang::CheckedScript) -> Result<Program, CodegenError> {
        Program::compile_for(script, None)
    }

    /// Compile with `$name` target variables resolved in `exe`'s DWARF
    /// (the -c command's executable).
    pub fn compile_for(
        script: &ptap_lang::CheckedScript,
        exe: Option<&std::path::Path>,
    ) -> Result<Program, CodegenError> {
        let object = super::emit_object_for(script, exe)?;
        // The module was just written by us: failing to load it is a bug.
        Program::from_object(object).map_err(|e| CodegenError::Module(e.to_string()))
    }

    /// A module written earlier by `ptap -p4` (`ptap run NAME.o`).
    pub fn from_object(object: Vec<u8>) -> Result<Program, ModuleFileError> {
        let module = ptap_rt_core::script::load::load(&object)?;
        let formats = crate::output::formats_of(&module.meta)?;
        Ok(Program {
            object,
            module,
            formats,
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.module.meta
    }

    /// Run the begin / end / one timer probe(s) in ptap (see [`run_probes`]).
    pub fn run(&self, which: Which, session: &Session, g: &Globals) -> usize {
        run_probes(
            &self.module.meta,
            |i| self.module.handler(i),
            which,
            session,
            g,
        )
    }

    /// Render one REC_FORMAT payload of this program.
    pub fn render(&self, payload: &[u8]) -> crate::output::Rendered {
        crate::output::render_record(&self.module.meta, &self.formats, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptap_rt_core::script::meta::MetaLimits;

    #[test]
    fn maxskipped_counts_nmissed_and_reentrancy() {
        let mut mem = vec![0u64; globals::HEADER_SIZE / 8];
        // SAFETY: mem is 8-aligned, HEADER_SIZE bytes, and outlives g.
        let g = unsafe { Globals::from_raw(mem.as_mut_ptr() as *mut u8) };
        g.init(globals::HEADER_SIZE as u64, 0);
        let meta = Meta {
            limits: MetaLimits {
                maxskipped: 3,
                ..MetaLimits::default()
            },
            ..Meta::default()
        };
        assert_eq!(skipped(&g), 0);
        assert!(!too_many_skipped(&g, &meta));
        g.add_missed(1, 2); // 3 skipped: exactly the limit is still allowed
        assert_eq!(skipped(&g), 3);
        assert!(!too_many_skipped(&g, &meta));
        g.add_missed(0, 1);
        assert!(too_many_skipped(&g, &meta));
        // The metadata carries the limit through encode/decode.
        let back = Meta::decode(&meta.encode()).unwrap();
        assert_eq!(back.limits.maxskipped, 3);
    }
}
