//! `ptap load MODULE.so -c CMD`: run a C probe module inside a target.
//!
//! ptap owns the session: it creates the shared memory (a memfd holding the
//! control block and the output ring, layout in `ptap_rt::session`), starts
//! CMD (split like a shell would, no shell) with the runtime preloaded
//! (`LD_PRELOAD=<dir of ptap>/libptap_rt.so`, or `$PTAP_RUNTIME`), and tells
//! the runtime where the session and the module are through the environment
//! (`PTAP_SESSION_FD`, `PTAP_SESSION`, `PTAP_MODULE`). The runtime runs the
//! module's init_module() before main and cleanup_module() at exit.
//!
//! While the target runs, ptap drains the ring to stdout (text records) and
//! stderr (runtime diagnostics). Ctrl-C (or SIGTERM/SIGHUP) asks every
//! runtime of the session to detach: cleanup_module() runs, every probe is
//! removed, and the target goes on (it runs in its own process group, so the
//! terminal's Ctrl-C reaches only ptap). At the end ptap reports lost
//! records, and exits with the target's status (128+signal if it was killed).
//!
//! Known limits: the LD_PRELOAD is inherited by everything the target execs
//! (each such process loads the module too); a target that reads the
//! terminal is stopped by SIGTTIN (it is not in the foreground group).

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ptap_rt::session::{self, Session, REC_DIAG, REC_FORMAT, REC_TEXT};

use crate::LoadOpts;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The runtime shared object: `$PTAP_RUNTIME`, or libptap_rt.so beside the
/// ptap executable (or in its deps/ folder, for test builds).
pub fn runtime_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PTAP_RUNTIME") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("PTAP_RUNTIME={} does not exist", p.display()))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the ptap executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Prefer the newest: cargo refreshes deps/ when ptap's tests build the
    // runtime as a dependency, and the uplifted copy may then be stale.
    let newest = [
        dir.join("libptap_rt.so"),
        dir.join("deps").join("libptap_rt.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max();
    if let Some((_, p)) = newest {
        return Ok(p);
    }
    Err(format!(
        "the runtime libptap_rt.so is not beside {} (build it with `cargo build -p ptap-runtime`, or set PTAP_RUNTIME)",
        exe.display()
    ))
}

/// A session mapping owned by ptap.
pub struct OwnedSession {
    pub fd: i32,
    pub session: Session,
    len: usize,
}

impl OwnedSession {
    pub fn create(ring_size: usize) -> Result<OwnedSession, String> {
        OwnedSession::create_sized(ring_size, Session::total_size(ring_size))
    }

    /// A session of `len` bytes (at least the control block and the ring;
    /// compiled scripts put their globals area after the ring).
    pub fn create_sized(ring_size: usize, len: usize) -> Result<OwnedSession, String> {
        // SAFETY: plain syscalls; the fd is deliberately inheritable (no CLOEXEC).
        unsafe {
            let fd = libc::memfd_create(c"ptap-session".as_ptr(), 0);
            if fd < 0 {
                return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
            }
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
            }
            let p = libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            let session = Session::from_raw(p as *mut u8);
            session.init(ring_size);
            Ok(OwnedSession { fd, session, len })
        }
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        // SAFETY: unmapping/closing what create() made.
        unsafe {
            libc::munmap(self.session.base() as *mut libc::c_void, self.len);
            libc::close(self.fd);
        }
    }
}

pub(crate) fn ring_size_from_env() -> Result<usize, String> {
    match std::env::var("PTAP_RING_SIZE") {
        Ok(v) => {
            let n: usize = v
                .parse()
                .map_err(|_| format!("PTAP_RING_SIZE={v} is not a number"))?;
            if !n.is_power_of_two() || !(64..=1 << 30).contains(&n) {
                return Err(format!(
                    "PTAP_RING_SIZE={v} must be a power of two between 64 and 2^30"
                ));
            }
            Ok(n)
        }
        Err(_) => Ok(session::DEFAULT_RING_SIZE),
    }
}

struct Sink {
    out: Box<dyn Write>,
}

impl Sink {
    fn drain(&mut self, s: &Session) -> usize {
        let out = &mut self.out;
        s.drain(|kind, payload| match kind {
            REC_TEXT => {
                let _ = out.write_all(payload);
            }
            REC_DIAG => {
                let _ = out.flush();
                let _ = std::io::stderr().write_all(payload);
            }
            REC_FORMAT => {
                let _ = writeln!(out, "<binary record of {} bytes>", payload.len());
            }
            k => {
                let _ = out.flush();
                eprintln!("ptap: unknown record kind {k}");
            }
        })
    }
}

pub fn run(opts: &LoadOpts) -> ExitCode {
    match run_inner(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ptap load: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(opts: &LoadOpts) -> Result<ExitCode, String> {
    let module = std::fs::canonicalize(&opts.module)
        .map_err(|e| format!("{}: {e}", opts.module.display()))?;
    let Some(cmd) = &opts.cmd else {
        return Err(
            "-c CMD is required (attaching to a running process is not implemented yet)".into(),
        );
    };
    let argv = split_command(cmd)?;
    let installed = runtime_path()?;
    // Preload a private snapshot: a rebuild of the runtime (cargo replaces the
    // file) while the target runs must not break its exec'ed children.
    let snapshot = RuntimeSnapshot::new(&installed);
    let runtime = snapshot
        .as_ref()
        .map_or(installed.clone(), |s| s.path.clone());
    let ring = ring_size_from_env()?;
    let owned = OwnedSession::create(ring)?;
    let s = owned.session;
    let out: Box<dyn Write> = match &opts.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let mut sink = Sink { out };

    install_interrupt_handlers();
    let env = [(session::ENV_MODULE, module.as_os_str())];
    let mut child = spawn(&argv, &runtime, &owned, &env, opts.verbose)?;
    if opts.verbose > 0 {
        eprintln!(
            "ptap: running {argv:?} with {} (a snapshot of {}) and module {}",
            runtime.display(),
            installed.display(),
            module.display()
        );
    }
    let pid = child.id() as i32;

    let status = loop {
        let n = sink.drain(&s);
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(st);
        }
        if interrupted() {
            detach(&s, &mut || {
                sink.drain(&s);
            });
            break None;
        }
        if n == 0 {
            let _ = sink.out.flush();
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    sink.drain(&s);
    let _ = sink.out.flush();
    report_losses(&s);
    match status {
        Some(st) => {
            if let Some(code) = st.code() {
                Ok(ExitCode::from(code as u8))
            } else {
                Ok(ExitCode::from(128 + st.signal().unwrap_or(0) as u8))
            }
        }
        None => {
            eprintln!("ptap: detached from pid {pid}; it keeps running");
            // The target (and what it execs) may still need the preloaded file.
            if let Some(s) = snapshot {
                s.keep();
            }
            Ok(ExitCode::from(130))
        }
    }
}

/// A private copy (hard link when possible) of the runtime for one run,
/// removed when ptap ends unless [`RuntimeSnapshot::keep`] is called.
pub(crate) struct RuntimeSnapshot {
    /// The preloaded copy.
    pub(crate) path: PathBuf,
    dir: PathBuf,
    keep: bool,
}

impl RuntimeSnapshot {
    pub(crate) fn new(src: &Path) -> Option<RuntimeSnapshot> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).ok()?;
        // A new directory, never one left by an earlier run: a detached
        // target keeps its snapshot, pids get reused, and a file there may
        // be a hard link shared with another live snapshot, so writing into
        // it could truncate a library some process is loading right now.
        let pid = std::process::id();
        let dir = (0..1000).find_map(|n| {
            let d = base.join(format!("ptap-{pid}-{n}"));
            match std::fs::create_dir(&d) {
                Ok(()) => Some(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(_) => Some(None),
            }
        })??;
        let path = dir.join("libptap_rt.so");
        if std::fs::hard_link(src, &path).is_err() && std::fs::copy(src, &path).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(RuntimeSnapshot {
            dir,
            path,
            keep: false,
        })
    }

    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for RuntimeSnapshot {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Ask every runtime of the session to run cleanup_module and remove its
/// probes; wait (bounded) until they all have.
pub(crate) fn detach(s: &Session, drain: &mut dyn FnMut()) {
    let c = s.control();
    c.detach.store(1, Ordering::SeqCst);
    // SAFETY: futex word inside the shared mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            c.detach.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0,
            0,
            0,
        );
    }
    // Processes that died without cleaning up stay in the table: only wait
    // for live ones.
    let live = || live_pids(s);
    let t0 = Instant::now();
    while live() > 0 && t0.elapsed() < Duration::from_secs(3) {
        drain();
        std::thread::sleep(Duration::from_millis(2));
    }
    let n = live();
    if n > 0 {
        eprintln!("ptap: {n} process(es) did not detach in time");
    }
}

/// Processes of the session that are still alive (the table keeps those
/// that died without cleaning up; zombies count as alive until reaped).
pub(crate) fn live_pids(s: &Session) -> usize {
    s.pids()
        .into_iter()
        // SAFETY: signal 0 only checks existence.
        .filter(|&p| unsafe { libc::kill(p, 0) } == 0)
        .count()
}

/// Is a process of process group `pgid` (the -c command's: it was started
/// in a group of its own) still there? A child the command forked just
/// before it exited may not have joined the session's pid table yet.
pub(crate) fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 to a process group only checks existence.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

pub(crate) fn report_losses(s: &Session) {
    report_session(s, true);
}

/// What went wrong with the session itself: the runtime never attached,
/// unfinished records, handler faults, and (`dropped`) lost records.
pub(crate) fn report_session(s: &Session, dropped_too: bool) {
    let c = s.control();
    if c.attaches.load(Ordering::Acquire) == 0 {
        eprintln!(
            "ptap: the runtime never attached to the target (statically linked, setuid, or LD_PRELOAD ignored?): nothing was probed"
        );
    }
    let dropped = s.dropped();
    if dropped_too && dropped > 0 {
        eprintln!("ptap: {dropped} output records lost (output ring full)");
    }
    let pending = s.pending_bytes();
    if pending > 0 {
        eprintln!("ptap: {pending} bytes of unfinished output records (a writer died mid-record)");
    }
    let faults = c.handler_faults.load(Ordering::Relaxed);
    if faults > 0 {
        eprintln!("ptap: {faults} probe handler fault(s); those handlers were aborted");
    }
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

/// Start `argv` with the runtime preloaded, attached to session `owned`,
/// with `env` added (the module to load). The child gets its own process
/// group so the terminal's Ctrl-C reaches only ptap.
pub(crate) fn spawn(
    argv: &[String],
    runtime: &Path,
    owned: &OwnedSession,
    env: &[(&str, &std::ffi::OsStr)],
    verbose: u8,
) -> Result<std::process::Child, String> {
    let mut preload = runtime.to_string_lossy().into_owned();
    if let Ok(old) = std::env::var("LD_PRELOAD") {
        if !old.is_empty() {
            preload = format!("{preload}:{old}");
        }
    }
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("LD_PRELOAD", &preload)
        .env(session::ENV_FD, owned.fd.to_string())
        .env(
            session::ENV_PATH,
            format!("/proc/{}/fd/{}", std::process::id(), owned.fd),
        );
    for (k, v) in env {
        command.env(k, v);
    }
    if verbose > 0 {
        command.env("PTAP_VERBOSE", verbose.to_string());
    }
    // SAFETY: setpgid is async-signal-safe; runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))
}

/// Split a -c command line like a shell would (no shell is run).
pub(crate) fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let argv = shlex::split(cmd).ok_or_else(|| format!("cannot split the command line `{cmd}`"))?;
    if argv.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(argv)
}
