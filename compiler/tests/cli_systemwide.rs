//! System-wide mode (neither -c nor -x): system call points on the kernel's
//! tracepoints and function points on the uprobe PMU, for every process.
//! The processes observed are started by the test, not by ptap. Readiness
//! comes from ptap's `-v` "armed" line or from running the workload until
//! ptap has stopped, never from sleeps; -T values are hang guards or the
//! mission one-liner's own stop.
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use support::{ptap, run_cmd};

const SECS: Duration = Duration::from_secs(120);

/// A private copy of a program (a name of our own: execname() and the
/// uprobe's inode belong to this test only).
fn copy_of(src: &std::path::Path, name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("systemwide")
        .join(format!("{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    support::copy_executable(src, &p);
    p
}

/// A running ptap whose stderr lines arrive on a channel and whose stdout
/// is collected.
struct Session {
    child: Child,
    err: Receiver<String>,
    out: std::thread::JoinHandle<String>,
    errlog: Vec<String>,
}

impl Session {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Session {
        let mut c = ptap();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn ptap");
        let so = child.stdout.take().unwrap();
        let se = child.stderr.take().unwrap();
        let (tx, rx): (Sender<String>, _) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(se).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(so), &mut s);
            s
        });
        Session {
            child,
            err: rx,
            out,
            errlog: Vec::new(),
        }
    }

    /// Wait for the stderr line containing `what` (ptap -v's "armed").
    fn wait_err(&mut self, what: &str) {
        loop {
            match self.err.recv_timeout(SECS) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.errlog.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no `{what}` from ptap; stderr:\n{}", self.errlog.join("\n")),
            }
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit; (status, stdout, stderr).
    fn finish(mut self) -> (i32, String, String) {
        let st = self.child.wait().unwrap();
        let out = self.out.join().unwrap();
        while let Ok(l) = self.err.recv_timeout(Duration::from_millis(200)) {
            self.errlog.push(l);
        }
        (st.code().unwrap_or(-1), out, self.errlog.join("\n"))
    }
}

/// Run `cmd` again and again until ptap has stopped (with a bound).
fn run_until_stopped(s: &mut Session, mut cmd: impl FnMut() -> Command) {
    let t = std::time::Instant::now();
    while s.running() {
        assert!(t.elapsed() < SECS, "ptap did not stop");
        let _ = cmd().stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

#[test]
fn mission_one_liner_sees_failed_opens_of_other_processes() {
    let mut s = Session::start(
        &[
            "-T",
            "2",
            "-e",
            "probe kretprobe(sys_open) < if ret<0 print(ret) >",
        ],
        &[],
    );
    run_until_stopped(&mut s, || {
        let mut c = Command::new("cat");
        c.arg("/nonexistent");
        c
    });
    let (code, out, err) = s.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"-2"), "no -2 in:\n{out}\nstderr:\n{err}");
    for l in &lines {
        let v: i64 = l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}"));
        assert!(v < 0, "a non-negative return printed: {v}");
    }
}

#[test]
fn leading_condition_becomes_a_kernel_filter() {
    let (code, _, err) = {
        let s = Session::start(
            &[
                "-v",
                "-T",
                "0",
                "-e",
                "probe kretprobe(sys_open) < if ret<0 print(ret) > probe kprobe(sys_close) { if (arg1 == 7 && pid() > 0) print(1) }",
            ],
            &[],
        );
        s.finish()
    };
    assert_eq!(code, 0, "{err}");
    let me_free = |l: &str| l.split("common_pid").next().unwrap_or("").to_string();
    let line = |tp: &str| {
        err.lines()
            .find(|l| l.contains(&format!("syscalls:{tp}: filter")))
            .unwrap_or_else(|| panic!("no filter line for {tp}:\n{err}"))
            .to_string()
    };
    for tp in [
        "sys_exit_open",
        "sys_exit_openat",
        "sys_exit_openat2",
        "sys_exit_creat",
    ] {
        assert!(
            me_free(&line(tp)).ends_with("filter `(ret < 0) && "),
            "{}",
            line(tp)
        );
    }
    // `pid() > 0` is not a tracepoint field: only `arg1 == 7` is pushed.
    assert!(
        me_free(&line("sys_enter_close")).ends_with("filter `(fd == 7) && "),
        "{}",
        line("sys_enter_close")
    );
}

#[test]
fn counts_by_execname_see_the_tests_child() {
    let cat = copy_of(std::path::Path::new("/bin/cat"), "ptapswcat");
    let mut s = Session::start(
        &[
            "-T",
            "2",
            "-e",
            "global c probe kretprobe(sys_open) { c[execname()]++ }",
        ],
        &[],
    );
    run_until_stopped(&mut s, || {
        let mut c = Command::new(&cat);
        c.arg("/nonexistent");
        c
    });
    let (code, out, err) = s.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    let n: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("c[\"ptapswcat\"]="))
        .unwrap_or_else(|| panic!("the child is not counted:\n{out}"))
        .parse()
        .unwrap();
    assert!(n >= 1);
}

/// Start tests/targets/sw_loop (a private copy) with piped stdin/stdout.
struct Loop {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    path: PathBuf,
}

impl Loop {
    fn start(name: &str) -> Loop {
        let path = copy_of(&support::compile("sw_loop"), name);
        let mut child = Command::new(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Loop { child, lines, path }
    }

    fn ask(&mut self, cmd: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        self.lines.next().unwrap().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (link-time address, file offset) of function `name` in the ELF file.
fn symbol(path: &std::path::Path, name: &str) -> (u64, u64) {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let addr = f
        .symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .unwrap();
    let off = f
        .segments()
        .find_map(|seg| {
            let (start, (foff, fsize)) = (seg.address(), seg.file_range());
            (addr >= start && addr < start + fsize).then(|| addr - start + foff)
        })
        .unwrap();
    (addr, off)
}

fn first_byte_in_file(path: &std::path::Path, name: &str) -> u8 {
    let (_, off) = symbol(path, name);
    std::fs::read(path).unwrap()[off as usize]
}

/// The first byte of `name` as the running process sees it (/proc/PID/mem).
fn first_byte_in_process(l: &Loop, name: &str) -> u8 {
    use std::os::unix::fs::FileExt;
    let (_, off) = symbol(&l.path, name);
    let pid = l.child.id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = l.path.to_string_lossy();
    let addr = maps
        .lines()
        .filter(|m| m.ends_with(&*path))
        .find_map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            let (lo, hi) = f[0].split_once('-')?;
            let lo = u64::from_str_radix(lo, 16).ok()?;
            let hi = u64::from_str_radix(hi, 16).ok()?;
            let moff = u64::from_str_radix(f[2], 16).ok()?;
            (off >= moff && off < moff + (hi - lo)).then(|| lo + off - moff)
        })
        .unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8; 1];
    mem.read_exact_at(&mut b, addr).unwrap();
    b[0]
}

#[test]
fn uprobe_on_a_process_started_outside_ptap() {
    let mut target = Loop::start("sw_loop_up");
    let path = target.path.display().to_string();
    let script = format!(
        r#"global n, s, a, f, m, h, bad
probe kprobe("{path}":work) {{
  a += arg1; f = probefunc(); m[arg1 % 3]++
  try {{ x = user_string(arg1) }} catch {{ bad++ }}
}}
probe kretprobe("{path}":work) {{ n++; s += ret; h <<< ret; if (n == 100) exit() }}
probe end {{
  printf("n=%d s=%d a=%d f=%s\n", n, s, a, f)
  foreach (k+ in m) printf("m[%d]=%d\n", k, m[k])
  printf("max=%d count=%d bad=%d\n", @max(h), @count(h), bad)
}}"#
    );
    let mut s = Session::start(&["-v", "-T", "120", "-e", &script], &[]);
    s.wait_err("armed");
    // The kernel's breakpoint is in the running process's copy of `work`.
    let original = first_byte_in_file(&target.path, "work");
    assert_eq!(first_byte_in_process(&target, "work"), 0xcc);
    assert_eq!(target.ask("w 100"), "done 10000");
    let (code, out, err) = s.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    // sum of 2i+1 and of i for i < 100.
    assert!(
        out.contains("n=100 s=10000 a=4950 f=work"),
        "out:\n{out}\nerr:\n{err}"
    );
    // Arrays, foreach, aggregates and end probes as in-process.
    assert!(
        out.contains("m[0]=34\nm[1]=33\nm[2]=33\nmax=199 count=100 bad=100\n"),
        "out:\n{out}"
    );
    // Reads of the sampled process that failed (work's argument is no
    // pointer) are counted, caught or not.
    assert!(
        err.contains("Reads of sampled processes that failed (the process had exited or the address was unmapped): 100"),
        "{err}"
    );
    // Nothing stays behind: no uprobe on the file, and the process goes on.
    let events = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(!events.contains(&path), "{events}");
    assert_eq!(first_byte_in_process(&target, "work"), original);
    assert_ne!(original, 0xcc);
    assert_eq!(target.ask("w 1"), "done 10001");
}

#[test]
fn lost_records_are_counted_with_a_tiny_ring() {
    let mut target = Loop::start("sw_loop_lost");
    let pid = target.child.id().to_string();
    let mut s = Session::start(
        &[
            "-v",
            "-T",
            "120",
            "-e",
            "global n probe kprobe(sys_getppid) { if (pid() == $1) n++ } probe end { printf(\"n=%d\\n\", n) }",
            &pid,
        ],
        &[("PTAP_PERF_PAGES", "1")],
    );
    s.wait_err("armed");
    const CALLS: i64 = 200_000;
    assert_eq!(target.ask(&format!("s {CALLS}")), "done 0");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    let (code, out, err) = s.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    let n: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("n="))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    let lost: i64 = err
        .lines()
        .find_map(|l| l.strip_prefix("WARNING: Kernel records lost"))
        .and_then(|l| l.rsplit(": ").next())
        .unwrap_or_else(|| panic!("no lost-records line:\n{err}"))
        .parse()
        .unwrap();
    assert!(n < CALLS && lost > 0, "n={n} lost={lost}");
    // Every call was either handled or counted as lost (lost records may
    // include other processes' calls).
    assert!(n + lost >= CALLS, "n={n} lost={lost}");
}

fn one_line_error(args: &[&str], uid: Option<u32>) -> String {
    let mut c = ptap();
    c.args(args);
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    o.stderr
}

#[test]
fn not_root_is_a_clear_error() {
    // `nobody` has neither root nor CAP_PERFMON.
    let e = one_line_error(
        &["-e", "probe kretprobe(sys_open) < if ret<0 print(ret) >"],
        Some(65534),
    );
    assert!(e.contains("perf_event_paranoid"), "{e}");
    assert!(e.contains("root or CAP_PERFMON"), "{e}");
}

#[test]
fn a_function_point_without_a_file_is_a_clear_error() {
    let e = one_line_error(&["-e", "probe kprobe(work) { print(1) }"], None);
    assert!(e.contains("kprobe(work) names no file"), "{e}");
    assert!(e.contains("-c CMD or -x PID"), "{e}");
}

#[test]
fn kernel_functions_need_kprobes() {
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let e = one_line_error(&["-e", "probe kprobe(kernel:do_fork) { print(1) }"], None);
        assert!(e.contains("kernel functions are not probed"), "{e}");
    } else {
        let e = one_line_error(&["-e", "probe kprobe(kernel:do_fork) { print(1) }"], None);
        assert!(e.contains("CONFIG_KPROBES is off"), "{e}");
    }
}
