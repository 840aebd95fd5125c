//! The one session loop, shared by `ptap SCRIPT` / `-e` (with -c, -x or
//! system-wide), `ptap run NAME.o` and `ptap load MODULE.so`.
//!
//! Every round it drains the output ring through the [`Sink`], polls what
//! it watches (the probed process, or the perf rings of a system-wide
//! session), runs the script's due timer probes, and checks the reasons to
//! stop: the target exited, Ctrl-C, `exit()`, `-T`, MAXERRORS, MAXSKIPPED,
//! or a target that could not arm its probes. What happens before (starting
//! or attaching) and after (detaching, end probes, the summary) is the
//! caller's.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ptap_compiler::codegen::host::{self, Program, Which};
use ptap_compiler::output::Rendered;
use ptap_rt_core::script::attach;
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::session::{Session, REC_DIAG, REC_FORMAT, REC_TEXT};

use crate::target::Target;

/// Where rendered output goes.
pub(crate) struct Sink {
    pub(crate) out: Box<dyn Write>,
    /// `-f json`: everything goes to `out` as JSON lines.
    pub(crate) json: bool,
    /// Identical runtime messages are shown a few times, then counted.
    pub(crate) diags: crate::checks::DiagFilter,
}

impl Sink {
    /// The session's output: `-o FILE` or stdout, text or `-f json`.
    pub(crate) fn open(output: Option<&Path>, json: bool) -> anyhow::Result<Sink> {
        let out: Box<dyn Write> = match output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("{}", p.display()))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        Ok(Sink {
            out,
            json,
            diags: Default::default(),
        })
    }

    /// Write out what the ring holds. `prog` renders the formatted records
    /// of a compiled script; a C module (`ptap load`) writes none, so they
    /// are only counted there.
    pub(crate) fn drain(&mut self, s: &Session, prog: Option<&Program>) -> usize {
        let out = &mut self.out;
        let diags = &mut self.diags;
        if let (true, Some(prog)) = (self.json, prog) {
            return s.drain(|kind, payload| {
                let line = match kind {
                    REC_FORMAT => crate::json::record(prog, payload),
                    REC_TEXT => crate::json::text(false, payload),
                    _ => crate::json::text(true, payload),
                };
                let _ = out.write_all(line.as_bytes());
            });
        }
        s.drain(|kind, payload| match (kind, prog) {
            (REC_FORMAT, Some(prog)) => match prog.render(payload) {
                Rendered::Out(t) => {
                    let _ = out.write_all(t.as_bytes());
                }
                Rendered::Raw(b) => {
                    let _ = out.write_all(&b);
                }
                Rendered::Error(t) | Rendered::Warning(t) => {
                    let _ = out.flush();
                    eprint!("{t}");
                }
            },
            (REC_FORMAT, None) => {
                let _ = writeln!(out, "<binary record of {} bytes>", payload.len());
            }
            (REC_TEXT, _) => {
                let _ = out.write_all(payload);
            }
            (REC_DIAG, _) if diags.pass(payload) => {
                let _ = out.flush();
                let _ = std::io::stderr().write_all(payload);
            }
            (REC_DIAG, _) => {}
            (k, _) => {
                let _ = out.flush();
                eprintln!("ptap: unknown record kind {k}");
            }
        })
    }
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

/// Why the session loop ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Stop {
    /// The target exited (its status, when known: an attached process
    /// is not ptap's child).
    TargetExited(Option<std::process::ExitStatus>),
    Interrupted,
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
            Stop::ExitCalled => "exit() called",
            Stop::Timeout => "timeout",
            Stop::TooManyErrors => "too many errors",
            Stop::TooManySkipped => "too many skipped probes",
            Stop::ArmFailed => "the target could not arm its probes",
        })
    }
}

pub(crate) fn too_many_errors(g: &Globals, prog: &Program) -> bool {
    host::errors(g) > prog.meta().limits.maxerrors
}

fn arm_failed(g: &Globals) -> bool {
    g.header().exit.load(Ordering::Acquire) == attach::EXIT_ARM_FAILED
}

/// Drain, poll, run due timers, and watch for the reasons to stop.
pub(crate) fn session_loop(
    s: &Session,
    script: Option<Script>,
    sink: &mut Sink,
    mut watch: Watch,
    timeout: Option<f64>,
) -> anyhow::Result<Stop> {
    let prog = script.map(|x| x.prog);
    let mut clock = Clock::new(prog, timeout);
    // The perf rings wake nobody: ptap polls them, which costs nothing per
    // event, and a longer nap costs nothing either.
    let nap = match watch {
        Watch::SystemWide(_) => Duration::from_millis(5),
        _ => Duration::from_millis(1),
    };
    loop {
        let mut n = match &mut watch {
            Watch::SystemWide(poll) => poll(sink),
            _ => 0,
        };
        n += sink.drain(s, prog);
        if let Some(Script { prog, globals: g }) = script {
            if arm_failed(g) {
                // Let the target's own report arrive before stopping.
                if let Watch::Process(child) = &mut watch {
                    if child.is_child() {
                        let t = Instant::now();
                        while child.try_wait().ok().flatten().is_none()
                            && t.elapsed() < Duration::from_secs(2)
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                sink.drain(s, Some(prog));
                return Ok(Stop::ArmFailed);
            }
            if host::exit_requested(g) {
                return Ok(Stop::ExitCalled);
            }
            if too_many_errors(g, prog) {
                return Ok(Stop::TooManyErrors);
            }
            // Skips reach the session when a process unregisters, so this
            // sees those of processes that already detached or exited.
            if host::too_many_skipped(g, prog.meta()) {
                eprintln!("{}", host::TOO_MANY_SKIPPED);
                return Ok(Stop::TooManySkipped);
            }
        }
        if let Watch::Process(child) = &mut watch {
            if let Some(st) = child.try_wait()? {
                return Ok(Stop::TargetExited(st));
            }
        }
        if interrupted() {
            return Ok(Stop::Interrupted);
        }
        let now = Instant::now();
        if clock.timed_out(now) {
            return Ok(Stop::Timeout);
        }
        if let Some(Script { prog, globals }) = script {
            clock.run_due(prog, s, globals, now);
        }
        if n == 0 {
            let _ = sink.out.flush();
            clock.idle(nap);
        }
    }
}

/// When `-T SECS` (checked by the command line: finite, 0 or more) ends a
/// session started at `start`; None: never (no -T, or beyond what an
/// `Instant` can hold).
pub(crate) fn deadline(start: Instant, secs: Option<f64>) -> Option<Instant> {
    start.checked_add(Duration::try_from_secs_f64(secs?).ok()?)
}

/// `-T` and the timer probes of a session loop.
struct Clock {
    deadline: Option<Instant>,
    /// (probe, point, period, next due time).
    timers: Vec<(usize, usize, Duration, Instant)>,
}

impl Clock {
    fn new(prog: Option<&Program>, timeout: Option<f64>) -> Clock {
        let start = Instant::now();
        Clock {
            deadline: deadline(start, timeout),
            timers: prog
                .map(|p| host::timers(p.meta()))
                .unwrap_or_default()
                .into_iter()
                .map(|(p, q, ns)| {
                    let period = Duration::from_nanos(ns.max(1));
                    (p, q, period, start + period)
                })
                .collect(),
        }
    }

    /// `-T` has passed.
    fn timed_out(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Run the timer probes that are due.
    fn run_due(&mut self, prog: &Program, s: &Session, g: &Globals, now: Instant) {
        for (p, q, period, due) in self.timers.iter_mut() {
            if now >= *due {
                prog.run(Which::Timer(*p, *q), s, g);
                // Skip missed periods rather than running them in a burst.
                while *due <= now {
                    *due += *period;
                }
            }
        }
    }

    /// Sleep at most `max`, and no later than the next timer or `-T`.
    fn idle(&self, max: Duration) {
        let now = Instant::now();
        let wait = self
            .timers
            .iter()
            .map(|t| t.3)
            .chain(self.deadline)
            .map(|t| t.saturating_duration_since(now))
            .fold(max, Duration::min);
        std::thread::sleep(wait);
    }
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
