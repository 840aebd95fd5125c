//! The REPL's live session: the session mapping (output ring, globals area
//! with the module table of `ptap_rt_core::script::control`), the target, the
//! modules loaded into ptap (begin/end/timer probes) and into the target
//! (through the table), and the rendering of what the handlers write.
//!
//! Nothing here prints: output is collected ([`Live::take_output`]) and
//! printed by the caller once the session's lock is released (the line
//! editor's printer may block until the editor reads it).

use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ptap_compiler::codegen::host;
use ptap_compiler::output::{render_record, Rendered};
use ptap_lang::printf::Format;
use ptap_rt_core::script::control::{self, Table, OFF, ON};
use ptap_rt_core::script::ctx::ProbeCtx;
use ptap_rt_core::script::globals::{self, Globals};
use ptap_rt_core::script::load::LoadedModule;
use ptap_rt_core::script::meta::{Meta, PointKind};
use ptap_rt_core::session::{Session, REC_DIAG, REC_FORMAT, REC_TEXT};

use crate::load::{self, OwnedSession, RuntimeSnapshot};
use crate::target::Target;

/// Default size of the globals area (`PTAP_REPL_GLOBALS_MB`): address
/// space, not memory (untouched pages of the memfd cost nothing).
pub const DEFAULT_GLOBALS_MB: u64 = 256;

/// How long ptap waits for the session's processes to apply a change.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// A module of the session.
pub struct Module {
    pub id: u32,
    /// Its slot in the table (None: nothing in the target).
    pub slot: Option<usize>,
    pub on: bool,
    pub points: Vec<String>,
    /// The same module loaded into ptap (begin/end/timer handlers).
    pub ptap: LoadedModule,
    pub probe_base: u32,
    pub path: PathBuf,
    /// Handler runs in ptap (begin/timer).
    pub ptap_hits: u64,
    /// Armed system-wide (perf events) instead of in the target.
    pub wide: Option<crate::systemwide::live::LiveModule>,
}

/// One row of `:list`.
pub struct Row {
    pub id: u32,
    pub points: String,
    pub placement: String,
    pub hits: u64,
    pub on: bool,
}

pub struct Live {
    pub owned: OwnedSession,
    pub g: Globals,
    table_off: usize,
    mapped: usize,
    snap: Option<RuntimeSnapshot>,
    pub target: Option<Target>,
    pub modules: Vec<Module>,
    next_id: u32,
    render_meta: Meta,
    formats: Vec<Format>,
    /// (module id, probe, point, period, next due)
    timers: Vec<(u32, usize, usize, Duration, Instant)>,
    out: String,
    err: String,
    /// exit() was called by a handler.
    pub exit_seen: bool,
    /// The session has ended (end probes ran): its exit status.
    pub finished: Option<i32>,
    /// The session's globals (flags of the declarations typed, not of the
    /// expressions evaluated), for the report at the end.
    pub globals_meta: Meta,
    /// `-f json`: records, globals and the summary as JSON lines.
    pub json: bool,
    /// The session's globals and mapping for system-wide modules' handlers
    /// (made once, the first time: two small handles that live as long as
    /// ptap, since the runners borrow them for good).
    wide_refs: Option<(&'static Globals, &'static Session)>,
    /// What system-wide modules lost, closed ones included: (kernel
    /// records lost to full rings, failed reads of sampled processes).
    wide_losses: (u64, u64),
}

impl Live {
    /// A new session: control block, ring, then a globals area of
    /// `globals_mb` MiB that starts with the module table. `pid`: the
    /// process `-x` attaches to (its session file is made for its user).
    pub fn new(globals_mb: u64, pid: Option<i32>) -> anyhow::Result<Live> {
        let ring = load::ring_size_from_env()?;
        let area = globals_mb
            .checked_mul(1 << 20)
            .context("PTAP_REPL_GLOBALS_MB is too large")?;
        let at = globals::offset_in_session(ring);
        let len = at + area as usize;
        let owned = OwnedSession::create_for(ring, len, pid)?;
        // SAFETY: the mapping is `len` bytes: the globals area follows the ring.
        let g = unsafe { host::globals_of(&owned.session) };
        g.init(area, 0);
        let installed = load::runtime_path()?;
        let snap = RuntimeSnapshot::new_for(&installed, true)?;
        let dir = snap
            .path
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        if dir.len() >= control::DIR_LEN {
            return Err(anyhow!("the temporary directory path {dir} is too long"));
        }
        let table_off = globals::HEADER_SIZE;
        // SAFETY: the area is `area` bytes, far more than the table; 64-aligned.
        unsafe { Table::init(&g, table_off, &dir) };
        Ok(Live {
            owned,
            g,
            table_off,
            mapped: area as usize,
            snap: Some(snap),
            target: None,
            modules: Vec::new(),
            next_id: 1,
            render_meta: Meta::default(),
            formats: Vec::new(),
            timers: Vec::new(),
            out: String::new(),
            err: String::new(),
            exit_seen: false,
            globals_meta: Meta::default(),
            finished: None,
            json: false,
            wide_refs: None,
            wide_losses: (0, 0),
        })
    }

    /// The runtime snapshot the session's processes load (its directory
    /// holds the module files).
    pub fn runtime(&self) -> PathBuf {
        self.snap
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> Option<&RuntimeSnapshot> {
        self.snap.as_ref()
    }

    /// Write a module into the session's private directory (readable by
    /// the target: see docs/security.md).
    pub fn write_module(&self, name: &str, object: &[u8]) -> anyhow::Result<PathBuf> {
        let snap = self
            .snap
            .as_ref()
            .context("the session has no private directory")?;
        snap.dir.write(name, object)
    }

    /// Wait (bounded) until `pid` has joined the session and applied the
    /// table, or has exited.
    pub fn wait_joined(&mut self, pid: i32) {
        let gen = self.table().gen.load(Ordering::Acquire);
        let t0 = Instant::now();
        while t0.elapsed() < SYNC_TIMEOUT {
            let c = self.owned.session.control();
            let joined = c.pids.iter().enumerate().any(|(i, p)| {
                p.load(Ordering::Acquire) == pid
                    && self.table().acks[i].load(Ordering::Acquire) >= gen
            });
            if joined || !alive(pid) {
                break;
            }
            self.drain();
            std::thread::sleep(Duration::from_micros(200));
        }
        self.drain();
    }

    /// Where module globals may start (after the header and the table).
    pub fn globals_start(&self) -> u64 {
        (self.table_off + control::TABLE_SIZE) as u64
    }

    pub fn area_size(&self) -> u64 {
        self.mapped as u64
    }

    fn table(&self) -> &Table {
        // Set up by `new`: always there.
        Table::of(&self.g, self.mapped).expect("the session's module table")
    }

    /// Collected output (stdout, stderr) since the last call.
    pub fn take_output(&mut self) -> (String, String) {
        (std::mem::take(&mut self.out), std::mem::take(&mut self.err))
    }

    pub fn say(&mut self, s: &str) {
        self.err.push_str(s);
    }

    pub fn print(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Records are rendered with every format, location and probe of the session.
    pub fn set_render(&mut self, meta: Meta, formats: Vec<Format>) {
        self.render_meta = meta;
        self.formats = formats;
    }

    /// Read the output ring.
    pub fn drain(&mut self) -> usize {
        let s = self.owned.session;
        let (meta, formats, json) = (&self.render_meta, &self.formats, self.json);
        let (out, err) = (&mut self.out, &mut self.err);
        s.drain(|kind, payload| route(meta, formats, json, out, err, kind, payload))
    }

    /// Processes of the session that have not applied generation `gen`.
    fn pending(&self, gen: u64) -> Vec<i32> {
        let c = self.owned.session.control();
        let t = self.table();
        let mut v = Vec::new();
        for (i, p) in c.pids.iter().enumerate() {
            let pid = p.load(Ordering::Acquire);
            if pid != 0 && alive(pid) && t.acks[i].load(Ordering::Acquire) < gen {
                v.push(pid);
            }
        }
        v
    }

    /// Publish a change of the table and wait until every live process of
    /// the session has applied it.
    fn sync(&mut self) -> anyhow::Result<()> {
        let gen = self.table().gen.fetch_add(1, Ordering::AcqRel) + 1;
        wake(&self.owned.session);
        let t0 = Instant::now();
        loop {
            let left = self.pending(gen);
            if left.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > SYNC_TIMEOUT {
                return Err(anyhow!(
                    "process(es) {left:?} did not apply the change within {} s",
                    SYNC_TIMEOUT.as_secs()
                ));
            }
            self.drain();
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Pids of the session's live processes.
    pub fn pids(&self) -> Vec<i32> {
        self.owned
            .session
            .pids()
            .into_iter()
            .filter(|&p| alive(p))
            .collect()
    }

    /// Add module `object` (metadata `meta`): loaded into ptap, and into
    /// the target processes through the table when it has points there.
    /// Returns its id. On Err nothing of it stays.
    /// `wide`: arm its target points system-wide (perf events) instead.
    pub fn add_module(
        &mut self,
        object: &[u8],
        meta: &Meta,
        probe_base: u32,
        in_target: bool,
        wide: bool,
    ) -> anyhow::Result<u32> {
        let ptap = ptap_rt_core::script::load::load(object)?;
        let mut slot = None;
        let mut path = PathBuf::new();
        let mut armed_wide = None;
        if in_target && wide {
            let (g, s) = *self.wide_refs.get_or_insert_with(|| {
                (
                    Box::leak(Box::new(self.g)) as &'static Globals,
                    Box::leak(Box::new(self.owned.session)) as &'static Session,
                )
            });
            armed_wide = Some(crate::systemwide::live::LiveModule::arm(
                meta, &ptap, object, probe_base, g, s,
            )?);
        }
        let id = self.next_id;
        self.next_id += 1;
        if in_target && !wide {
            path = self.write_module(&format!("repl-{id}.o"), object)?;
            let t = self.table();
            let free = t
                .slots
                .iter()
                .position(|s| s.id.load(Ordering::Acquire) == 0)
                .ok_or_else(|| {
                    anyhow!(
                        "the session has {} modules: delete one first",
                        control::MAX_MODULES
                    )
                })?;
            let s = &t.slots[free];
            for c in [&s.failed, &s.armed, &s.jump, &s.trap, &s.sys] {
                c.store(0, Ordering::Relaxed);
            }
            s.hits.store(0, Ordering::Relaxed);
            s.probe_base.store(probe_base, Ordering::Relaxed);
            s.state.store(ON, Ordering::Relaxed);
            s.id.store(id, Ordering::Release);
            slot = Some(free);
            let r = self.sync();
            let (failed, armed) = (
                s_load(&self.table().slots[free].failed),
                s_load(&self.table().slots[free].armed),
            );
            let target_failed = failed > 0 && armed == 0;
            if r.is_err() || target_failed {
                self.drain();
                self.free_slot(free);
                let _ = self.sync();
                let _ = std::fs::remove_file(&path);
                return Err(match r {
                    Err(e) => e,
                    Ok(()) => anyhow!("the probe could not be armed in the target (see above)"),
                });
            }
        }
        let points = meta
            .probes
            .iter()
            .flat_map(|p| p.points.iter().map(|q| q.text.clone()))
            .collect();
        for (pi, p) in meta.probes.iter().enumerate() {
            for (qi, q) in p.points.iter().enumerate() {
                if let PointKind::Timer(ns) = q.kind {
                    let period = Duration::from_nanos(ns.max(1));
                    self.timers
                        .push((id, pi, qi, period, Instant::now() + period));
                }
            }
        }
        self.modules.push(Module {
            id,
            slot,
            on: true,
            points,
            ptap,
            probe_base,
            path,
            ptap_hits: 0,
            wide: armed_wide,
        });
        Ok(id)
    }

    fn free_slot(&mut self, i: usize) {
        let s = &self.table().slots[i];
        s.state.store(control::FREE, Ordering::Relaxed);
        s.id.store(0, Ordering::Release);
    }

    /// Run the begin / end / one timer point of module `id` in ptap.
    pub fn run_in_ptap(&mut self, id: u32, which: host::Which) {
        let Some(i) = self.modules.iter().position(|m| m.id == id) else {
            return;
        };
        let ran = run_probes(&self.modules[i], &self.owned.session, &self.g, which);
        self.modules[i].ptap_hits += ran as u64;
        self.drain();
    }

    /// Run a one-off module (a typed expression) as a begin probe.
    pub fn eval(&mut self, object: &[u8], probe_base: u32) -> anyhow::Result<()> {
        let m = Module {
            id: 0,
            slot: None,
            on: true,
            points: Vec::new(),
            ptap: ptap_rt_core::script::load::load(object)?,
            probe_base,
            path: PathBuf::new(),
            ptap_hits: 0,
            wide: None,
        };
        run_probes(&m, &self.owned.session, &self.g, host::Which::Begin);
        self.drain();
        Ok(())
    }

    /// Delete module `id`: out of every process (live unpatching; each
    /// frees the code after a grace period), then out of ptap.
    pub fn delete(&mut self, id: u32) -> anyhow::Result<()> {
        let i = self
            .modules
            .iter()
            .position(|m| m.id == id)
            .with_context(|| format!("no probe {id} (see :list)"))?;
        if let Some(slot) = self.modules[i].slot {
            self.free_slot(slot);
            self.sync()?;
            let _ = std::fs::remove_file(&self.modules[i].path);
        }
        self.timers.retain(|t| t.0 != id);
        let m = self.modules.remove(i);
        if let Some(w) = m.wide {
            self.close_wide(w);
        }
        self.drain();
        Ok(())
    }

    /// Close system-wide module `w`: what its rings hold is handled first.
    fn close_wide(&mut self, w: crate::systemwide::live::LiveModule) {
        let s = self.owned.session;
        let (meta, formats, json) = (&self.render_meta, &self.formats, self.json);
        let (out, err) = (&mut self.out, &mut self.err);
        let losses = w.close(&mut || {
            s.drain(|kind, payload| route(meta, formats, json, out, err, kind, payload));
        });
        self.wide_losses.0 += losses.lost;
        self.wide_losses.1 += losses.failed_reads;
    }

    /// Handle what the kernel wrote for the system-wide modules.
    fn drain_wide(&mut self) {
        let s = self.owned.session;
        let (meta, formats, json) = (&self.render_meta, &self.formats, self.json);
        let (out, err) = (&mut self.out, &mut self.err);
        for m in self.modules.iter_mut() {
            if let Some(w) = m.wide.as_mut() {
                w.drain(&mut || {
                    s.drain(|kind, payload| route(meta, formats, json, out, err, kind, payload));
                });
            }
        }
    }

    /// Turn module `id` off (unloaded from the processes, kept by ptap)
    /// or on again.
    pub fn set_on(&mut self, id: u32, on: bool) -> anyhow::Result<()> {
        let i = self
            .modules
            .iter()
            .position(|m| m.id == id)
            .with_context(|| format!("no probe {id} (see :list)"))?;
        if self.modules[i].on == on {
            return Ok(());
        }
        self.modules[i].on = on;
        if let Some(w) = &self.modules[i].wide {
            w.set_on(on)?;
        }
        if let Some(slot) = self.modules[i].slot {
            let s = &self.table().slots[slot];
            if on {
                for c in [&s.failed, &s.armed, &s.jump, &s.trap, &s.sys] {
                    c.store(0, Ordering::Relaxed);
                }
            }
            s.state.store(if on { ON } else { OFF }, Ordering::Release);
            self.sync()?;
        }
        self.drain();
        Ok(())
    }

    /// The modules, for `:list`.
    pub fn rows(&self) -> Vec<Row> {
        let t = self.table();
        self.modules
            .iter()
            .map(|m| {
                let (hits, placement) = match m.slot {
                    Some(i) => {
                        let s = &t.slots[i];
                        let (j, tr, sy, armed) = (
                            s_load(&s.jump),
                            s_load(&s.trap),
                            s_load(&s.sys),
                            s_load(&s.armed),
                        );
                        let mut p: Vec<String> = Vec::new();
                        if j > 0 {
                            p.push(format!("jump{}", count_suffix(j)));
                        }
                        if tr > 0 {
                            p.push(format!("trap{}", count_suffix(tr)));
                        }
                        if sy > 0 {
                            p.push(format!("syscall{}", count_suffix(sy)));
                        }
                        let placement = if !m.on {
                            "disabled".to_string()
                        } else if armed == 0 {
                            "not armed (no process)".to_string()
                        } else {
                            p.join("+")
                        };
                        (s.hits.load(Ordering::Relaxed) + m.ptap_hits, placement)
                    }
                    None => match &m.wide {
                        Some(w) if !m.on => (w.hits() + m.ptap_hits, "disabled".to_string()),
                        Some(w) => (
                            w.hits() + m.ptap_hits,
                            format!("system-wide ({} events)", w.events()),
                        ),
                        None => (m.ptap_hits, "in ptap".to_string()),
                    },
                };
                Row {
                    id: m.id,
                    points: m.points.join(", "),
                    placement,
                    hits,
                    on: m.on,
                }
            })
            .collect()
    }

    /// Read the ring, run due timers, notice the target's exit and exit().
    pub fn pump(&mut self) {
        self.drain_wide();
        self.drain();
        let now = Instant::now();
        let mut due = Vec::new();
        for t in self.timers.iter_mut() {
            if now >= t.4 {
                due.push((t.0, t.1, t.2));
                while t.4 <= now {
                    t.4 += t.3;
                }
            }
        }
        for (id, p, q) in due {
            if self.modules.iter().any(|m| m.id == id && m.on) {
                self.run_in_ptap(id, host::Which::Timer(p, q));
            }
        }
        if let Some(t) = self.target.as_mut() {
            if let Ok(Some(st)) = t.try_wait() {
                let pid = t.id();
                let how = exit_text(st);
                self.drain();
                self.err
                    .push_str(&format!("ptap: the target (pid {pid}) {how}\n"));
                self.target = None;
            }
        }
        if !self.exit_seen && host::exit_requested(&self.g) {
            self.exit_seen = true;
        }
    }

    /// Ask every process to detach (probes out, the processes go on); the
    /// session can then take another target.
    pub fn detach(&mut self) {
        let s = self.owned.session;
        let mut buf = (String::new(), String::new());
        {
            let meta = &self.render_meta;
            let formats = &self.formats;
            let json = self.json;
            let mut drain = || {
                s.drain(|kind, payload| {
                    route(meta, formats, json, &mut buf.0, &mut buf.1, kind, payload)
                });
            };
            load::detach(&s, &mut drain);
        }
        self.out.push_str(&buf.0);
        self.err.push_str(&buf.1);
        self.drain();
        // Ready for another target: the table is applied again by the
        // next process that joins.
        s.control().detach.store(0, Ordering::SeqCst);
        for a in &self.table().acks {
            a.store(0, Ordering::Relaxed);
        }
        let t = self.table();
        for s in &t.slots {
            for c in [&s.failed, &s.armed, &s.jump, &s.trap, &s.sys] {
                c.store(0, Ordering::Relaxed);
            }
        }
        self.target = None;
    }

    /// The globals in the end-of-run format (all of them: `:globals`).
    pub fn globals_text(&self, meta: &Meta) -> String {
        let mut m = meta.clone();
        for g in m.globals.iter_mut() {
            g.written = true;
            g.read = false;
        }
        self.unread_text(&m)
    }

    /// The globals `meta` says were written and never read, as text or
    /// JSON lines.
    pub fn unread_text(&self, meta: &Meta) -> String {
        if self.json {
            crate::json::unread_globals(meta, &self.g)
        } else {
            host::unread_globals(meta, &self.g)
        }
    }

    /// Run every module's end probes (in order), then the summary.
    pub fn finish(&mut self) {
        // System-wide events stop first; their last records are handled.
        let wide: Vec<_> = self
            .modules
            .iter_mut()
            .filter_map(|m| m.wide.take())
            .collect();
        for w in wide {
            self.close_wide(w);
        }
        let ids: Vec<u32> = self.modules.iter().map(|m| m.id).collect();
        for id in ids {
            self.run_in_ptap(id, host::Which::End);
        }
        self.drain();
    }

    /// The end-of-session summary: text (for stderr), or with `-f json`
    /// the summary line (for stdout, always last).
    pub fn summary(&self) -> String {
        let (lost, failed) = self.wide_losses;
        let mut warnings = Vec::new();
        if lost > 0 {
            warnings.push(format!(
                "WARNING: Kernel records lost (full perf ring per CPU; raise PTAP_PERF_PAGES): {lost}"
            ));
        }
        if failed > 0 {
            warnings.push(format!(
                "WARNING: Reads of sampled processes that failed (the process had exited or the address was unmapped): {failed}"
            ));
        }
        if self.json {
            let mut text: String = warnings.iter().map(|w| crate::json::warning(w)).collect();
            text.push_str(&crate::json::summary(&self.g, self.owned.session.dropped()));
            text
        } else {
            let mut text = host::summary(&self.g, &self.owned.session);
            for w in warnings {
                text.push_str(&w);
                text.push('\n');
            }
            text
        }
    }

    pub fn errors(&self) -> u64 {
        host::errors(&self.g)
    }
}

/// One record of the ring: output to `out`, messages to `err`; with
/// `-f json` everything as JSON lines to `out` (as a script's session).
fn route(
    meta: &Meta,
    formats: &[Format],
    json: bool,
    out: &mut String,
    err: &mut String,
    kind: u16,
    payload: &[u8],
) {
    if json {
        out.push_str(&match kind {
            REC_FORMAT => crate::json::record_with(|p| render_record(meta, formats, p), payload),
            REC_TEXT => crate::json::text(false, payload),
            _ => crate::json::text(true, payload),
        });
        return;
    }
    match kind {
        REC_FORMAT => match render_record(meta, formats, payload) {
            Rendered::Out(t) => out.push_str(&t),
            Rendered::Raw(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Rendered::Error(t) | Rendered::Warning(t) => err.push_str(&t),
        },
        REC_TEXT => out.push_str(&String::from_utf8_lossy(payload)),
        REC_DIAG => err.push_str(&String::from_utf8_lossy(payload)),
        k => err.push_str(&format!("ptap: unknown record kind {k}\n")),
    }
}

fn count_suffix(n: u32) -> String {
    if n > 1 {
        format!("×{n}")
    } else {
        String::new()
    }
}

fn s_load(a: &std::sync::atomic::AtomicU32) -> u32 {
    a.load(Ordering::Acquire)
}

pub fn exit_text(st: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.and_then(|s| s.code()), st.and_then(|s| s.signal())) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

/// Is `pid` a live process (not a zombie)?
fn alive(pid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    s.rsplit_once(") ")
        .and_then(|(_, r)| r.chars().next())
        .is_some_and(|st| st != 'Z' && st != 'X')
}

/// Wake the control threads of the session's processes.
fn wake(s: &Session) {
    // SAFETY: FUTEX_WAKE on the futex word inside the shared mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            s.control().detach.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0,
            0,
            0,
        );
    }
}

/// Run `which` of module `m` in ptap; returns how many handlers ran.
fn run_probes(m: &Module, s: &Session, g: &Globals, which: host::Which) -> usize {
    let meta = &m.ptap.meta;
    let mut ran = 0;
    for (pi, p) in meta.probes.iter().enumerate() {
        for (qi, pt) in p.points.iter().enumerate() {
            let hit = match which {
                host::Which::Begin => pt.kind == PointKind::Begin,
                host::Which::End => pt.kind == PointKind::End,
                host::Which::Timer(a, b) => (a, b) == (pi, qi),
            };
            if !hit {
                continue;
            }
            let Some(h) = m.ptap.handler(pi) else {
                continue;
            };
            let maxaction = i64::try_from(meta.limits.maxaction).unwrap_or(i64::MAX);
            let mut ctx = ProbeCtx::new(std::ptr::null_mut(), g.base(), s.base(), maxaction);
            ctx.probe = m.probe_base + pi as u32;
            ctx.point = qi as u32;
            ctx.pp = pt.text.as_ptr();
            ctx.pp_len = pt.text.len() as u64;
            // SAFETY: a handler of a module compiled for this session's
            // globals; ctx points to the live session; begin/end/timer
            // probes read no registers.
            unsafe { ptap_rt_core::script::run_handler(h, &mut ctx) };
            ran += 1;
        }
    }
    ran
}
