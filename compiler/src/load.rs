//! `ptap load MODULE.so -c CMD`: run a C probe module inside a target.
//!
//! ptap owns the session: it creates the shared memory (a memfd holding the
//! control block and the output ring, layout in `ptap_rt_core::session`), starts
//! CMD (split like a shell would, no shell) with the runtime preloaded
//! (`LD_PRELOAD=<private dir>/libptap_rt.so`: the runtime embedded in ptap,
//! or `$PTAP_RUNTIME`, see [`RuntimeSnapshot`]), and tells
//! the runtime where the session and the module are through the environment
//! (`PTAP_SESSION_FD`, `PTAP_SESSION`, `PTAP_MODULE`). The runtime runs the
//! module's init_module() before main and cleanup_module() at exit.
//!
//! While the target runs, ptap drains the ring to stdout (text records) and
//! stderr (runtime diagnostics), in the session loop scripts use
//! (`event_loop.rs`). Ctrl-C (or SIGTERM/SIGHUP) asks every
//! runtime of the session to detach: cleanup_module() runs, every probe is
//! removed, and the target goes on (it runs in its own process group, so the
//! terminal's Ctrl-C reaches only ptap). At the end ptap reports lost
//! records, and exits with the target's status (128+signal if it was killed).
//!
//! With `-x PID` ptap attaches to a running process instead: the runtime is
//! loaded into it with ptrace + dlopen (`inject.rs`, [`attach_to`]); the
//! parameters go through a file beside the runtime snapshot, and at the
//! end (Ctrl-C, or its exit) the process goes on without probes.
//!
//! Known limits: the LD_PRELOAD is inherited by everything the target execs
//! (each such process loads the module too); a target that reads the
//! terminal is stopped by SIGTTIN (it is not in the foreground group).

use anyhow::{anyhow, Context};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ptap_rt_core::session::{self, Session};

use crate::event_loop::{install_interrupt_handlers, interrupted, session_loop, Sink, Stop, Watch};
use crate::target::{Attached, Target};
use crate::LoadOpts;

/// The runtime shared object, built with ptap and embedded in its binary
/// (see compiler/build.rs).
static EMBEDDED_RUNTIME: &[u8] = include_bytes!(env!("PTAP_EMBEDDED_RT"));

/// Where the runtime a session preloads comes from.
pub enum RuntimeSource {
    /// `$PTAP_RUNTIME`.
    File(PathBuf),
    /// The copy embedded in ptap.
    Embedded,
}

impl std::fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeSource::File(p) => write!(f, "{}", p.display()),
            RuntimeSource::Embedded => write!(f, "the runtime embedded in ptap"),
        }
    }
}

/// The runtime: `$PTAP_RUNTIME` when set, else the one embedded in ptap.
pub fn runtime_path() -> anyhow::Result<RuntimeSource> {
    if let Some(p) = std::env::var_os("PTAP_RUNTIME") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(RuntimeSource::File(p))
        } else {
            Err(anyhow!("PTAP_RUNTIME={} does not exist", p.display()))
        };
    }
    Ok(RuntimeSource::Embedded)
}

/// A session mapping owned by ptap.
pub struct OwnedSession {
    pub fd: i32,
    pub session: Session,
    len: usize,
    /// `-x`: the session is a file of its own in /dev/shm, owned by the
    /// target's user (the target may not open `/proc/<ptap>/fd/N` when
    /// ptap runs as root and the target does not); removed once the
    /// target has mapped it.
    path: Option<PathBuf>,
}

impl OwnedSession {
    /// A session of `len` bytes (at least the control block and the ring;
    /// compiled scripts put their globals area after the ring), in a memfd;
    /// with `attach = Some(pid)` (`-x`), in a file the process `pid` can
    /// open (/dev/shm, its owner), or a memfd when /dev/shm cannot be used.
    pub fn create_for(
        ring_size: usize,
        len: usize,
        attach: Option<i32>,
    ) -> anyhow::Result<OwnedSession> {
        let named = attach.and_then(shm_file_for);
        // SAFETY: plain syscalls; the memfd is deliberately inheritable (no
        // CLOEXEC: the -c command maps it through PTAP_SESSION_FD).
        unsafe {
            let fd = match &named {
                Some((_, fd)) => *fd,
                None => libc::memfd_create(c"ptap-session".as_ptr(), libc::MFD_ALLOW_SEALING),
            };
            if fd < 0 {
                return Err(anyhow!("memfd_create: {}", std::io::Error::last_os_error()));
            }
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                return Err(anyhow!("ftruncate: {}", std::io::Error::last_os_error()));
            }
            // Every process of the session holds this fd: sealed, none can
            // shrink the file under ptap's mapping (SIGBUS in ptap).
            if named.is_none()
                && libc::fcntl(
                    fd,
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                ) != 0
            {
                return Err(anyhow!(
                    "cannot seal the session memfd: {}",
                    std::io::Error::last_os_error()
                ));
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
                return Err(anyhow!("mmap: {}", std::io::Error::last_os_error()));
            }
            let session = Session::create(p as *mut u8, ring_size);
            Ok(OwnedSession {
                fd,
                session,
                len,
                path: named.map(|(p, _)| p),
            })
        }
    }

    /// Where a process opens the session.
    pub fn path_for_target(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("/proc/{}/fd/{}", std::process::id(), self.fd),
        }
    }

    /// Remove the session's file (`-x`, once the target mapped it).
    pub fn unlink(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A new file in /dev/shm for the session of `-x pid`, mode 0600, owned by
/// the process's user and group when ptap may give it away (root).
fn shm_file_for(pid: i32) -> Option<(PathBuf, i32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // The effective ids (second field of Uid: / Gid:).
    let id = |key: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (uid, gid) = (id("Uid:")?, id("Gid:")?);
    let me = std::process::id();
    (0..100).find_map(|n| {
        let path = PathBuf::from(format!("/dev/shm/ptap-session-{me}-{n}"));
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: open/fchown of a new file of ours.
        unsafe {
            let fd = libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            );
            if fd < 0 {
                return None;
            }
            if libc::geteuid() == 0 && libc::fchown(fd, uid, gid) != 0 {
                libc::close(fd);
                libc::unlink(c.as_ptr());
                return None;
            }
            Some((path, fd))
        }
    })
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        self.unlink();
        self.session.forget();
        // SAFETY: unmapping/closing what create() made.
        unsafe {
            libc::munmap(self.session.base() as *mut libc::c_void, self.len);
            libc::close(self.fd);
        }
    }
}

pub(crate) fn ring_size_from_env() -> anyhow::Result<usize> {
    match std::env::var("PTAP_RING_SIZE") {
        Ok(v) => {
            let n: usize = v
                .parse()
                .map_err(|_| anyhow!("PTAP_RING_SIZE={v} is not a number"))?;
            if !n.is_power_of_two() || !(64..=1 << 30).contains(&n) {
                return Err(anyhow!(
                    "PTAP_RING_SIZE={v} must be a power of two between 64 and 2^30"
                ));
            }
            Ok(n)
        }
        Err(_) => Ok(session::DEFAULT_RING_SIZE),
    }
}

pub fn run(opts: &LoadOpts) -> ExitCode {
    match run_inner(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ptap load: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(opts: &LoadOpts) -> anyhow::Result<ExitCode> {
    let module = std::fs::canonicalize(&opts.module)
        .with_context(|| format!("{}", opts.module.display()))?;
    crate::checks::check_module(&module)?;
    const NO_TARGET: &str =
        "give the command to run with -c CMD, or the process to attach to with -x PID";
    let argv = opts.target.cmd.as_deref().map(split_command).transpose()?;
    if argv.is_none() && opts.target.pid.is_none() {
        return Err(anyhow!(NO_TARGET));
    }
    if let Some(pid) = opts.target.pid {
        crate::inject::check_pid(pid)?;
    }
    let installed = runtime_path()?;
    // Preload a private snapshot: a rebuild of the runtime (cargo replaces the
    // file) while the target runs must not break its exec'ed children.
    let snapshot = RuntimeSnapshot::new_for(&installed, opts.target.pid.is_some())?;
    let runtime = snapshot.path.clone();
    let ring = ring_size_from_env()?;
    let owned = OwnedSession::create_for(ring, Session::total_size(ring), opts.target.pid)?;
    let s = owned.session;
    let mut sink = Sink::open(opts.target.output.as_deref(), false)?;

    install_interrupt_handlers();
    let mut target = match (opts.target.pid, &argv) {
        (Some(pid), _) => {
            // The module may print while it loads: drain meanwhile.
            let a = attach_to(
            pid,
            &snapshot,
            &owned,
            &module,
            &[],
            Err("a C module cannot use a second copy of the runtime (its register_kprobe and printk would bind to the earlier one)"),
            opts.target.verbose,
        )?;
            // The module failed in the process (its init_module() faulted,
            // overran its time or returned an error; reported by the
            // runtime): nothing stays probed there, and it runs on.
            if s.control().module_errors.load(Ordering::Acquire) > 0
                && s.control().attached.load(Ordering::Acquire) == 0
            {
                sink.drain(&s, None);
                let _ = sink.out.flush();
                eprintln!("ptap: pid {pid} keeps running, unprobed");
                return Ok(ExitCode::from(1));
            }
            Target::Attached(a)
        }
        (None, Some(argv)) => {
            let mut env = vec![(session::ENV_MODULE, module.as_os_str())];
            if opts.target.no_follow {
                env.push((
                    ptap_rt_core::lifecycle::ENV_NO_FOLLOW,
                    std::ffi::OsStr::new("1"),
                ));
                env.push((ptap_rt_core::syscall::ENV_FOLLOW, std::ffi::OsStr::new("0")));
            }
            let child = spawn(argv, &runtime, &owned, &env, opts.target.verbose)?;
            if opts.target.verbose > 0 {
                eprintln!(
                    "ptap: running {argv:?} with {} (a snapshot of {}) and module {}",
                    runtime.display(),
                    installed,
                    module.display()
                );
            }
            Target::Child(child)
        }
        (None, None) => return Err(anyhow!(NO_TARGET)),
    };
    let pid = target.id();

    let stop = session_loop(
        &s,
        None,
        &mut sink,
        Watch::Process(&mut target),
        opts.target.timeout,
    )?;
    let status = match stop {
        Stop::TargetExited(st) => Some(st),
        _ => {
            detach(&s, &mut || {
                sink.drain(&s, None);
            });
            None
        }
    };
    sink.drain(&s, None);
    let _ = sink.out.flush();
    for l in sink.diags.summary() {
        eprintln!("{l}");
    }
    report_losses(&s);
    // The module loaded in no process (its init_module() failed, faulted
    // or hung everywhere), or its handlers faulted: the session failed
    // (unless the target's own status is an error).
    let c = s.control();
    let failed = (c.module_errors.load(Ordering::Relaxed) > 0
        && c.module_loads.load(Ordering::Relaxed) == 0)
        || c.handler_faults.load(Ordering::Relaxed) > 0;
    match status {
        Some(_) if failed => Ok(ExitCode::from(1)),
        Some(Some(st)) if target.is_child() => Ok(match st.code() {
            Some(code) => ExitCode::from(code as u8),
            None => ExitCode::from(128 + st.signal().unwrap_or(0) as u8),
        }),
        Some(_) => {
            // An attached process is not ptap's child: its status is not
            // ptap's to report.
            eprintln!("ptap: pid {pid} exited");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("ptap: detached from pid {pid}; it keeps running");
            // -T ended the session as asked: a success (Ctrl-C: 130).
            let ok = if stop == Stop::Timeout { 0 } else { 130 };
            Ok(ExitCode::from(if failed { 1 } else { ok }))
        }
    }
}

/// A private copy (hard link when possible) of the runtime for one run,
/// in a private directory ([`crate::private`]) that also holds the
/// session's other files; removed when ptap ends.
pub(crate) struct RuntimeSnapshot {
    /// The preloaded copy.
    pub(crate) path: PathBuf,
    pub(crate) dir: crate::private::PrivateDir,
}

impl RuntimeSnapshot {
    pub(crate) fn new(src: &RuntimeSource) -> anyhow::Result<RuntimeSnapshot> {
        RuntimeSnapshot::new_for(src, false)
    }

    /// `attach` (`-x`): readable by everyone, since the process may run as
    /// another user (see [`crate::private::PrivateDir::new`]).
    pub(crate) fn new_for(src: &RuntimeSource, attach: bool) -> anyhow::Result<RuntimeSnapshot> {
        let dir = crate::private::PrivateDir::new(attach)?;
        // A file in the private directory rather than a memfd: exec'd
        // children of a followed -c tree find it by path even when they
        // closed inherited fds (a memfd's /proc/PID/fd/N path needs that
        // fd), and the process of another user under -x can open it.
        let path = match src {
            RuntimeSource::File(p) => dir.copy_in("libptap_rt.so", p)?,
            RuntimeSource::Embedded => dir.write("libptap_rt.so", EMBEDDED_RUNTIME)?,
        };
        Ok(RuntimeSnapshot { path, dir })
    }

    /// Make the snapshot a file of its own (a copy, not a hard link).
    pub(crate) fn private_copy(&self) -> anyhow::Result<()> {
        let data = std::fs::read(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let tmp = self.dir.write("libptap_rt.so.copy", &data)?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot copy the runtime into {}", self.dir.path.display()))
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
        if interrupted() {
            eprintln!(
                "ptap: interrupted before the runtime attached to the target: nothing was probed"
            );
        } else {
            eprintln!(
                "ptap: the runtime never attached to the target (statically linked, setuid, or LD_PRELOAD ignored?): nothing was probed"
            );
        }
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
    if dropped_too && s.malformed() > 0 {
        eprintln!(
            "ptap: {} malformed output records skipped (the session memory was overwritten)",
            s.malformed()
        );
    }
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
) -> anyhow::Result<std::process::Child> {
    spawn_with(argv, runtime, owned, env, verbose, false)
}

/// [`spawn`]; `null_stdin`: the command reads /dev/null (the REPL keeps
/// the terminal, or the session text on stdin, for itself).
pub(crate) fn spawn_with(
    argv: &[String],
    runtime: &Path,
    owned: &OwnedSession,
    env: &[(&str, &std::ffi::OsStr)],
    verbose: u8,
    null_stdin: bool,
) -> anyhow::Result<std::process::Child> {
    let mut preload = runtime.to_string_lossy().into_owned();
    if let Ok(old) = std::env::var("LD_PRELOAD") {
        if !old.is_empty() {
            preload = format!("{preload}:{old}");
        }
    }
    // The command gets the session at a high descriptor number, out of its
    // way (its first open() returns 3, as without ptap); inheritable, so
    // that what it execs finds the session too.
    let fd = owned.fd;
    let high = ptap_rt_core::base::fds::high_floor().max(fd);
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("LD_PRELOAD", &preload)
        .env(session::ENV_FD, high.to_string())
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
    if null_stdin {
        command.stdin(std::process::Stdio::null());
    }
    // SAFETY: setpgid is async-signal-safe; runs in the child before exec.
    unsafe {
        command.pre_exec(move || {
            libc::setpgid(0, 0);
            if high != fd {
                if libc::dup2(fd, high) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot run `{}`", argv[0]))
}

/// Split a -c command line like a shell would (no shell is run).
pub(crate) fn split_command(cmd: &str) -> anyhow::Result<Vec<String>> {
    let argv =
        shlex::split(cmd).with_context(|| format!("cannot split the command line `{cmd}`"))?;
    if argv.is_empty() {
        return Err(anyhow!("the command is empty"));
    }
    Ok(argv)
}

/// Does a ptap runtime's control thread run in `pid` (an active session)?
/// (A thread that has not yet named itself still has its creator's name:
/// `ptap-ctl` is started by `ptap-attach` under `-x`.)
fn session_running(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| matches!(c.trim_end(), "ptap-ctl" | "ptap-attach"))
        })
}

/// Load the runtime snapshot `snap` into the running process `pid`
/// (`-x PID`): it joins session `owned` and loads `module` (plus the
/// extra `params`, runtime environment names). Returns when the
/// runtime's constructor has run: the probes are armed.
///
/// `second_ok`: whether this session may load a second copy of the
/// runtime into a process that has the (inert) runtime of an earlier
/// session; Err says why not.
pub(crate) fn attach_to(
    pid: i32,
    snap: &RuntimeSnapshot,
    owned: &OwnedSession,
    module: &Path,
    params: &[(&str, &str)],
    second_ok: Result<(), &str>,
    verbose: u8,
) -> anyhow::Result<Attached> {
    let t0 = Instant::now();
    crate::inject::check_pid(pid)?;
    let maps = crate::inject::mappings(pid)?;
    let mut mode = crate::inject::DLOPEN_FIRST;
    if let Some(m) = maps.iter().find(|m| m.path.contains("libptap_rt.so")) {
        mode = crate::inject::DLOPEN_SECOND;
        // A runtime of an earlier session (`-x`, or `-c` then detached).
        if session_running(pid) {
            return Err(anyhow!(
                "pid {pid} is being probed by another ptap session right now (its runtime's ptap-ctl thread runs): stop that one first"
            ));
        }
        if let Err(why) = second_ok {
            return Err(anyhow!(
                "pid {pid} already has a ptap runtime from an earlier session ({}): {why}",
                m.path
            ));
        }
        // That one stays inert; this session loads a second copy, which
        // must be a file of its own (dlopen would return the loaded one
        // for another link to the same file).
        snap.private_copy()?;
        if verbose > 0 {
            eprintln!(
                "ptap: pid {pid} keeps the inert runtime of an earlier session ({}); loading a second copy",
                m.path
            );
        }
    }
    let fns = crate::inject::find_dlopen(pid, &maps)?;
    let mut text = format!(
        "{}={}\n{}={}\n",
        session::ENV_PATH,
        owned.path_for_target(),
        session::ENV_MODULE,
        module.display()
    );
    if verbose > 0 {
        text.push_str("PTAP_VERBOSE=1\n");
    }
    if let Ok(v) = std::env::var("PTAP_INIT_TIMEOUT") {
        text.push_str(&format!("PTAP_INIT_TIMEOUT={}\n", v.trim()));
    }
    for (k, v) in params {
        text.push_str(&format!("{k}={v}\n"));
    }
    let file = snap.dir.write(
        &ptap_rt_core::lifecycle::attach_params_name(pid),
        text.as_bytes(),
    )?;
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&file);
    // The target maps the session during the attach; its file goes then.
    struct Unlink<'a>(&'a OwnedSession);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            self.0.unlink();
        }
    }
    let _unlink = Unlink(owned);
    let attached = Attached::new(pid);
    let (times, ret) =
        crate::inject::inject(pid, &snap.path, mode, &fns, "ptap_rt_attach", verbose)?;
    if ret <= 0 {
        return Err(anyhow!(
            "the runtime loaded into pid {pid} did not start (ptap_rt_attach returned {ret})"
        ));
    }
    // The runtime starts on a thread of its own (`ret`), which ends once
    // the probes are armed.
    let t_arm = Instant::now();
    let task = format!("/proc/{pid}/task/{ret}/stat");
    let running = || {
        std::fs::read_to_string(&task).is_ok_and(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, r)| r.chars().next())
                .is_some_and(|st| st != 'Z' && st != 'X')
        })
    };
    let mut warned = false;
    while running() {
        if !warned && t_arm.elapsed() > Duration::from_secs(10) {
            warned = true;
            eprintln!("ptap: pid {pid} is still arming its probes after 10 s...");
        }
        if interrupted() && t_arm.elapsed() > Duration::from_secs(1) {
            // Ctrl-C: the session loop detaches whatever is registered.
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    if verbose > 0 {
        eprintln!(
            "ptap: attached to pid {pid} in {:.2?}: dlopen from {} on one thread, that thread was stopped {:.2?} (injected calls: dlopen {:.2?}, start {:.2?}; {} retries for a safe spot); the runtime's start-up and probe arming then took {:.2?} on a thread of its own; the process's threads ran on",
            t0.elapsed(),
            fns.from,
            times.paused,
            times.call.saturating_sub(times.init),
            times.init,
            times.retries,
            t_arm.elapsed()
        );
    }
    let c = owned.session.control();
    if c.attaches.load(Ordering::Acquire) == 0 {
        return Err(anyhow!(
            "the runtime was loaded into pid {pid} but did not join the session (it could not open {}?)",
            owned.path_for_target()
        ));
    }
    Ok(attached)
}
