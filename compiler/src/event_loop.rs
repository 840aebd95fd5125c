//! The one session loop, shared by `ptap SCRIPT` / `-e` (with -c, -x or
//! system-wide), `ptap run NAME.o`, `ptap load MODULE.so` and the REPL.
//!
//! Every round ([`Loop::step`]) it polls what feeds the session besides
//! the output ring (the perf rings of system-wide probes), drains the ring
//! through the [`Sink`], checks the reasons to stop (the target exited,
//! Ctrl-C, `exit()`, `-T`, MAXERRORS, MAXSKIPPED, or a target that could
//! not arm its probes) and runs the due timer probes. What differs between
//! sessions is the [`Driven`] side: a compiled script, a C module's
//! session (nothing to render or run), or the REPL's changing set of
//! modules. [`session_loop`] runs rounds until the first reason to stop;
//! the REPL's pump thread runs one round at a time under its lock. What
//! happens before (starting or attaching) and after (detaching, end
//! probes, [`Sink::report_end`]) is the caller's.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ptap_compiler::codegen::host::{self, Program, Which};
use ptap_compiler::output::Rendered;
use ptap_rt_core::script::attach;
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::meta::Meta;
use ptap_rt_core::session::{Session, REC_DIAG, REC_FORMAT, REC_TEXT};

use crate::target::Target;

/// One of a [`Sink`]'s streams: a writer (stdout, `-o FILE`, stderr), or
/// a buffer that the REPL prints from once its lock is released (its line
/// editor's printer may block).
pub(crate) enum Out {
    Stream(Box<dyn Write + Send>),
    Buffer(Vec<u8>),
}

impl Out {
    /// What the buffer holds (nothing for a stream), emptying it.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        match self {
            Out::Stream(_) => Vec::new(),
            Out::Buffer(b) => std::mem::take(b),
        }
    }
}

impl Out {
    /// `Write::flush`, callable where `Write` is not imported (as on the
    /// `Box<dyn Write>` this replaced).
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(self)
    }
}

/// A stream of the session's output was closed by its reader (`ptap ... |
/// head`): the session stops, as after Ctrl-C (nobody reads what it would
/// print).
static OUTPUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn note_closed<T>(r: std::io::Result<T>) -> std::io::Result<T> {
    if let Err(e) = &r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            OUTPUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
    r
}

/// Has a reader closed the output (a broken pipe)?
pub(crate) fn output_closed() -> bool {
    OUTPUT_CLOSED.load(Ordering::Relaxed)
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Stream(w) => note_closed(w.write(buf)),
            Out::Buffer(b) => b.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stream(w) => note_closed(w.write_all(buf)),
            Out::Buffer(b) => b.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stream(w) => note_closed(w.flush()),
            Out::Buffer(_) => Ok(()),
        }
    }
}

/// How a formatted record reads: the formats of the session's code.
pub(crate) type Render<'a> = &'a dyn Fn(&[u8]) -> Rendered;

/// Where rendered output goes.
pub(crate) struct Sink {
    /// Records: stdout, `-o FILE`, or the REPL's buffer.
    pub(crate) out: Out,
    /// Runtime messages and rendering errors: stderr, or the REPL's buffer.
    pub(crate) err: Out,
    /// `-f json`: everything goes to `out` as JSON lines.
    pub(crate) json: bool,
    /// Identical runtime messages are shown a few times, then counted.
    pub(crate) diags: crate::checks::DiagFilter,
}

impl Sink {
    /// The session's output: `-o FILE` or stdout, text or `-f json`.
    pub(crate) fn open(output: Option<&Path>, json: bool) -> anyhow::Result<Sink> {
        OUTPUT_CLOSED.store(false, Ordering::Relaxed);
        let out: Box<dyn Write + Send> = match output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("{}", p.display()))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        Ok(Sink::new(
            Out::Stream(out),
            Out::Stream(Box::new(std::io::stderr())),
            json,
        ))
    }

    pub(crate) fn new(out: Out, err: Out, json: bool) -> Sink {
        Sink {
            out,
            err,
            json,
            diags: Default::default(),
        }
    }

    /// Write out what the ring holds, rendered with `prog`'s formats; a C
    /// module (`ptap load`) writes no formatted records, so they are only
    /// counted there.
    pub(crate) fn drain(&mut self, s: &Session, prog: Option<&Program>) -> usize {
        match prog {
            Some(p) => self.drain_with(s, Some(&|b: &[u8]| p.render(b))),
            None => self.drain_with(s, None),
        }
    }

    /// Write out what the ring holds; `render` renders the formatted
    /// records (the REPL's: with the formats of all its modules).
    pub(crate) fn drain_with(&mut self, s: &Session, render: Option<Render>) -> usize {
        let (out, err, diags) = (&mut self.out, &mut self.err, &mut self.diags);
        if let (true, Some(render)) = (self.json, render) {
            return s.drain(|kind, payload| {
                let line = match kind {
                    REC_FORMAT => crate::json::record_with(render, payload),
                    REC_TEXT => crate::json::text(false, payload),
                    _ => crate::json::text(true, payload),
                };
                let _ = out.write_all(line.as_bytes());
            });
        }
        // Messages go to `err`, after what `out` holds.
        fn to_err(out: &mut Out, err: &mut Out, b: &[u8]) {
            let _ = out.flush();
            let _ = err.write_all(b);
        }
        s.drain(|kind, payload| match (kind, render) {
            (REC_FORMAT, Some(render)) => match render(payload) {
                Rendered::Out(t) => {
                    let _ = out.write_all(t.as_bytes());
                }
                Rendered::Raw(b) => {
                    let _ = out.write_all(&b);
                }
                Rendered::Error(t) | Rendered::Warning(t) => to_err(out, err, t.as_bytes()),
            },
            (REC_FORMAT, None) => {
                let _ = writeln!(out, "<binary record of {} bytes>", payload.len());
            }
            (REC_TEXT, _) => {
                let _ = out.write_all(payload);
            }
            (REC_DIAG, _) if diags.pass(payload) => to_err(out, err, payload),
            (REC_DIAG, _) => {}
            (k, _) => to_err(
                out,
                err,
                format!("ptap: unknown record kind {k}\n").as_bytes(),
            ),
        })
    }

    /// The end of a session: the globals `meta` says were written and
    /// never read (to `out`), the summary of what was lost, `warnings` (a
    /// line each) and the runtime messages held back (to `err`); with
    /// `-f json` all but the held-back messages as JSON lines on `out`, the
    /// summary last.
    pub(crate) fn report_end(
        &mut self,
        meta: &Meta,
        g: &Globals,
        s: &Session,
        warnings: &[String],
    ) {
        let text = if self.json {
            let mut text = crate::json::unread_globals(meta, g);
            for w in warnings {
                text.push_str(&crate::json::warning(w));
            }
            text.push_str(&crate::json::summary(g, s.dropped()));
            text
        } else {
            host::unread_globals(meta, g)
        };
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
        if !self.json {
            let _ = self.err.write_all(host::summary(g, s).as_bytes());
            for w in warnings {
                let _ = writeln!(self.err, "{w}");
            }
        }
        for l in self.diags.summary() {
            let _ = writeln!(self.err, "{l}");
        }
    }
}

/// The side of a session that a loop drives and that differs between
/// sessions: how records render, what else feeds the ring, the globals
/// whose header says `exit()`, and how a timer probe runs.
pub(crate) trait Driven {
    /// Drain the ring through `sink` with the session's formats.
    fn drain(&self, s: &Session, sink: &mut Sink) -> usize;
    /// Read what else feeds the session (system-wide probes' perf rings),
    /// draining meanwhile; returns how much was handled.
    fn poll(&mut self, _s: &Session, _sink: &mut Sink) -> usize {
        0
    }
    /// The globals (none for a C module's session).
    fn globals(&self) -> Option<&Globals>;
    /// The limits that end the session (MAXERRORS, MAXSKIPPED); the REPL
    /// has none.
    fn limits(&self) -> Option<&Meta> {
        None
    }
    /// Run timer `timer`; returns how many handlers ran.
    fn run_timer(&mut self, timer: &Timer, s: &Session) -> usize;
}

/// A compiled script's side of a session: its program and globals (timers,
/// `exit()`, error and skip limits). A C module (`ptap load`) has none.
#[derive(Clone, Copy)]
pub(crate) struct Script<'a> {
    pub(crate) prog: &'a Program,
    pub(crate) globals: &'a Globals,
}

/// What the loop watches besides the output ring.
pub(crate) enum Watch<'a> {
    /// Nothing: a script whose probes all run in ptap (begin, timers, end).
    Nothing,
    /// The -c command or the -x process: its exit ends the session.
    Process(&'a mut Target),
    /// System-wide: the perf rings, read every round (returns the number
    /// of samples handled; the closure may render output meanwhile).
    SystemWide(&'a mut dyn FnMut(&mut Sink) -> usize),
}

/// A reason to end a session, as a round of the loop reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stop {
    /// The target exited (its status, when known: an attached process
    /// is not ptap's child).
    TargetExited(Option<std::process::ExitStatus>),
    Interrupted,
    /// The reader of the output went away (a broken pipe).
    OutputClosed,
    ExitCalled,
    Timeout,
    TooManyErrors,
    /// More probe hits skipped than MAXSKIPPED allows.
    TooManySkipped,
    /// The target could not arm its probes and stopped before main.
    ArmFailed,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::TargetExited(_) => "the target exited",
            Stop::Interrupted => "interrupted",
            Stop::OutputClosed => "the output was closed (broken pipe)",
            Stop::ExitCalled => "exit() called",
            Stop::Timeout => "timeout",
            Stop::TooManyErrors => "too many errors",
            Stop::TooManySkipped => "too many skipped probes",
            Stop::ArmFailed => "the target could not arm its probes",
        })
    }
}

pub(crate) fn too_many_errors(g: &Globals, prog: &Program) -> bool {
    over_maxerrors(g, prog.meta())
}

fn over_maxerrors(g: &Globals, meta: &Meta) -> bool {
    host::errors(g) > meta.limits.maxerrors
}

fn arm_failed(g: &Globals) -> bool {
    g.header().exit.load(Ordering::Acquire) == attach::EXIT_ARM_FAILED
}

/// A script's side, as [`session_loop`] drives it.
struct Batch<'a, 'w> {
    script: Option<Script<'a>>,
    rings: Option<&'w mut dyn FnMut(&mut Sink) -> usize>,
}

impl Driven for Batch<'_, '_> {
    fn drain(&self, s: &Session, sink: &mut Sink) -> usize {
        sink.drain(s, self.script.map(|x| x.prog))
    }

    fn poll(&mut self, _s: &Session, sink: &mut Sink) -> usize {
        self.rings.as_mut().map_or(0, |poll| poll(sink))
    }

    fn globals(&self) -> Option<&Globals> {
        self.script.map(|x| x.globals)
    }

    fn limits(&self) -> Option<&Meta> {
        self.script.map(|x| x.prog.meta())
    }

    fn run_timer(&mut self, t: &Timer, s: &Session) -> usize {
        if let Some(Script { prog, globals }) = self.script {
            prog.run(Which::Timer(t.probe, t.point), s, globals);
        }
        1
    }
}

/// Drain, poll, run due timers, and watch for the reasons to stop, until
/// the first one.
pub(crate) fn session_loop(
    s: &Session,
    script: Option<Script>,
    sink: &mut Sink,
    watch: Watch,
    timeout: Option<f64>,
) -> anyhow::Result<Stop> {
    // The perf rings wake nobody: ptap polls them, which costs nothing per
    // event, and a longer nap costs nothing either.
    let (mut target, rings, nap) = match watch {
        Watch::Nothing => (None, None, Duration::from_millis(1)),
        Watch::Process(t) => (Some(t), None, Duration::from_millis(1)),
        Watch::SystemWide(poll) => (None, Some(poll), Duration::from_millis(5)),
    };
    let mut lp = Loop::new(timeout);
    if let Some(x) = script {
        lp.add_timers(0, x.prog.meta());
    }
    let mut side = Batch { script, rings };
    loop {
        match lp.step(s, &mut side, sink, target.as_deref_mut())? {
            Round::Stop(stop) => return Ok(stop),
            Round::Handled(0) => {
                let _ = sink.out.flush();
                std::thread::sleep(lp.nap(nap));
            }
            Round::Handled(_) => {}
        }
    }
}

/// What one round of a [`Loop`] saw.
pub(crate) enum Round {
    /// A reason to stop.
    Stop(Stop),
    /// Records, samples and timer runs handled (0: the loop may nap).
    Handled(usize),
}

/// One timer probe of a session: point `point` of probe `probe` of module
/// `module` (a script is module 0), due every `period`.
pub(crate) struct Timer {
    pub(crate) module: u32,
    pub(crate) probe: usize,
    pub(crate) point: usize,
    period: Duration,
    due: Instant,
}

/// What a session loop keeps between rounds: `-T`, the timer probes, and
/// the reasons to stop it reported already.
pub(crate) struct Loop {
    deadline: Option<Instant>,
    timers: Vec<Timer>,
    /// Reasons reported (besides the target's exit): a batch session stops
    /// at the first, the REPL (which ends at its next line) goes on.
    said: Vec<Stop>,
}

impl Loop {
    /// A loop that ends after `timeout` seconds (`-T`).
    pub(crate) fn new(timeout: Option<f64>) -> Loop {
        Loop {
            deadline: deadline(Instant::now(), timeout),
            timers: Vec::new(),
            said: Vec::new(),
        }
    }

    /// The timer probes of module `module` (metadata `meta`): first due
    /// one period from now.
    pub(crate) fn add_timers(&mut self, module: u32, meta: &Meta) {
        let now = Instant::now();
        for (probe, point, ns) in host::timers(meta) {
            let period = Duration::from_nanos(ns.max(1));
            self.timers.push(Timer {
                module,
                probe,
                point,
                period,
                due: now + period,
            });
        }
    }

    pub(crate) fn remove_timers(&mut self, module: u32) {
        self.timers.retain(|t| t.module != module);
    }

    /// One round: poll and drain, check the reasons to stop (each one
    /// reported once, the target's exit whenever it is seen), run the due
    /// timers.
    pub(crate) fn step(
        &mut self,
        s: &Session,
        side: &mut dyn Driven,
        sink: &mut Sink,
        mut target: Option<&mut Target>,
    ) -> anyhow::Result<Round> {
        let mut n = side.poll(s, sink);
        n += side.drain(s, sink);
        if let Some(stop) = self.first_new(side, target.as_deref_mut())? {
            match stop {
                Stop::ArmFailed => {
                    // Let the target's own report arrive before stopping.
                    if let Some(child) = target.filter(|t| t.is_child()) {
                        let t = Instant::now();
                        while child.try_wait().ok().flatten().is_none()
                            && t.elapsed() < Duration::from_secs(2)
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                Stop::TooManySkipped => {
                    let _ = writeln!(sink.err, "{}", host::TOO_MANY_SKIPPED);
                }
                _ => {}
            }
            // What the target wrote last.
            side.drain(s, sink);
            if !matches!(stop, Stop::TargetExited(_)) {
                self.said.push(stop.clone());
            }
            return Ok(Round::Stop(stop));
        }
        let now = Instant::now();
        let mut ran = 0;
        for t in self.timers.iter_mut() {
            if now >= t.due {
                ran += side.run_timer(t, s);
                // Skip missed periods rather than running them in a burst.
                while t.due <= now {
                    t.due += t.period;
                }
            }
        }
        if ran > 0 {
            n += ran + side.drain(s, sink);
        }
        Ok(Round::Handled(n))
    }

    /// The first reason to stop, in order, not reported before.
    fn first_new(
        &self,
        side: &dyn Driven,
        target: Option<&mut Target>,
    ) -> anyhow::Result<Option<Stop>> {
        let new = |stop: Stop| (!self.said.contains(&stop)).then_some(stop);
        if let Some(g) = side.globals() {
            if arm_failed(g) {
                if let Some(stop) = new(Stop::ArmFailed) {
                    return Ok(Some(stop));
                }
            } else if host::exit_requested(g) {
                if let Some(stop) = new(Stop::ExitCalled) {
                    return Ok(Some(stop));
                }
            }
            if let Some(meta) = side.limits() {
                if over_maxerrors(g, meta) {
                    if let Some(stop) = new(Stop::TooManyErrors) {
                        return Ok(Some(stop));
                    }
                }
                // Skips reach the session when a process unregisters, so
                // this sees those of processes that already detached or
                // exited.
                if host::too_many_skipped(g, meta) {
                    if let Some(stop) = new(Stop::TooManySkipped) {
                        return Ok(Some(stop));
                    }
                }
            }
        }
        if let Some(t) = target {
            if let Some(st) = t.try_wait()? {
                return Ok(Some(Stop::TargetExited(st)));
            }
        }
        if output_closed() {
            if let Some(stop) = new(Stop::OutputClosed) {
                return Ok(Some(stop));
            }
        }
        if interrupted() {
            if let Some(stop) = new(Stop::Interrupted) {
                return Ok(Some(stop));
            }
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(new(Stop::Timeout));
        }
        Ok(None)
    }

    /// How long to nap: at most `max`, and no later than the next timer or
    /// `-T`.
    pub(crate) fn nap(&self, max: Duration) -> Duration {
        let now = Instant::now();
        self.timers
            .iter()
            .map(|t| t.due)
            .chain(self.deadline)
            .map(|t| t.saturating_duration_since(now))
            .fold(max, Duration::min)
    }
}

/// When `-T SECS` (checked by the command line: finite, 0 or more) ends a
/// session started at `start`; None: never (no -T, or beyond what an
/// `Instant` can hold).
pub(crate) fn deadline(start: Instant, secs: Option<f64>) -> Option<Instant> {
    start.checked_add(Duration::try_from_secs_f64(secs?).ok()?)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM and SIGHUP set a flag that [`interrupted`] reads: ptap
/// then detaches cleanly instead of dying with its target still probed.
pub(crate) fn install_interrupt_handlers() {
    // SAFETY: installing a flag-setting handler.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::OwnedSession;

    fn session() -> OwnedSession {
        OwnedSession::create_for(4096, Session::total_size(4096), None).unwrap()
    }

    fn buffered() -> Sink {
        Sink::new(Out::Buffer(Vec::new()), Out::Buffer(Vec::new()), false)
    }

    /// A session, a buffered sink and a side to drive.
    fn parts() -> (OwnedSession, Sink, Counting) {
        (session(), buffered(), Counting::default())
    }

    /// A session side with no globals that counts its timer runs.
    #[derive(Default)]
    struct Counting {
        runs: Vec<u32>,
    }

    impl Driven for Counting {
        fn drain(&self, s: &Session, sink: &mut Sink) -> usize {
            sink.drain(s, None)
        }

        fn globals(&self) -> Option<&Globals> {
            None
        }

        fn run_timer(&mut self, t: &Timer, _s: &Session) -> usize {
            self.runs.push(t.module);
            1
        }
    }

    #[test]
    fn a_buffered_sink_routes_records_and_counts_repeated_messages() {
        let owned = session();
        let s = owned.session;
        for _ in 0..5 {
            assert!(s.write_record(REC_DIAG, &[b"ptap: boom\n"]));
        }
        assert!(s.write_record(REC_TEXT, &[b"hello\n"]));
        let mut sink = buffered();
        assert_eq!(sink.drain(&s, None), 6);
        assert_eq!(sink.out.take(), b"hello\n");
        assert_eq!(sink.err.take(), b"ptap: boom\n".repeat(3));
        assert_eq!(sink.diags.summary(), ["ptap: 2 more times: ptap: boom"]);
    }

    #[test]
    fn a_reason_to_stop_is_reported_once_and_the_rounds_go_on() {
        let (owned, mut sink, mut side) = parts();
        let s = owned.session;
        // -T 0: due at once.
        let mut lp = Loop::new(Some(0.0));
        lp.timers.push(Timer {
            module: 7,
            probe: 0,
            point: 0,
            period: Duration::from_secs(3600),
            due: Instant::now(),
        });
        let stop = |r: Round| match r {
            Round::Stop(s) => Some(s),
            Round::Handled(_) => None,
        };
        let r = lp.step(&s, &mut side, &mut sink, None).unwrap();
        assert_eq!(stop(r), Some(Stop::Timeout));
        assert!(side.runs.is_empty(), "a round that stops runs no timer");
        let r = lp.step(&s, &mut side, &mut sink, None).unwrap();
        assert!(matches!(r, Round::Handled(1)), "the timer ran");
        assert_eq!(side.runs, [7]);
        let r = lp.step(&s, &mut side, &mut sink, None).unwrap();
        assert!(matches!(r, Round::Handled(0)), "not due again for an hour");
        lp.remove_timers(7);
        assert!(lp.timers.is_empty());
    }

    #[test]
    fn the_target_exit_is_reported_whenever_seen() {
        let (owned, mut sink, mut side) = parts();
        let s = owned.session;
        let mut lp = Loop::new(None);
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let mut target = Target::Child(child);
        let t0 = Instant::now();
        let st = loop {
            match lp
                .step(&s, &mut side, &mut sink, Some(&mut target))
                .unwrap()
            {
                Round::Stop(Stop::TargetExited(st)) => break st,
                Round::Stop(other) => panic!("stopped: {other}"),
                Round::Handled(_) => {}
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "hang guard");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(st.and_then(|s| s.code()), Some(3));
        let again = lp.step(&s, &mut side, &mut sink, Some(&mut target));
        assert!(matches!(again, Ok(Round::Stop(Stop::TargetExited(_)))));
        assert_eq!(
            crate::target::exit_text(7, st),
            "the target (pid 7) exited with status 3"
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            crate::target::exit_text(7, Some(std::process::ExitStatus::from_raw(11))),
            "the target (pid 7) was killed by signal 11 (SIGSEGV)"
        );
    }
}
