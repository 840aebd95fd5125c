//! The `ptap` binary end to end, for what spec files cannot express: two
//! runs compared (`-p4` + `ptap run` vs `-e`; with and without ptap),
//! Ctrl-C / exit() / -T detaching from a target that keeps running, lost
//! output records, probe point resolution errors.
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{ptap, run_cmd, target};

const SECS: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("cli")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ptap_e(prog: &str, cmd: &str, out: &Path, extra: &[&str]) -> support::Output {
    let mut c = ptap();
    c.args(extra)
        .arg("-o")
        .arg(out)
        .arg("-e")
        .arg(prog)
        .arg("-c")
        .arg(cmd);
    run_cmd(c, SECS)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn p4_module_then_run_gives_the_same_output_as_e() {
    let d = scratch("p4");
    let prog = r#"global n, lat
        probe begin { print("start") }
        probe jprobe(work) { n++; printf("work(%d)\n", arg1) }
        probe kretprobe(work) { lat <<< ret }
        probe end { printf("n=%d sum=%d\n", n, @sum(lat)) }"#;
    let cmd = format!("{} 4", target("hot"));

    let direct = d.join("direct.out");
    let a = ptap_e(prog, &cmd, &direct, &[]);
    assert_eq!(a.code, Some(0), "{a:?}");

    let m = d.join("m");
    let mut c = ptap();
    c.arg("-p4").arg("-m").arg(&m).arg("-e").arg(prog);
    let p4 = run_cmd(c, SECS);
    assert_eq!(p4.code, Some(0), "{p4:?}");
    let module = m.with_extension("o");
    assert_eq!(p4.stdout.trim(), module.to_string_lossy(), "{p4:?}");
    assert!(module.is_file());

    let via_run = d.join("run.out");
    let mut c = ptap();
    c.arg("run")
        .arg(&module)
        .arg("-o")
        .arg(&via_run)
        .arg("-c")
        .arg(&cmd);
    let b = run_cmd(c, SECS);
    assert_eq!(b.code, Some(0), "{b:?}");
    let expected = "start\nwork(0)\nwork(1)\nwork(2)\nwork(3)\nn=4 sum=16\n";
    assert_eq!(read(&direct), expected);
    assert_eq!(read(&via_run), expected);
    // The target's own output is not mixed into -o.
    assert_eq!(a.stdout, "sum=16 counter=6\n");
    assert_eq!(b.stdout, a.stdout);
}

#[test]
fn exit_status_is_1_for_compile_errors_and_bad_modules() {
    let mut c = ptap();
    c.arg("-e").arg("probe kprobe(work) { x = }");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("error"), "{o:?}");

    let d = scratch("badmod");
    let bad = d.join("bad.o");
    std::fs::write(&bad, b"not an object").unwrap();
    let mut c = ptap();
    c.arg("run").arg(&bad).arg("-c").arg("true");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("is not a ptap probe module"), "{o:?}");
}

#[test]
fn a_point_that_resolves_to_nothing_is_an_error_and_the_target_never_runs() {
    let d = scratch("unresolved");
    let hot = target("hot");
    let out = d.join("o");
    let o = ptap_e(
        "probe begin { print(\"begin\") } probe kprobe(no_such_function) { }",
        &format!("{hot} 3"),
        &out,
        &[],
    );
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains(&format!(
            "ptap: probe point kprobe(no_such_function) resolved to nothing: searched {hot}, libc.so.6, ld-linux-x86-64.so.2 (symbols from .symtab and .dynsym)"
        )),
        "{o:?}"
    );
    assert_eq!(o.stdout, "", "the target ran: {o:?}");
    assert_eq!(read(&out), "", "begin ran: {o:?}");
    // One message, not the runtime's refusal on top.
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");

    for (prog, msg) in [
        (
            "probe kprobe(libc:no_such_*) { }",
            "kprobe(libc:no_such_*) (pattern `no_such_*`) resolved to nothing: searched libc.so.6",
        ),
        (
            "probe kprobe(libnope:malloc) { }",
            "kprobe(libnope:malloc) resolved to nothing: no library `libnope`",
        ),
        (
            "probe kprobe(work+4096) { }",
            "kprobe(work+4096) is beyond the end of `work`",
        ),
        (
            "probe kprobe(work+1) { }",
            "kprobe(work+1) is not on an instruction boundary: work+0x1 in",
        ),
        (
            "probe kprobe(0x10) { }",
            "kprobe(0x10) resolved to nothing: 0x10 is not in the executable code",
        ),
    ] {
        let o = ptap_e(prog, &format!("{hot} 3"), &out, &[]);
        assert_eq!(o.code, Some(1), "{prog}: {o:?}");
        assert!(o.stderr.contains(msg), "{prog}: {o:?}");
        assert_eq!(o.stdout, "", "{prog}: the target ran: {o:?}");
    }
}

#[test]
fn optional_points_that_resolve_to_nothing_are_silent() {
    let d = scratch("optional");
    let out = d.join("o");
    let o = ptap_e(
        "global n probe kprobe(no_such_function)?, kprobe(libc:no_such_*)?, kprobe(work) { n++ } probe end { print(n) }",
        &format!("{} 5", target("hot")),
        &out,
        &[],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stderr, "", "{o:?}");
    assert_eq!(read(&out), "5\n");
}

#[test]
fn a_refused_point_stops_the_target_before_main() {
    // pat_trap resolves, but starts with an int3 the probe layer will not
    // displace: only the runtime can tell. The target must not run main
    // with some probes missing.
    let d = scratch("refused");
    let out = d.join("o");
    let o = ptap_e(
        "probe kprobe(pat_one) { } probe kprobe(pat_trap) { } probe end { print(\"end\") }",
        &format!("{} 3", target("patterns")),
        &out,
        &[],
    );
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("cannot register probe kprobe(pat_trap)"),
        "{o:?}"
    );
    assert!(o.stderr.contains("stops before main"), "{o:?}");
    assert_eq!(o.stdout, "", "main ran: {o:?}");
    assert_eq!(read(&out), "", "{o:?}");
}

#[test]
fn processes_the_target_execs_arm_what_resolves_there() {
    // sh is the target: `work` is not in sh (optional there), but the hot
    // program sh runs has it and is probed; with -v each process says
    // what it armed and what it left out.
    let d = scratch("exec");
    let out = d.join("o");
    let o = ptap_e(
        "global n probe kprobe(work)? { n++ } probe end { print(n) }",
        &format!("sh -c '{} 7; true'", target("hot")),
        &out,
        &[],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(read(&out), "7\n", "{o:?}");
    assert_eq!(o.stdout, "sum=49 counter=21\n");

    // Not optional: `work` does not resolve in sh, the -c program.
    let o = ptap_e(
        "probe kprobe(work) { }",
        &format!("sh -c '{} 7; true'", target("hot")),
        &out,
        &[],
    );
    assert_eq!(o.code, Some(1), "{o:?}");
    // The executable is named by its canonical path (sh may be dash).
    let sh = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("sh"))
        .find(|p| p.is_file())
        .unwrap();
    let sh = std::fs::canonicalize(sh).unwrap();
    assert!(
        o.stderr.contains(&format!(
            "kprobe(work) resolved to nothing: searched {}, libc.so.6",
            sh.display()
        )),
        "{o:?}"
    );
}

/// A `lib:name` point is resolved through the dynamic linker's tables in
/// every process of the tree: none reads the libraries' symbol tables to
/// find it (that cost ~0.6 ms per exec'd process). A script whose handlers
/// name addresses has the index built before its first hit, and the names
/// are right.
#[test]
fn library_points_resolve_without_reading_symbol_tables() {
    let d = scratch("quick");
    let out = d.join("o");
    let cmd = "sh -c '/bin/true; /bin/true'";
    let o = ptap_e(
        "global n probe kprobe(libc:malloc) { n++ } probe end { print(n > 0) }",
        cmd,
        &out,
        &["-v"],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(read(&out), "1\n", "{o:?}");
    let armed = o.stderr.matches("probe(s) armed in").count();
    let quick = o
        .stderr
        .matches("resolved through the dynamic linker's symbol tables")
        .count();
    assert!(armed >= 3, "sh and the two trues: {o:?}");
    assert_eq!(quick, armed, "{o:?}");

    let o = ptap_e(
        "global n probe kprobe(libc:free) { if (n++ == 0) print(usymname(uaddr())) }",
        cmd,
        &out,
        &["-v"],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        !o.stderr.contains("dynamic linker's symbol tables"),
        "usymname() needs the index: {o:?}"
    );
    // `n` is the session's: one name, from the first hit of the tree.
    let names = read(&out);
    assert!(
        names.lines().count() == 2 && names.lines().next().is_some_and(|l| l.contains("free")),
        "{names:?} {o:?}"
    );
}

/// ptap running `wait_file FLAG 30 CODE` in the background.
struct Background {
    ptap: Child,
    out: PathBuf,
    flag: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
    /// ptap's stderr (a file: once ptap has exited, all it wrote is there;
    /// the target shares it and may write more later).
    stderr: PathBuf,
}

fn start_waiting(name: &str, prog: &str, extra: &[&str]) -> Background {
    let d = scratch(name);
    let flag = d.join("flag");
    let cmd = format!("{} {} 30 5", target("wait_file"), flag.display());
    start_bg(&d, &cmd, prog, extra)
}

/// `ptap [extra] -o DIR/out -e PROG -c CMD` in the background; DIR/flag is
/// the flag file of a wait_file target.
fn start_bg(d: &Path, cmd: &str, prog: &str, extra: &[&str]) -> Background {
    let flag = d.join("flag");
    let out = d.join("out");
    let mut c = ptap();
    c.args(extra)
        .arg("-o")
        .arg(&out)
        .arg("-e")
        .arg(prog)
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("stderr")).unwrap());
    let mut child = c.spawn().unwrap();
    let so = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(so).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let stderr = d.join("stderr");
    Background {
        ptap: child,
        out,
        flag,
        lines: rx,
        stderr,
    }
}

impl Background {
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(SECS) {
            Ok(l) => l,
            Err(e) => {
                let st = self.ptap.try_wait();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "the target printed nothing ({e}); ptap: {st:?}; its stderr:\n{}",
                    read(&self.stderr)
                )
            }
        }
    }

    /// Wait for ptap to exit; its status and stderr.
    fn wait_ptap(&mut self) -> (Option<i32>, String) {
        let t = Instant::now();
        let st = loop {
            if let Some(st) = self.ptap.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > SECS {
                let _ = self.ptap.kill();
                panic!("ptap did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let err = read(&self.stderr);
        (st.code(), err)
    }
}

/// work()'s first bytes in a run without ptap.
fn pristine_code_bytes(test: &str) -> String {
    // One directory per test: tests run in parallel, and scratch() empties it.
    let d = scratch(&format!("pristine-{test}"));
    let flag = d.join("flag");
    std::fs::write(&flag, b"").unwrap();
    let mut c = Command::new(target("wait_file"));
    c.arg(&flag).arg("5").arg("5");
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(5), "{o:?}");
    o.stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("before=")
        .to_string()
}

fn target_pid(stderr: &str) -> i32 {
    let l = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ptap: detached from pid "))
        .unwrap_or_else(|| panic!("no detach message:\n{stderr}"));
    l.split(';').next().unwrap().trim().parse().unwrap()
}

/// After ptap detached: the target is still running, finishes normally
/// when the flag appears, and its code is back to what it was.
fn target_goes_on(bg: &mut Background, stderr: &str, pristine: &str) {
    let pid = target_pid(stderr);
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the target died");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the target died");
    std::fs::write(&bg.flag, b"").unwrap();
    let after = bg.line();
    assert_eq!(
        after,
        format!("after={pristine}"),
        "probes left in the code"
    );
    let done = bg.line();
    assert!(done.starts_with("done calls>=10: 1"), "{done}");
    support::remove_snapshot(bg.ptap.id());
}

#[test]
fn ctrl_c_runs_end_probes_unregisters_and_lets_the_target_go_on() {
    let pristine = pristine_code_bytes("sigint");
    let mut bg = start_waiting(
        "sigint",
        "global n probe kprobe(work) { n++ } probe end { printf(\"end n>0=%d\\n\", n > 0) }",
        &[],
    );
    let before = bg.line();
    assert!(before.starts_with("before="), "{before}");
    assert_ne!(before, format!("before={pristine}"), "work() is not probed");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(bg.ptap.id() as i32, libc::SIGINT) };
    let (code, stderr) = bg.wait_ptap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read(&bg.out), "end n>0=1\n", "{stderr}");
    target_goes_on(&mut bg, &stderr, &pristine);
}

#[test]
fn exit_from_a_handler_detaches_like_ctrl_c() {
    let pristine = pristine_code_bytes("exit");
    let mut bg = start_waiting(
        "exit",
        "global n probe kprobe(work) { n++; if (n == 100) exit() } probe end { printf(\"end n>=100=%d\\n\", n >= 100) }",
        &[],
    );
    assert!(bg.line().starts_with("before="));
    let (code, stderr) = bg.wait_ptap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read(&bg.out), "end n>=100=1\n", "{stderr}");
    target_goes_on(&mut bg, &stderr, &pristine);
}

#[test]
fn t_secs_stops_after_the_time_and_detaches() {
    let pristine = pristine_code_bytes("timeout");
    let t = Instant::now();
    let mut bg = start_waiting(
        "timeout",
        "global n probe kprobe(work) { n++ } probe end { printf(\"end n>0=%d\\n\", n > 0) }",
        &["-T", "1"],
    );
    assert!(bg.line().starts_with("before="));
    let (code, stderr) = bg.wait_ptap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read(&bg.out), "end n>0=1\n", "{stderr}");
    target_goes_on(&mut bg, &stderr, &pristine);
}

#[test]
fn ptap_exits_when_the_command_exits_with_its_status_reported() {
    let d = scratch("cmdexit");
    let flag = d.join("flag");
    std::fs::write(&flag, b"").unwrap();
    let cmd = format!("{} {} 30 7", target("wait_file"), flag.display());
    let mut plain = Command::new("sh");
    plain.arg("-c").arg(&cmd);
    let plain = run_cmd(plain, SECS);
    assert_eq!(plain.code, Some(7));

    let out = d.join("o");
    let t = Instant::now();
    let o = ptap_e(
        "probe kprobe(work) { x = 1 / (arg1 - 3) }",
        &cmd,
        &out,
        // MAXERRORS=0 (the default) would end the session at the first
        // error and detach; keep it going to see the target exit.
        &["-v", "-D", "MAXERRORS=100"],
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // A runtime error: reported with its location, ptap exits 1, and the
    // target's output and exit status are those of a run without ptap.
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr
            .contains("ERROR: division by 0 near `1 / (arg1 - 3)` at <command line>:1:26 in probe kprobe(work)"),
        "{o:?}"
    );
    // (The target prints work()'s code bytes, which a probe changes.)
    let own = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("before=") && !l.starts_with("after="))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(own(&o.stdout), own(&plain.stdout));
    assert_eq!(own(&o.stdout), ["done calls>=10: 1 sum=145"]);
    assert!(o.stderr.contains("exited with status 7"), "{o:?}");
}

#[test]
fn lost_output_records_are_counted_never_silent() {
    let d = scratch("lost");
    let out = d.join("o");
    let n = 20000;
    let mut c = ptap();
    c.env("PTAP_RING_SIZE", "4096")
        .arg("-o")
        .arg(&out)
        .arg("-e")
        .arg(r#"probe kprobe(work) { printf("%d %s\n", arg1, "a line long enough to fill the ring") }"#)
        .arg("-c")
        .arg(format!("{} {n}", target("hot")));
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(0), "{o:?}");
    let printed = read(&out).lines().count();
    let lost: usize = o
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("WARNING: Output records lost (full output buffer): "))
        .unwrap_or_else(|| panic!("no loss report: {o:?}"))
        .parse()
        .unwrap();
    assert!(lost > 0);
    assert_eq!(printed + lost, n, "{o:?}");
}

#[test]
fn no_follow_probes_only_the_first_process() {
    let d = scratch("nofollow");
    let out = d.join("o");
    let prog = "global n probe kprobe(work)? { n++ } probe end { print(n) }";
    // forks: the forked child calls work() 3 times, the parent 2 times.
    let forks = target("forks");
    let o = ptap_e(prog, &forks, &out, &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(read(&out), "5\n", "{o:?}");
    let o = ptap_e(prog, &forks, &out, &["--no-follow"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(read(&out), "2\n", "{o:?}");
    // Programs the target execs: probed by default, not with --no-follow.
    let hot = target("hot");
    let cmd = format!("sh -c '{hot} 3; {hot} 2'");
    let o = ptap_e(prog, &cmd, &out, &[]);
    assert_eq!(read(&out), "5\n", "{o:?}");
    let o = ptap_e(prog, &cmd, &out, &["--no-follow"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(read(&out), "0\n", "{o:?}");
    assert_eq!(o.stdout, "sum=9 counter=3\nsum=4 counter=1\n");
}

#[test]
fn ptap_exits_with_the_command_and_detaches_what_it_left_running() {
    let pristine = pristine_code_bytes("leftover");
    let d = scratch("leftover");
    let flag = d.join("flag");
    let bg_out = d.join("bg.txt");
    let out = d.join("o");
    // sh starts wait_file in the background and exits at once.
    let cmd = format!(
        "sh -c '{} {} 30 0 > {} 2>&1 & echo started'",
        target("wait_file"),
        flag.display(),
        bg_out.display()
    );
    let mut c = ptap();
    c.arg("-o")
        .arg(&out)
        .arg("-e")
        .arg("global n probe kprobe(work)? { n++ } probe end { print(n > 0) }")
        .arg("-c")
        .arg(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let st = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(st.code(), Some(0));
    // Whether wait_file got to call work() before the detach reached it
    // is a race; that it is detached is not.
    assert!(
        ["0\n", "1\n"].contains(&read(&out).as_str()),
        "{}",
        read(&out)
    );
    std::fs::write(&flag, b"").unwrap();
    let t = Instant::now();
    while !read(&bg_out).contains("done") && t.elapsed() < SECS {
        std::thread::sleep(Duration::from_millis(20));
    }
    let bg = read(&bg_out);
    assert!(bg.contains(&format!("after={pristine}\n")), "{bg}");
    assert!(bg.contains("done calls>=10: 1"), "{bg}");
    support::remove_snapshot(child.id());
}

#[test]
fn points_in_a_private_library_found_through_runpath_origin() {
    let d = scratch("runpath");
    let src = support::root().join("tests/targets");
    let lib = d.join("libpriv.so");
    support::build(
        "cc",
        &src.join("priv_lib.c"),
        &lib,
        &["-O2", "-g", "-shared", "-fPIC"],
        &[],
    );
    let exe = d.join("priv_main");
    let st = Command::new("cc")
        .args(["-O2", "-g"])
        .arg(src.join("priv_main.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&d)
        .args(["-lpriv", "-Wl,--enable-new-dtags,-rpath,$ORIGIN"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.join("o");
    let cmd = format!("{} 4", exe.display());
    let o = ptap_e(
        "global n probe kprobe(libpriv:priv_fn) { n++ } probe kretprobe(priv_fn) { n += ret } probe end { print(n) }",
        &cmd,
        &out,
        &[],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "sum=60\n");
    assert_eq!(read(&out), "64\n", "{o:?}");
    // And the library is named in what was searched.
    let o = ptap_e("probe kprobe(nope) { }", &cmd, &out, &[]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains(&format!(
            "searched {}, libpriv.so, libc.so.6, ld-linux-x86-64.so.2",
            std::fs::canonicalize(&exe).unwrap().display()
        )),
        "{o:?}"
    );
}

#[test]
fn maxskipped_stops_the_session_while_the_target_still_runs() {
    // fib(10) in a loop for up to 20 s: each round loses returns to
    // maxactive(2). The skips must reach ptap while the target runs (not
    // only at its exit), so ptap stops long before the target would end.
    let d = scratch("maxskipped");
    let cmd = format!("{} 10 20", target("fib"));
    let mut bg = start_bg(
        &d,
        &cmd,
        "global n probe kretprobe(fib).maxactive(2) { n++ } probe end { printf(\"end n>0=%d\\n\", n > 0) }",
        &[],
    );
    let (code, stderr) = bg.wait_ptap();
    let pid = target_pid(&stderr);
    // SAFETY: signal 0 only checks that the process exists; then SIGKILL
    // of the target this test started through ptap.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if alive {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    support::remove_snapshot(bg.ptap.id());
    assert!(
        alive,
        "the target was not running when ptap stopped:\n{stderr}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR: Skipped too many probes, check MAXSKIPPED"),
        "{stderr}"
    );
    assert_eq!(read(&bg.out), "end n>0=1\n", "{stderr}");
}

/// The runtime reads the symbols of every loaded object from its file while
/// it arms probes; it must leave no mapping of those files behind (an extra
/// mapping of the executable or libc in /proc/PID/maps is taken for the
/// object by whatever reads the maps next: a second `ptap -x` placed its
/// probes at the wrong address and killed the process).
#[test]
fn arming_probes_leaves_no_extra_mapping_of_a_loaded_object() {
    let exe = target("maps_count");
    let plain = Command::new(&exe).output().unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout).trim().to_string();
    assert!(plain.starts_with("exe="), "{plain}");
    let d = scratch("maps");
    let out = d.join("out");
    // Qualified and unqualified points: both read symbol tables.
    let o = ptap_e(
        "probe kprobe(work) { } probe kprobe(libc:malloc)? { }",
        &exe,
        &out,
        &[],
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let probed = o.stdout.trim().to_string();
    assert_eq!(probed, plain, "mappings under ptap vs alone; {o:?}");
}

/// `ptap ... | head -2`: once the reader of ptap's output is gone (a broken
/// pipe), the session stops as after Ctrl-C: the target is detached and
/// runs on, ptap exits 0. (It used to run until the target ended.)
#[test]
fn a_closed_output_pipe_ends_the_session() {
    let d = scratch("epipe");
    let flag = d.join("flag");
    let mut c = ptap();
    c.arg("-e")
        .arg(r#"probe kprobe(work) { printf("%d\n", arg1) }"#)
        .arg("-c")
        .arg(format!("{} {} 60 7", target("wait_file"), flag.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = c.spawn().unwrap();
    let mut out = BufReader::new(p.stdout.take().unwrap());
    for _ in 0..2 {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "a line");
    }
    drop(out);
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = p.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = p.kill();
            panic!("ptap kept running after its output pipe closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The detached target (which shares ptap's stderr) ends once the flag
    // exists: then stderr reaches its end.
    std::fs::write(&flag, b"").unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut p.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("it keeps running"), "{err}");
}

/// A statically linked command cannot load the runtime: with system call
/// probes only (nothing to resolve), ptap says so before starting it and
/// exits 1, as it does for function probes. (It used to run the command
/// unprobed and exit 0.)
#[test]
fn a_static_command_with_only_syscall_probes_is_refused_before_it_starts() {
    let src = support::root().join("tests/targets/exit.c");
    let bin = support::build(
        "cc",
        &src,
        &support::out_dir().join("exit_static"),
        &["-O2", "-static"],
        &[],
    );
    let mut c = ptap();
    c.arg("-e")
        .arg("probe kretprobe(sys_open) { if (ret < 0) print(ret) }")
        .arg("-c")
        .arg(bin.display().to_string());
    let o = run_cmd(c, SECS);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("is statically linked"), "{o:?}");
    assert!(o.stdout.is_empty(), "it never ran: {o:?}");
}
