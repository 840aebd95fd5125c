//! Running a compiled script (`ptap -e/SCRIPT`, `ptap run NAME.o`): the
//! target is started or attached to, then the session loop of
//! `event_loop.rs` runs.
//!
//! ptap creates the session (control block, output ring, globals area),
//! runs the `begin` probes in its own process, starts the -c command with the
//! runtime preloaded and the probe module named in `PTAP_MODULE` (the runtime
//! loads the `.o` itself and registers its probes before `main`), then drains
//! and renders the records while running timer probes. It stops when the
//! command exits, on Ctrl-C, on `exit()`, after -T seconds, or when runtime
//! errors pass MAXERRORS; then it detaches from a still-running target (the
//! target goes on), runs the `end` probes, prints the globals that were
//! written but never read and the summary of anything lost.

use anyhow::Context;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ptap_rt_core::script::attach;
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::meta::Meta;

use crate::event_loop::{
    install_interrupt_handlers, session_loop, too_many_errors, Script, Sink, Stop, Watch,
};
use crate::load::{self, OwnedSession, RuntimeSnapshot};
use crate::points;
use crate::target::{Attached, Target};
use ptap_compiler::codegen::host::{self, Program, Which};

/// What to run and how.
pub struct RunOpts<'a> {
    /// The -c command, split into words.
    pub argv: Option<Vec<String>>,
    pub output: Option<&'a Path>,
    pub timeout: Option<f64>,
    pub verbose: u8,
    /// `--no-follow`: probe only the -c process.
    pub no_follow: bool,
    /// `-x PID`: attach to this running process instead of starting one.
    pub pid: Option<i32>,
    /// `--serve ADDR`: the globals for Prometheus while the session runs.
    pub serve: Option<&'a crate::serve::ServeSpec>,
    /// `-f json`: every record, error and the summary as JSON lines.
    pub json: bool,
}

impl<'a> RunOpts<'a> {
    /// The options of a session's target (`-c/-x/-o/-T/--no-follow/-v`, the
    /// same for a script and `ptap run`) with the -c command split.
    pub fn new(
        target: &'a crate::TargetArgs,
        argv: Option<Vec<String>>,
        serve: Option<&'a crate::serve::ServeSpec>,
        json: bool,
    ) -> RunOpts<'a> {
        RunOpts {
            argv,
            output: target.output.as_deref(),
            timeout: target.timeout,
            verbose: target.verbose,
            no_follow: target.no_follow,
            pid: target.pid,
            serve,
            json,
        }
    }
}

/// The -c command's executable, found like `execvp` would (for `$name`
/// debug info and for error messages).
pub fn resolve_exe(argv0: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        return Some(PathBuf::from(argv0));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(argv0))
        .find(|p| p.is_file())
}

/// Run `prog`; the object is written to a private file the target loads.
pub fn run(prog: &Program, opts: &RunOpts) -> anyhow::Result<ExitCode> {
    let meta = prog.meta();
    let in_target = meta
        .probes
        .iter()
        .any(|p| p.points.iter().any(|q| q.kind.in_target()));
    if in_target && opts.argv.is_none() && opts.pid.is_none() {
        // Neither -c nor -x: every process, through the kernel's perf events.
        return crate::systemwide::run(prog, opts);
    }
    if let Some(pid) = opts.pid {
        crate::inject::check_pid(pid)?;
    }

    resolve_points(meta, opts, in_target)?;

    let ring = load::ring_size_from_env()?;
    let owned = OwnedSession::create_for(ring, host::session_size(ring, meta), opts.pid)?;
    let s = owned.session;
    // SAFETY: the mapping is session_size(ring, meta) bytes.
    let g = unsafe { host::globals_of(&s) };
    host::init_globals(&g, meta, 0);
    // Declared after the session: dropped (stopped) before it is unmapped.
    let _server = match opts.serve {
        Some(spec) => {
            let target = match (&opts.argv, opts.pid) {
                (_, Some(pid)) => format!("pid {pid}"),
                (Some(argv), None) => argv.join(" "),
                (None, None) => "none".to_string(),
            };
            let server = crate::serve::start(spec, meta, g, target)?;
            eprintln!("ptap: serving metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };

    let mut sink = Sink::open(opts.output, opts.json)?;
    install_interrupt_handlers();

    let t0 = Instant::now();
    prog.run(Which::Begin, &s, &g);
    sink.drain(&s, Some(prog));

    // The target, with a private copy of the runtime and of the module.
    let (mut target, snapshot) = start_target(prog, opts, in_target, &owned, &g, t0)?;

    let watch = match target.as_mut() {
        Some(t) => Watch::Process(t),
        None => Watch::Nothing,
    };
    let script = Script { prog, globals: &g };
    let stop = session_loop(&s, Some(script), &mut sink, watch, opts.timeout)?;
    if opts.verbose > 0 {
        match (&stop, target.as_ref()) {
            (Stop::TargetExited(st), Some(child)) => {
                eprintln!("ptap: {}", crate::target::exit_text(child.id(), *st));
            }
            _ => eprintln!("ptap: stopping: {stop}"),
        }
        eprintln!("Pass 5: ran for {:.2?}", t0.elapsed());
    } else if let (Stop::TargetExited(st), Some(child)) = (&stop, target.as_ref()) {
        // A target killed by a signal is said even without -v: under ptap
        // no shell sees its status to print "Segmentation fault".
        if st.is_some_and(|s| s.signal().is_some()) {
            eprintln!("ptap: {}", crate::target::exit_text(child.id(), *st));
        }
    }
    let mut still_running = false;
    if let Some(child) = target.as_mut() {
        if !matches!(stop, Stop::TargetExited(_)) && child.try_wait()?.is_none() {
            load::detach(&s, &mut || {
                sink.drain(&s, Some(prog));
            });
            // It may have been on its way out (the skips of an exiting
            // process reach the session at its exit): give it a moment.
            let t = Instant::now();
            still_running = loop {
                if child.try_wait()?.is_some() {
                    break false;
                }
                if t.elapsed() > Duration::from_millis(200) {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
        }
    }
    // The -c command exited, but processes it started (a daemon, `cmd &`)
    // may still run with probes: take them out too, so that nothing stays
    // probed once ptap is gone.
    if matches!(stop, Stop::TargetExited(_)) {
        let mut descendants = load::live_pids(&s);
        // The -c command's own process group (a process ptap started);
        // an attached process's group is not ours to look at.
        let group = matches!(&target, Some(Target::Child(c)) if load::group_alive(c.id() as i32));
        if descendants > 0 || group {
            descendants = descendants.max(1);
            if opts.verbose > 0 {
                eprintln!("ptap: {descendants} process(es) of the session still run: detaching");
            }
            load::detach(&s, &mut || {
                sink.drain(&s, Some(prog));
            });
        }
    }
    sink.drain(&s, Some(prog));
    if stop == Stop::ArmFailed {
        // The session never started: no end probes, no globals.
        let _ = sink.out.flush();
        return Ok(ExitCode::from(1));
    }
    prog.run(Which::End, &s, &g);
    sink.drain(&s, Some(prog));
    let unread = if opts.json {
        crate::json::unread_globals(meta, &g)
    } else {
        host::unread_globals(meta, &g)
    };
    let _ = sink.out.write_all(unread.as_bytes());
    let _ = sink.out.flush();
    // (Not for `-x` without probes in the process: nothing was loaded there.)
    if target.is_some() && snapshot.is_some() {
        load::report_session(&s, false);
    }
    // Errors, skipped hits by cause, full maps and lost output records
    // (every process added its misses when it unregistered).
    if opts.json {
        let _ = sink
            .out
            .write_all(crate::json::summary(&g, s.dropped()).as_bytes());
        let _ = sink.out.flush();
    } else {
        eprint!("{}", host::summary(&g, &s));
    }
    // Handlers aborted by a fault (a corrupted module) are errors too.
    let faults = s
        .control()
        .handler_faults
        .load(std::sync::atomic::Ordering::Relaxed);
    let errors = host::errors(&g).saturating_add(faults);
    for l in sink.diags.summary() {
        eprintln!("{l}");
    }
    if let (true, Some(child), Some(_)) = (still_running, target.as_ref(), &snapshot) {
        eprintln!("ptap: detached from pid {}; it keeps running", child.id());
    }
    // The session's files go now, also after a detach: every process has
    // mapped what it loaded (ptap's private directory, see `private`).
    drop(snapshot);
    Ok(if errors > 0 || stop == Stop::TooManySkipped {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolve the probe points against the executable and its libraries
/// (-c) or the objects mapped in the process (-x) before anything runs: a
/// point that resolves to nothing is an error. (Without -c or -x there is
/// no process to resolve against.)
fn resolve_points(meta: &Meta, opts: &RunOpts, in_target: bool) -> anyhow::Result<()> {
    let t = Instant::now();
    let images = match (opts.pid, &opts.argv) {
        (None, Some(argv)) if in_target && !points::has_function_points(meta) => {
            // Nothing to resolve (system call probes), but they run in the
            // command: it must be able to load the runtime.
            let exe = resolve_exe(&argv[0])
                .with_context(|| format!("cannot find `{}` (searched PATH)", argv[0]))?;
            points::check_runtime_loads(&exe)?;
            None
        }
        _ if !points::has_function_points(meta) => None,
        (Some(pid), _) => Some((
            points::Images::from_pid(pid)?,
            format!("the objects mapped in pid {pid}"),
        )),
        (None, Some(argv)) => {
            let exe = resolve_exe(&argv[0])
                .with_context(|| format!("cannot find `{}` (searched PATH)", argv[0]))?;
            Some((points::Images::load(&exe)?, exe.display().to_string()))
        }
        (None, None) => None,
    };
    if let Some((images, what)) = images {
        let r = images.resolve(meta)?;
        if opts.verbose > 0 {
            for n in &r.notes {
                eprintln!("ptap: {n}");
            }
            eprintln!(
                "ptap: resolved the probe points against {what} in {:.2?}",
                t.elapsed()
            );
        }
    }
    Ok(())
}

/// The probed process and the private files it loads: -x PID with no probe
/// to run in it is only watched (its exit ends the session); else the
/// module is loaded into -x PID, or the -c command is started with it
/// (not when the begin probes already ended the session).
fn start_target(
    prog: &Program,
    opts: &RunOpts,
    in_target: bool,
    owned: &OwnedSession,
    g: &Globals,
    t0: Instant,
) -> anyhow::Result<(Option<Target>, Option<RuntimeSnapshot>)> {
    let ended = host::exit_requested(g) || too_many_errors(g, prog);
    let (target, snapshot) = match (opts.pid, &opts.argv) {
        (Some(pid), _) if !in_target => {
            host::set_target(g, pid);
            return Ok((Some(Target::Attached(Attached::new(pid))), None));
        }
        _ if ended => return Ok((None, None)),
        (Some(pid), _) => attach_with(prog, opts, pid, owned, g, t0)?,
        (None, Some(argv)) => spawn_with(prog, opts, argv, owned, g, t0)?,
        (None, None) => return Ok((None, None)),
    };
    Ok((Some(target), Some(snapshot)))
}

/// `-x PID`: load the runtime and the module into the process.
fn attach_with(
    prog: &Program,
    opts: &RunOpts,
    pid: i32,
    owned: &OwnedSession,
    g: &Globals,
    t0: Instant,
) -> anyhow::Result<(Target, RuntimeSnapshot)> {
    let installed = load::runtime_path()?;
    let snap = RuntimeSnapshot::new_for(&installed, true)?;
    let object = snap.dir.write("script.o", &prog.object)?;
    let mut params = vec![(attach::ENV_TARGET, "1")];
    if opts.no_follow {
        params.push((ptap_rt_core::lifecycle::ENV_NO_FOLLOW, "1"));
    }
    host::set_target(g, pid);
    let has_syscall_points = prog.meta().probes.iter().flat_map(|p| &p.points).any(|q| {
        matches!(
            q.target,
            ptap_rt_core::script::meta::TargetSpec::Syscall { .. }
        )
    });
    let second_ok = if has_syscall_points {
        Err("system call probes cannot be armed by a second copy of the runtime")
    } else {
        Ok(())
    };
    let a = load::attach_to(pid, &snap, owned, &object, &params, second_ok, opts.verbose)?;
    if opts.verbose > 0 {
        eprintln!(
            "ptap: attached to pid {pid} with {}: probes armed {:.2?} after ptap started",
            object.display(),
            crate::START.get().map_or(t0.elapsed(), |s| s.elapsed())
        );
    }
    Ok((Target::Attached(a), snap))
}

/// `-c CMD`: start the command with the runtime preloaded and the module
/// named in its environment.
fn spawn_with(
    prog: &Program,
    opts: &RunOpts,
    argv: &[String],
    owned: &OwnedSession,
    g: &Globals,
    t0: Instant,
) -> anyhow::Result<(Target, RuntimeSnapshot)> {
    let installed = load::runtime_path()?;
    let snap = RuntimeSnapshot::new(&installed)?;
    let object = snap.dir.write("script.o", &prog.object)?;
    let mut env = vec![
        (ptap_rt_core::session::ENV_MODULE, object.as_os_str()),
        (attach::ENV_TARGET, std::ffi::OsStr::new("1")),
    ];
    if opts.no_follow {
        env.push((
            ptap_rt_core::lifecycle::ENV_NO_FOLLOW,
            std::ffi::OsStr::new("1"),
        ));
        env.push((ptap_rt_core::syscall::ENV_FOLLOW, std::ffi::OsStr::new("0")));
    }
    let child = load::spawn(argv, &snap.path, owned, &env, opts.verbose)?;
    host::set_target(g, child.id() as i32);
    if opts.verbose > 0 {
        eprintln!(
            "ptap: started {argv:?} (pid {}) with {} after {:.2?}",
            child.id(),
            object.display(),
            t0.elapsed()
        );
    }
    Ok((Target::Child(child), snap))
}
