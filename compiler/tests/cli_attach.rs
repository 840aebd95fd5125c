//! `ptap -x PID`: attaching to a process the test started itself (not
//! ptap): probes fire, Ctrl-C detaches and the process goes on with its
//! code as it was; its exit ends the session; threads that already ran are
//! probed; a system call the injected thread was blocked in is restarted;
//! bad pids are clear errors. Readiness comes from the scripts themselves
//! (a line printed once enough hits were counted), never from sleeps.
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{ptap, run_cmd, target};

const SECS: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("attach")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process whose stdout lines arrive on a channel and whose
/// stderr is collected.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The stderr reader (joined once the process has exited, so that
    /// `stderr()` has all of it).
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn spawn(mut c: Command) -> Proc {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        let so = child.stdout.take().unwrap();
        let se = child.stderr.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(so).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for l in BufReader::new(se).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Proc {
            child,
            lines: rx,
            stderr,
            stderr_reader: Some(stderr_reader),
            stdin,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(SECS) {
            Ok(l) => l,
            Err(e) => {
                let st = self.child.try_wait();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "no line ({e}); status {st:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    /// The rest of stdout, once the process has exited.
    fn rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(SECS) {
            v.push(l);
        }
        v
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                if let Some(r) = self.stderr_reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            if t0.elapsed() > SECS {
                let _ = self.child.kill();
                panic!(
                    "pid {} did not exit; stderr:\n{}",
                    self.pid(),
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn interrupt(&self) {
        // SAFETY: signalling a child of ours.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The target, started by the test: `NAME FLAG 60 7 [extra]`.
fn start_target(name: &str, flag: &std::path::Path, extra: &[&str]) -> Proc {
    let mut c = Command::new(target(name));
    c.arg(flag).arg("60").arg("7").args(extra);
    Proc::spawn(c)
}

fn start_ptap(pid: i32, prog: &str, extra: &[&str]) -> Proc {
    let mut c = ptap();
    c.arg("-x")
        .arg(pid.to_string())
        .args(extra)
        .arg("-e")
        .arg(prog);
    Proc::spawn(c)
}

/// After ptap detached: the target still runs; once FLAG exists it prints
/// its code bytes as they were before the attach, and exits with 7.
fn target_goes_on(t: &mut Proc, flag: &std::path::Path, before: &str, last: &str) {
    assert!(t.alive(), "the target died: {}", t.stderr());
    std::fs::write(flag, b"").unwrap();
    let after = t.line();
    assert_eq!(
        after.trim_start_matches("after="),
        before.trim_start_matches("before="),
        "probes left in the code"
    );
    let done = t.line();
    assert!(done.starts_with(last), "{done}");
    let st = t.wait();
    assert_eq!(st.code(), Some(7), "{st:?}: {}", t.stderr());
}

#[test]
fn attach_counts_hits_then_ctrl_c_detaches_and_the_target_goes_on() {
    let d = scratch("counts");
    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let before = t.line();
    assert!(before.starts_with("before="), "{before}");
    let prog = r#"global n, r, said
        probe kprobe(work) { n++ }
        probe kretprobe(work) { r++ }
        probe timer.ms(10) { if (n >= 20 && r >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("hits>=20: %d rets>=20: %d target=%d\n", n >= 20, r >= 20, target()) }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    p.interrupt();
    let st = p.wait();
    let out = p.rest();
    assert_eq!(st.code(), Some(0), "{out:?}\n{}", p.stderr());
    assert_eq!(
        out,
        vec![format!("hits>=20: 1 rets>=20: 1 target={}", t.pid())],
        "{}",
        p.stderr()
    );
    assert!(
        p.stderr().contains(&format!(
            "ptap: detached from pid {}; it keeps running",
            t.pid()
        )),
        "{}",
        p.stderr()
    );
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
    support::remove_snapshot(p.child.id());
}

#[test]
fn the_target_exiting_ends_the_session() {
    let d = scratch("exit");
    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let before = t.line();
    let prog = r#"global n, said
        probe kprobe(work) { n++ }
        probe timer.ms(10) { if (n >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("end hits>=20: %d\n", n >= 20) }"#;
    let mut p = start_ptap(t.pid(), prog, &["-v"]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    std::fs::write(&flag, b"").unwrap();
    let after = t.line();
    // The target exits with the probes in: its code is patched here.
    assert!(after.starts_with("after="), "{after}");
    assert!(t.line().starts_with("done calls>=10: 1"));
    assert_eq!(t.wait().code(), Some(7));
    let st = p.wait();
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    assert_eq!(p.rest(), vec!["end hits>=20: 1".to_string()]);
    assert!(
        p.stderr()
            .contains(&format!("ptap: the target (pid {}) exited", t.pid())),
        "{}",
        p.stderr()
    );
    assert!(!p.stderr().contains("keeps running"), "{}", p.stderr());
    let _ = before;
}

/// Four threads of `wait_threads` already run when ptap attaches: `point`
/// (which each of them hits in its loop) must be seen on all four.
fn four_running_threads_hit(name: &str, point: &str) {
    let d = scratch(name);
    let flag = d.join("flag");
    let mut t = start_target("wait_threads", &flag, &["4"]);
    let before = t.line();
    let prog = format!(
        r#"global n, said
        probe {point} {{ n[tid()]++ }}
        probe timer.ms(10) {{
            k = 0
            foreach (x in n) if (n[x] >= 20) k++
            if (k == 4 && !said) {{ said = 1; printf("ready\n") }}
        }}
        probe end {{ k = 0; foreach (x in n) k++; printf("threads=%d\n", k) }}"#
    );
    let mut p = start_ptap(t.pid(), &prog, &[]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    p.interrupt();
    assert_eq!(p.wait().code(), Some(0), "{}", p.stderr());
    assert_eq!(p.rest(), vec!["threads=4".to_string()], "{}", p.stderr());
    target_goes_on(&mut t, &flag, &before, "threads ran: 4");
    support::remove_snapshot(p.child.id());
}

#[test]
fn threads_that_already_run_are_probed() {
    four_running_threads_hit("threads", "kprobe(work)");
}

#[test]
fn syscall_probes_arm_threads_that_already_run() {
    // Each thread calls access() in its loop.
    four_running_threads_hit("sys", "kprobe(sys_access)");
}

#[test]
fn a_blocking_read_the_thread_was_in_is_restarted() {
    // `head -c 6` blocked in read(2) on an empty pipe: the injected call
    // interrupts it; after the detach the read must go on (not fail with
    // EINTR) and return what the test writes.
    let mut c = Command::new("head");
    c.arg("-c").arg("6");
    let mut t = Proc::spawn(c);
    let prog = r#"global said
        probe kprobe(read) { }
        probe timer.ms(10) { if (!said) { said = 1; printf("ready\n") } }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    // Timers run once the probes are armed (the session loop starts then).
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    p.interrupt();
    assert_eq!(p.wait().code(), Some(0), "{}", p.stderr());
    assert!(t.alive(), "head died: {}", t.stderr());
    let mut stdin = t.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    assert_eq!(t.line(), "hello");
    let st = t.wait();
    assert_eq!(st.code(), Some(0), "{}", t.stderr());
    assert_eq!(t.stderr(), "");
    support::remove_snapshot(p.child.id());
}

#[test]
fn ptap_load_attaches_a_c_module() {
    let d = scratch("load");
    let flag = d.join("flag");
    let m = support::module("count");
    // The module reads its settings from the target's environment.
    let mut c = Command::new(target("wait_file"));
    c.arg(&flag).arg("60").arg("7").env("PT_PRINT", "1");
    let mut t = Proc::spawn(c);
    let before = t.line();
    let mut l = ptap();
    l.arg("load").arg(&m).arg("-x").arg(t.pid().to_string());
    let mut p = Proc::spawn(l);
    // init_module's line, and one line per hit (the process's thread runs
    // while init_module registers: either may come first).
    let (mut registered, mut hit) = (false, false);
    while !(registered && hit) {
        let l = p.line();
        if l == format!("register=0 pid={}", t.pid()) {
            registered = true;
        } else {
            // (ip is relative to the probe address; hits that come while
            // the probe is being live-patched take the int3 path.)
            assert!(l.starts_with("pre ip="), "{l}");
            hit = true;
        }
    }
    p.interrupt();
    let st = p.wait();
    assert_eq!(st.code(), Some(130), "{}", p.stderr());
    let rest = p.rest();
    let hits = rest
        .iter()
        .find_map(|l| l.strip_prefix("hits="))
        .unwrap_or_else(|| panic!("{rest:?}"));
    let n: u64 = hits.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 1, "{rest:?}");
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
    support::remove_snapshot(p.child.id());
}

#[test]
fn bad_pids_are_clear_errors() {
    // A pid that existed and was reaped: free (pids are not reused at once).
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let mut c = ptap();
    c.arg("-x")
        .arg(pid.to_string())
        .arg("-e")
        .arg("probe kprobe(work) { }");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains(&format!("-x {pid}: no such process")),
        "{o:?}"
    );

    let mut c = ptap();
    c.args(["-x", "1", "-c", "true", "-e", "probe kprobe(work) { }"]);
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("cannot be used with"), "{o:?}");

    // A point the running process does not have: nothing is injected.
    let flag = scratch("badpoint").join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let _ = t.line();
    let mut c = ptap();
    c.arg("-x")
        .arg(t.pid().to_string())
        .arg("-e")
        .arg("probe kprobe(no_such_function) { }");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("resolved to nothing"), "{o:?}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    assert!(!maps.contains("libptap_rt"), "runtime loaded anyway");
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(t.wait().code(), Some(7));
}

#[test]
fn a_failed_dlopen_leaves_the_target_as_it_was() {
    // A "runtime" that exports ptap_rt_attach but needs a library that is
    // not there: dlopen fails inside the target; ptap reports dlerror() and
    // puts the thread back; the target finishes normally.
    let d = scratch("dlfail");
    let lib = d.join("libptapgone.so");
    let src = d.join("fake.c");
    std::fs::write(&src, "int ptap_rt_attach(void) { return 0; }\nint gone(void);\nint use(void) { return gone(); }\n").unwrap();
    let gone_src = d.join("gone.c");
    std::fs::write(&gone_src, "int gone(void) { return 1; }\n").unwrap();
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&gone_src)
        .status()
        .unwrap();
    assert!(st.success());
    let fake = d.join("fake.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&fake)
        .arg(&src)
        .arg("-L")
        .arg(&d)
        .arg("-lptapgone")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(&lib).unwrap();

    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let before = t.line();
    let mut c = ptap();
    c.env("PTAP_RUNTIME", &fake)
        .arg("-x")
        .arg(t.pid().to_string())
        .arg("-e")
        .arg("probe kprobe(work) { }");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("failed in pid") && o.stderr.contains("libptapgone.so"),
        "{o:?}"
    );
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
}

#[test]
fn without_probes_in_the_process_nothing_is_loaded_there() {
    // Only ptap-side probes: target() is PID and nothing is injected.
    let flag = scratch("noload").join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let _ = t.line();
    let mut c = ptap();
    c.arg("-x")
        .arg(t.pid().to_string())
        .arg("-e")
        .arg(r#"probe timer.ms(10) { printf("target=%d\n", target()); exit() }"#);
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, format!("target={}\n", t.pid()));
    assert_eq!(o.stderr, "", "{o:?}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    assert!(!maps.contains("libptap_rt"), "runtime loaded");
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(t.wait().code(), Some(7));
}

#[test]
fn a_process_can_be_attached_to_again_after_a_detach() {
    let d = scratch("again");
    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let before = t.line();
    let prog = r#"global n, r, said
        probe kprobe(work) { n++ }
        probe kretprobe(work) { r++ }
        probe timer.ms(10) { if (n >= 20 && r >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("hits>=20: %d rets>=20: %d\n", n >= 20, r >= 20) }"#;
    for round in 0..3 {
        let mut p = start_ptap(t.pid(), prog, &["-v"]);
        assert_eq!(p.line(), "ready", "round {round}: {}", p.stderr());
        if round == 0 {
            // While a session runs, a second one is refused.
            let mut c = ptap();
            c.arg("-v")
                .arg("-x")
                .arg(t.pid().to_string())
                .arg("-e")
                .arg("probe kprobe(work) { }");
            let o = run_cmd(c, SECS);
            assert_eq!(o.code, Some(1), "{o:?}");
            assert!(
                o.stderr.contains("is being probed by another ptap session"),
                "{o:?}"
            );
        }
        p.interrupt();
        assert_eq!(p.wait().code(), Some(0), "{}", p.stderr());
        assert_eq!(
            p.rest(),
            vec!["hits>=20: 1 rets>=20: 1".to_string()],
            "round {round}: {}",
            p.stderr()
        );
        assert_eq!(
            p.stderr().contains("loading a second copy"),
            round > 0,
            "{}",
            p.stderr()
        );
        support::remove_snapshot(p.child.id());
    }
    // A C module cannot use a second copy of the runtime: refused.
    let mut c = ptap();
    c.arg("load")
        .arg(support::module("count"))
        .arg("-x")
        .arg(t.pid().to_string());
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("a C module cannot use a second copy"),
        "{o:?}"
    );
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
}

#[test]
fn a_statically_linked_process_is_a_clear_error() {
    let src = support::root().join("tests/targets/wait_file.c");
    let bin = support::build(
        "cc",
        &src,
        &support::out_dir().join("wait_file_static"),
        &["-O2", "-static"],
        &[],
    );
    let d = scratch("static");
    let flag = d.join("flag");
    let mut c = Command::new(&bin);
    c.arg(&flag).arg("60").arg("7");
    let mut t = Proc::spawn(c);
    let before = t.line();
    let mut c = ptap();
    c.arg("-x")
        .arg(t.pid().to_string())
        .arg("-e")
        .arg("probe kprobe(work) { }");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("statically linked"), "{o:?}");
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
}

#[test]
fn a_process_of_another_user_can_be_attached_to_by_root() {
    // ptap runs as root here; the process runs as nobody: it can open
    // neither /proc/<ptap>/fd/N nor a private XDG_RUNTIME_DIR.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let d = scratch("otheruser");
    let flag = d.join("flag");
    let xdg = d.join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(target("wait_file"))
        .arg(&flag)
        .arg("60")
        .arg("7");
    let mut t = Proc::spawn(c);
    let before = t.line();
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    let prog = r#"global n, said
        probe kprobe(work) { n++ }
        probe timer.ms(10) { if (n >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("hits>=20: %d\n", n >= 20) }"#;
    let mut c = ptap();
    c.env("XDG_RUNTIME_DIR", &xdg)
        .arg("-x")
        .arg(t.pid().to_string())
        .arg("-e")
        .arg(prog);
    let mut p = Proc::spawn(c);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    p.interrupt();
    assert_eq!(p.wait().code(), Some(0), "{}", p.stderr());
    assert_eq!(p.rest(), vec!["hits>=20: 1".to_string()]);
    let leftover = std::fs::read_dir("/dev/shm").unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("ptap-session-{}-", p.child.id()))
    });
    assert!(!leftover, "the session file was left in /dev/shm");
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
    support::remove_snapshot(p.child.id());
}

/// `ptap load -x` of a module whose init_module() faults or never returns
/// (abandoned after PTAP_INIT_TIMEOUT), or whose cleanup_module() faults:
/// the fault is reported, what the module registered is taken out, ptap
/// exits with status 1, and the process runs on with its code as it was.
#[test]
fn a_faulting_or_hanging_module_leaves_the_attached_process_running() {
    let cases = [
        ("PT_INIT", "fault", "init_module() of"),
        ("PT_INIT", "hang", "did not return within 2 s"),
        ("PT_CLEANUP", "fault", "cleanup_module() of"),
    ];
    for (var, val, what) in cases {
        let d = scratch(&format!("badmod-{var}-{val}"));
        let flag = d.join("flag");
        let mut c = Command::new(target("wait_file"));
        c.arg(&flag).arg("60").arg("7").env(var, val);
        let mut t = Proc::spawn(c);
        let before = t.line();
        let mut l = ptap();
        l.arg("load")
            .arg(support::module("badinit"))
            .arg("-x")
            .arg(t.pid().to_string())
            .env("PTAP_INIT_TIMEOUT", "2");
        let mut p = Proc::spawn(l);
        assert_eq!(p.line(), "register=0", "{}", p.stderr());
        let init = var == "PT_INIT";
        if !init {
            p.interrupt();
        }
        let st = p.wait();
        let rest = p.rest();
        let err = p.stderr();
        assert_eq!(st.code(), Some(1), "{var}={val}: {rest:?}\n{err}");
        assert!(err.contains(what), "{var}={val}: {err}");
        if init {
            assert!(err.contains("keeps running, unprobed"), "{err}");
            assert!(rest.is_empty(), "cleanup_module() ran: {rest:?}");
        } else {
            assert_eq!(rest, vec!["cleanup hits>0=1"], "{err}");
        }
        target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
        support::remove_snapshot(p.child.id());
    }
}

/// A server that blocked every signal before starting its workers (and
/// sigwaits in a thread of its own): ptap takes SIGTRAP and the other
/// signals the runtime handles out of those threads' masks before the
/// probes go in, so that a trap-path hit there does not kill the process.
#[test]
fn threads_that_block_every_signal_survive_trap_path_probes() {
    let d = scratch("masked-threads");
    let flag = d.join("flag");
    let mut t = start_target("masked_threads", &flag, &[]);
    assert_eq!(t.line(), "ready");
    let prog = r#"global n
        probe kprobe(work) { n++ }
        probe timer.ms(10) { if (n >= 200) exit() }
        probe end { printf("hits>=200: %d\n", n >= 200) }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    let st = p.wait();
    let out = p.rest();
    assert_eq!(st.code(), Some(0), "{out:?}\n{}", p.stderr());
    assert_eq!(out, vec!["hits>=200: 1"], "{}", p.stderr());
    assert!(t.alive(), "the target died: {}", t.stderr());
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(t.line(), "done calls>=1000: 1");
    let st = t.wait();
    assert_eq!(st.code(), Some(7), "{st:?}: {}", t.stderr());
    support::remove_snapshot(p.child.id());
}

/// After the attach, the process's own calls that set masks
/// (pthread_sigmask, sigprocmask) go through the runtime, which keeps
/// SIGTRAP & co. out of them: the workers block every signal again and
/// keep calling a trap-path function.
#[test]
fn masks_set_after_the_attach_never_block_the_trap_path() {
    let d = scratch("masked-late");
    let flag = d.join("flag");
    let mut t = start_target("masked_threads", &flag, &["late"]);
    assert_eq!(t.line(), "ready");
    let prog = r#"global n, said
        probe kprobe(work) { n++ }
        probe timer.ms(10) { if (n >= 200 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("late calls counted: %d\n", n >= 2200) }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(t.line(), "done calls>=1000: 1");
    let st = t.wait();
    assert_eq!(st.code(), Some(7), "{st:?}: {}", t.stderr());
    let st = p.wait();
    let out = p.rest();
    assert_eq!(st.code(), Some(0), "{out:?}\n{}", p.stderr());
    assert_eq!(out, vec!["late calls counted: 1"], "{}", p.stderr());
    support::remove_snapshot(p.child.id());
}

/// A process that maps its own executable and libc a second time (read-only,
/// below where they are loaded, as ELF readers do): ptap finds the loaded
/// copies (the ones with code), calls the real dlopen, and probes.
#[test]
fn files_the_process_maps_again_do_not_mislead_the_attach() {
    let d = scratch("remap");
    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &["remap"]);
    let before = t.line();
    assert!(before.starts_with("before="), "{before}: {}", t.stderr());
    let prog = r#"global n, said
        probe kprobe(work) { n++ }
        probe timer.ms(10) { if (n >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("hits>=20: %d\n", n >= 20) }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    p.interrupt();
    assert_eq!(p.wait().code(), Some(0), "{}", p.stderr());
    assert_eq!(p.rest(), vec!["hits>=20: 1".to_string()], "{}", p.stderr());
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
    support::remove_snapshot(p.child.id());
}

/// What the runtime does in the attached process (its attach thread, that
/// thread's exit, its control thread) is not the target's: probes on
/// malloc and free see none of it. `wait_file` itself calls neither while
/// it waits.
#[test]
fn the_runtimes_own_calls_after_an_attach_are_not_the_targets() {
    let d = scratch("own_calls");
    let flag = d.join("flag");
    let mut t = start_target("wait_file", &flag, &[]);
    let before = t.line();
    let prog = r#"global n, m, f, said
        probe kprobe(work) { n++ }
        probe kprobe(libc:malloc) { m++ }
        probe kprobe(libc:free) { f++ }
        probe timer.ms(10) { if (n >= 20 && !said) { said = 1; printf("ready\n") } }
        probe end { printf("malloc %d free %d\n", m, f) }"#;
    let mut p = start_ptap(t.pid(), prog, &[]);
    assert_eq!(p.line(), "ready", "{}", p.stderr());
    // The control thread's periodic work happens meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    p.interrupt();
    let st = p.wait();
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    assert_eq!(
        p.rest(),
        vec!["malloc 0 free 0".to_string()],
        "{}",
        p.stderr()
    );
    target_goes_on(&mut t, &flag, &before, "done calls>=10: 1");
    support::remove_snapshot(p.child.id());
}

/// A thread asleep in an EINTR-visible call when a system call probe is
/// armed (here by an attach) is armed at its first watched call through
/// libc once it wakes: its failing opens are seen from then on. The
/// control thread's 10 ms polls alone caught a thread that sleeps 100 ms
/// at a time too rarely: 0 of ~25 opens seen in 3 s, in most runs.
#[test]
fn a_sleeping_thread_is_armed_for_syscall_probes_when_it_wakes() {
    let d = scratch("sleepy");
    let flag = d.join("flag");
    let mut c = Command::new(target("sleepy_opens"));
    c.arg(&flag).arg("60");
    let mut t = Proc::spawn(c);
    assert_eq!(t.line(), "ready");
    let prog = r#"global n
        probe kretprobe(sys_open) { if (ret < 0) n++ }
        probe kprobe(work) { }
        probe timer.ms(20) { if (n >= 15) exit() }
        probe end { printf("opens>=15: %d\n", n >= 15) }"#;
    // About 30 opens in 3 s once armed; -T bounds a slow machine's run.
    let mut p = start_ptap(t.pid(), prog, &["-T", "30"]);
    let st = p.wait();
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    assert_eq!(p.rest(), vec!["opens>=15: 1".to_string()], "{}", p.stderr());
    assert!(t.alive(), "{}", t.stderr());
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(t.wait().code(), Some(0));
    support::remove_snapshot(p.child.id());
}
