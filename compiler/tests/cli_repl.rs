//! The REPL driven through a real terminal, as a person would: ptap runs
//! in a tmux pane (a pseudo-terminal and a terminal emulator: the screen
//! is what a user sees), keys are typed with `send-keys`, the screen is
//! read with `capture-pane`. Needs tmux.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .output()
            .expect("tmux must be installed to run this test");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "repl"])
    }

    /// Type `text` literally (no Enter).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "repl", "-l", text]);
    }

    fn key(&self, k: &str) {
        self.run(&["send-keys", "-t", "repl", k]);
    }

    /// Type a line and Enter once the prompt is back (as a person would:
    /// the editor reads the terminal only while it shows its prompt).
    fn line(&self, text: &str) {
        self.wait("the prompt", |s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end() == "ptap>")
        });
        self.type_text(text);
        self.key("Enter");
    }

    /// Wait until the screen satisfies `pred` (a hang guard, not a timing check).
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "waited 60 s for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait(text, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Address of `work` in process `pid` (a PIE: its first mapping + the
/// symbol's link-time address).
fn work_addr(pid: i32, exe: &Path) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok("work"))
        .expect("work in the target")
        .address();
    let exe = std::fs::canonicalize(exe).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let base = maps
        .lines()
        .find(|l| l.ends_with(exe.to_str().unwrap()))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .expect("the target's mapping");
    base + sym
}

fn code_bytes(pid: i32, addr: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    f.seek(SeekFrom::Start(addr)).unwrap();
    let mut b = vec![0u8; 8];
    f.read_exact(&mut b).unwrap();
    b
}

/// The last `count=N` line of the screen.
fn last_count(s: &str) -> i64 {
    s.lines()
        .filter_map(|l| l.trim().strip_prefix("count="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .expect("a count= line")
}

/// `name=value` lines of the globals report (names only, in order).
fn report_names(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (["r", "m"].contains(&k) && v.parse::<i64>().is_ok()).then(|| k.to_string())
        })
        .collect()
}

#[test]
fn a_session_typed_in_a_terminal() {
    let scratch = support::out_dir().join(format!("repl-tty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("tmp")).unwrap();
    let spin = PathBuf::from(support::target("spin"));
    let saved = scratch.join("session.pt");
    let t = Tmux {
        socket: format!("ptap-test-{}", std::process::id()),
    };
    // The target: one thread calling work() for two minutes.
    let cmdline = format!(
        "env TMPDIR={tmp} XDG_STATE_HOME={state} {ptap} -i -c '{spin} 1 120000'",
        tmp = scratch.join("tmp").display(),
        state = scratch.display(),
        ptap = env!("CARGO_BIN_EXE_ptap"),
        spin = spin.display()
    );
    t.run(&[
        "new-session",
        "-d",
        "-s",
        "repl",
        "-x",
        "150",
        "-y",
        "60",
        &cmdline,
    ]);
    t.run(&["set-option", "-t", "repl", "remain-on-exit", "on"]);
    let s = t.wait_for("ptap> ");
    let pid: i32 = s
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no target pid on the screen:\n{s}"));
    let addr = work_addr(pid, &spin);
    let original = code_bytes(pid, addr);

    // A counting probe, read twice: it grows.
    t.line("global n");
    t.line("probe kprobe(work) { n++ }");
    t.wait_for("probe 1: kprobe(work) armed in pid");
    assert_ne!(code_bytes(pid, addr), original, "work() is patched");
    let counts = |s: &str| s.lines().filter(|l| l.starts_with("count=")).count();
    t.line("sprintf(\"count=%d\", n)");
    let first = last_count(&t.wait("a count", |s| counts(s) >= 1));
    std::thread::sleep(Duration::from_millis(300));
    t.line("sprintf(\"count=%d\", n)");
    let second = last_count(&t.wait("a second count", |s| counts(s) >= 2));
    assert!(second > first, "the count grows: {first} then {second}");

    // Deleted: the code is as it was.
    t.line(":delete 1");
    t.wait_for("probe 1 deleted");
    assert_eq!(code_bytes(pid, addr), original, "work() is restored");

    // A kretprobe.
    t.line("global r");
    t.line("probe kretprobe(work) { r++ }");
    t.wait_for("probe 2: kretprobe(work) armed in pid");

    // A typo: a diagnostic, and the session goes on.
    t.line("probe kprobe(work) { r+++ }");
    t.wait_for("error: syntax error");

    // Tab completes the target's function name.
    t.line("global m");
    t.wait("the prompt", |s| {
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_end() == "ptap>")
    });
    t.type_text("probe kprobe(wo");
    t.key("Tab");
    t.wait("the completed name", |s| {
        s.lines().any(|l| l.trim_end() == "ptap> probe kprobe(work")
    });
    t.type_text(") { m++ }");
    t.key("Enter");
    t.wait_for("probe 3: kprobe(work) armed in pid");

    // Output arriving while a line is being edited stays above it.
    t.line("probe timer.ms(50) { printf(\"tick\\n\") }");
    t.wait_for("probe 4: timer.ms(50) runs in ptap");
    t.type_text("sprintf(\"half typed\")");
    let before = t.screen().matches("tick").count();
    let s = t.wait("ticks while editing", |s| {
        s.matches("tick").count() >= before + 5
    });
    let last = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(
        last.trim_end(),
        "ptap> sprintf(\"half typed\")",
        "the edited line is intact at the bottom:\n{s}"
    );
    assert!(
        s.lines().all(|l| l.trim_end() == "tick"
            || !l.contains("tick")
            || l.starts_with("ptap> probe timer")),
        "no tick is mixed into another line:\n{s}"
    );
    t.key("Enter");
    t.wait("the half-typed line's result", |s| {
        s.lines().any(|l| l.trim_end() == "half typed")
    });
    t.line(":delete 4");
    t.wait_for("probe 4 deleted");

    // Saved, then quit: end report and summary.
    t.line(&format!(":save {}", saved.display()));
    t.wait_for("saved the session");
    t.line(":quit");
    let s = t.wait("the end of the session", |s| s.contains("Pane is dead"));
    assert!(s.contains(&format!("detached from pid {pid}")), "{s}");
    let repl_names = report_names(&s);
    assert_eq!(repl_names, ["r", "m"], "the end report:\n{s}");
    assert_eq!(code_bytes(pid, addr), original, "nothing stays patched");
    // SAFETY-free: the target runs on after ptap detached; end it.
    let _ = Command::new("kill").arg(pid.to_string()).status();

    // The history was kept for the next session.
    let history = std::fs::read_to_string(scratch.join("ptap/history")).unwrap_or_default();
    assert!(history.contains("probe kprobe(work) { n++ }"), "{history}");

    // The saved session runs as a script, with the same report.
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        !text.contains("timer"),
        "a deleted probe is not saved:\n{text}"
    );
    let mut c = support::ptap();
    c.arg(&saved)
        .arg("-c")
        .arg(format!("{} 1 300", spin.display()));
    let out = support::run_cmd(c, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(report_names(&out.stdout), ["r", "m"], "{}", out.stdout);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `ptap -i -x PID`: probes typed into a process that was already running.
#[test]
fn a_session_attached_to_a_running_process() {
    let scratch = support::out_dir().join(format!("repl-x-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut target = Command::new(support::target("spin"))
        .args(["1", "3000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let input = scratch.join("session.txt");
    std::fs::write(
        &input,
        "global n\nprobe kprobe(work) { n++ }\n:wait\nn > 0\n:globals\n",
    )
    .unwrap();
    let mut c = support::ptap();
    c.arg("-i").arg("-x").arg(target.id().to_string());
    let out = support::run_cmd_input(c, Duration::from_secs(120), &input);
    let _ = target.kill();
    let _ = target.wait();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("probe 1: kprobe(work) armed in pid"),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"1"),
        "n > 0 after the target ran:\n{}",
        out.stdout
    );
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("n=")),
        "{}",
        out.stdout
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Lines typed ahead, without waiting for the prompt (while ptap starts and
/// while it runs the previous line), all run, in order.
#[test]
fn keys_typed_ahead_are_kept() {
    let scratch = support::out_dir().join(format!("repl-ahead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let t = Tmux {
        socket: format!("ptap-ahead-{}", std::process::id()),
    };
    let cmdline = format!(
        "env XDG_STATE_HOME={state} {ptap} -i",
        state = scratch.display(),
        ptap = env!("CARGO_BIN_EXE_ptap"),
    );
    t.run(&[
        "new-session",
        "-d",
        "-s",
        "repl",
        "-x",
        "150",
        "-y",
        "60",
        &cmdline,
    ]);
    t.run(&["set-option", "-t", "repl", "remain-on-exit", "on"]);
    // All typed at once: the first before the prompt is drawn, each
    // next one while ptap compiles and runs the one before.
    for i in 1..=8 {
        t.type_text(&format!("sprintf(\"ahead %d\", {i} * 111)"));
        t.key("Enter");
    }
    t.type_text(":quit");
    t.key("Enter");
    // The results of the eight lines (the session's exit is checked by
    // the other tests).
    let s = t.wait("the last result", |s| {
        s.lines().any(|l| l.trim_end() == "ahead 888")
    });
    let results: Vec<&str> = s
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("ahead "))
        .collect();
    let want: Vec<String> = (1..=8).map(|i| format!("ahead {}", i * 111)).collect();
    assert_eq!(results, want, "every line typed ahead ran, in order:\n{s}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `ptap -i` with no target: probes typed are armed system-wide (perf
/// events) and counted in every process, listed with their hits, and
/// deleted live; a function point that names no file waits for a process.
#[test]
fn a_system_wide_session() {
    let scratch = support::out_dir().join(format!("repl-wide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let hot = std::fs::canonicalize(support::target("hot")).unwrap();
    let t = Tmux {
        socket: format!("ptap-wide-{}", std::process::id()),
    };
    let cmdline = format!(
        "env XDG_STATE_HOME={state} {ptap} -i",
        state = scratch.display(),
        ptap = env!("CARGO_BIN_EXE_ptap"),
    );
    t.run(&[
        "new-session",
        "-d",
        "-s",
        "repl",
        "-x",
        "150",
        "-y",
        "60",
        &cmdline,
    ]);
    t.run(&["set-option", "-t", "repl", "remain-on-exit", "on"]);
    t.line("global n");
    t.line(&format!(
        "probe kprobe(\"{}\":work) {{ n++ }}",
        hot.display()
    ));
    t.wait_for("armed system-wide (every process)");
    let run_hot = || {
        let st = Command::new(&hot)
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    };
    run_hot();
    // The samples reach ptap a little after the process ran: read until
    // the count is complete (a hang guard bounds it).
    let counts = |s: &str| s.lines().filter(|l| l.starts_with("count=")).count();
    let mut seen = 0;
    let t0 = Instant::now();
    loop {
        t.line("sprintf(\"count=%d\", n)");
        seen += 1;
        let s = t.wait("a count", |s| counts(s) >= seen);
        if last_count(&s) == 1000 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the count never reached 1000:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.line(":list");
    let s = t.wait("the probe's row", |s| {
        s.lines()
            .any(|l| l.contains("system-wide (") && l.trim_end().ends_with(" 1000"))
    });
    assert!(s.contains("kprobe(\""), "{s}");

    // Deleted: another run counts nothing.
    t.line(":delete 1");
    t.wait_for("probe 1 deleted");
    run_hot();
    t.line("sprintf(\"after=%d\", n)");
    let s = t.wait("the count after the delete", |s| {
        s.lines().any(|l| l.starts_with("after="))
    });
    assert!(s.lines().any(|l| l.trim_end() == "after=1000"), "{s}");

    // A function point without its file cannot be system-wide: it waits.
    t.line("probe kprobe(work) { n++ }");
    t.wait_for("names no file, so it is not armed system-wide");

    t.line(":quit");
    // The end report (the session's exit is checked by the other tests).
    t.wait("the end report", |s| {
        s.lines().any(|l| l.trim_end() == "n=1000")
    });
    let _ = std::fs::remove_dir_all(&scratch);
}
