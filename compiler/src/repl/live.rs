//! The REPL's live session: the session mapping (output ring, globals area
//! with the module table of `ptap_rt_core::script::control`), the target, the
//! modules loaded into ptap (begin/end/timer probes) and into the target
//! (through the table). The session loop of `event_loop.rs` drives it one
//! round at a time ([`Live::pump`]), with the modules as its [`Driven`] side.
//!
//! Nothing here prints: the loop's [`Sink`] collects the output
//! ([`Live::take_output`]), printed by the caller once the session's lock is
//! released (the line editor's printer may block until the editor reads it).

use anyhow::{anyhow, Context};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ptap_compiler::codegen::host;
use ptap_compiler::output::render_record;
use ptap_lang::printf::Format;
use ptap_rt_core::script::control::{self, Table, OFF, ON};
use ptap_rt_core::script::globals::{self, Globals};
use ptap_rt_core::script::load::LoadedModule;
use ptap_rt_core::script::meta::Meta;
use ptap_rt_core::session::Session;

use crate::event_loop::{Driven, Loop, Out, Round, Sink, Stop, Timer};
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
    /// The session loop's state: the modules' timer probes.
    rounds: Loop,
    /// Where the loop renders records: buffers, printed by the caller;
    /// with `-f json`, records, globals and the summary as JSON lines.
    sink: Sink,
    /// A reason to end the session the loop reported (exit(), Ctrl-C):
    /// without a terminal the session ends at once, else at the next line.
    pub stop: Option<Stop>,
    /// The session has ended (end probes ran): its exit status.
    pub finished: Option<i32>,
    /// The session's globals (flags of the declarations typed, not of the
    /// expressions evaluated), for the report at the end.
    pub globals_meta: Meta,
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
    /// `json`: `-f json`.
    pub fn new(globals_mb: u64, pid: Option<i32>, json: bool) -> anyhow::Result<Live> {
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
            // The REPL's -T bounds `:wait`, not the session.
            rounds: Loop::new(None),
            sink: Sink::new(Out::Buffer(Vec::new()), Out::Buffer(Vec::new()), json),
            stop: None,
            globals_meta: Meta::default(),
            finished: None,
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
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (text(self.sink.out.take()), text(self.sink.err.take()))
    }

    pub fn say(&mut self, s: &str) {
        let _ = self.sink.err.write_all(s.as_bytes());
    }

    /// Records are rendered with every format, location and probe of the session.
    pub fn set_render(&mut self, meta: Meta, formats: Vec<Format>) {
        self.render_meta = meta;
        self.formats = formats;
    }

    /// Read the output ring.
    pub fn drain(&mut self) -> usize {
        drain_into(
            &mut self.sink,
            &self.owned.session,
            &self.render_meta,
            &self.formats,
        )
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
        self.rounds.add_timers(id, meta);
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

    /// Run the begin / end probes of module `id` in ptap.
    pub fn run_in_ptap(&mut self, id: u32, which: host::Which) {
        run_module(&mut self.modules, id, &self.owned.session, &self.g, which);
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
        self.rounds.remove_timers(id);
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
        let (meta, formats, sink) = (&self.render_meta, &self.formats, &mut self.sink);
        let losses = w.close(&mut || {
            drain_into(sink, &s, meta, formats);
        });
        self.wide_losses.0 += losses.lost;
        self.wide_losses.1 += losses.failed_reads;
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

    /// One round of the session loop: the system-wide modules' samples,
    /// the ring, the reasons to stop, the due timers. The target's exit is
    /// told and the session goes on; another reason is kept in `stop`.
    pub fn pump(&mut self) {
        let s = self.owned.session;
        let mut side = Side {
            modules: &mut self.modules,
            meta: &self.render_meta,
            formats: &self.formats,
            g: &self.g,
        };
        let target = self.target.as_mut();
        match self.rounds.step(&s, &mut side, &mut self.sink, target) {
            Ok(Round::Handled(_)) => {}
            Ok(Round::Stop(Stop::TargetExited(st))) => {
                let pid = self.target.as_ref().map_or(0, Target::id);
                self.say(&format!("ptap: {}\n", crate::target::exit_text(pid, st)));
                self.target = None;
            }
            Ok(Round::Stop(stop)) => {
                self.stop.get_or_insert(stop);
            }
            Err(e) => {
                // Its exit cannot be watched: the session goes on without it.
                self.say(&format!("ptap: the target: {e:#}\n"));
                self.target = None;
            }
        }
    }

    /// Ask every process to detach (probes out, the processes go on); the
    /// session can then take another target.
    pub fn detach(&mut self) {
        let s = self.owned.session;
        let (meta, formats, sink) = (&self.render_meta, &self.formats, &mut self.sink);
        load::detach(&s, &mut || {
            drain_into(sink, &s, meta, formats);
        });
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
        if self.sink.json {
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

    /// The end of the session's report: the globals written and never
    /// read, the summary, what system-wide modules lost, the runtime
    /// messages held back.
    pub fn report_end(&mut self) {
        let (lost, failed) = self.wide_losses;
        let warnings = crate::systemwide::loss_warnings(lost, failed, None);
        let s = self.owned.session;
        self.sink
            .report_end(&self.globals_meta, &self.g, &s, &warnings);
    }

    pub fn errors(&self) -> u64 {
        host::errors(&self.g)
    }
}

/// Drain the ring into `sink`, rendered with every format, location and
/// probe of the session.
fn drain_into(sink: &mut Sink, s: &Session, meta: &Meta, formats: &[Format]) -> usize {
    sink.drain_with(s, Some(&|p: &[u8]| render_record(meta, formats, p)))
}

/// The modules as the session loop drives them.
struct Side<'a> {
    modules: &'a mut [Module],
    meta: &'a Meta,
    formats: &'a [Format],
    g: &'a Globals,
}

impl Driven for Side<'_> {
    fn drain(&self, s: &Session, sink: &mut Sink) -> usize {
        drain_into(sink, s, self.meta, self.formats)
    }

    /// What the kernel wrote for the system-wide modules.
    fn poll(&mut self, s: &Session, sink: &mut Sink) -> usize {
        let (meta, formats) = (self.meta, self.formats);
        let mut n = 0;
        for w in self.modules.iter_mut().filter_map(|m| m.wide.as_mut()) {
            n += w.drain(&mut || {
                drain_into(sink, s, meta, formats);
            });
        }
        n
    }

    fn globals(&self) -> Option<&Globals> {
        Some(self.g)
    }

    fn run_timer(&mut self, t: &Timer, s: &Session) -> usize {
        if !self.modules.iter().any(|m| m.id == t.module && m.on) {
            return 0;
        }
        let which = host::Which::Timer(t.probe, t.point);
        run_module(self.modules, t.module, s, self.g, which)
    }
}

/// Run `which` of module `id` in ptap; returns how many handlers ran.
fn run_module(
    modules: &mut [Module],
    id: u32,
    s: &Session,
    g: &Globals,
    which: host::Which,
) -> usize {
    let Some(m) = modules.iter_mut().find(|m| m.id == id) else {
        return 0;
    };
    let ran = run_probes(m, s, g, which);
    m.ptap_hits += ran as u64;
    ran
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
    host::run_probes_from(m.probe_base, meta, |i| m.ptap.handler(i), which, s, g).ran
}
