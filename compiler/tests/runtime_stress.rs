//! Threads, malloc, output ring, detach ("hit path" and "Loading" bullets).
mod support;
use std::time::Duration;
use support::*;

#[test]
fn probes_on_malloc_and_free_in_a_threaded_target() {
    let out = load(
        "mallocs",
        &format!("{} 8 5000", target("malloc_threads")),
        &[],
        120,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("register=0,0,0,0,0"), "{out:?}");
    assert_eq!(out.get("fprintf_hits"), 8 * 50, "{out:?}");
    assert!(out.get("memcpy_hits") >= 40000, "{out:?}");
    assert!(out.stdout.contains("memcpy hit, n=16\n"), "{out:?}");
    assert_eq!(
        out.stdout.matches("fprintf hit, fmt=%s\n").count(),
        8,
        "{out:?}"
    );
    assert_eq!(out.get("allocs"), 40000);
    let (hits, rets, frees) = (
        out.get("malloc_hits"),
        out.get("malloc_returns"),
        out.get("free_hits"),
    );
    assert!(hits >= 40000, "{out:?}");
    assert_eq!(out.get("kret_missed"), 0, "{out:?}");
    assert!(rets >= 40000 && rets <= hits, "{out:?}");
    assert!(frees >= 40000, "{out:?}");
    assert_eq!(out.get("nulls"), 0);
}

#[test]
fn printk_lines_never_interleave() {
    let out = load("lines", &format!("{} 8 300", target("threads")), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    let a = "a".repeat(91);
    let b = "b".repeat(91);
    let mut n = 0;
    for l in out.lines() {
        if l.starts_with("calls=") {
            continue;
        }
        let parts: Vec<&str> = l
            .trim_start_matches('<')
            .trim_end_matches('>')
            .split('|')
            .collect();
        assert!(
            l.starts_with('<') && l.ends_with('>') && parts.len() == 4,
            "torn line {l:?}"
        );
        assert_eq!(
            (parts[1], parts[2]),
            (a.as_str(), b.as_str()),
            "torn line {l:?}"
        );
        assert_eq!(parts[0], parts[3], "torn line {l:?}");
        n += 1;
    }
    assert_eq!(n, 2400);
}

#[test]
fn ring_overflow_is_counted_and_reported() {
    let out = load(
        "flood",
        &format!("{} 1", target("hot")),
        &[("PTAP_RING_SIZE", "4096"), ("PT_LINES", "20000")],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let printed = out
        .lines()
        .iter()
        .filter(|l| l.starts_with("line "))
        .count() as u64;
    let lost: u64 = out
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("ptap: ")?
                .strip_suffix(" output records lost (output ring full)")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no loss report: {out:?}"));
    assert!(lost > 0);
    assert_eq!(printed + lost, 20000, "{out:?}");
    // Records that did arrive are whole and in order.
    let nums: Vec<u64> = out
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn no_loss_report_when_nothing_is_lost() {
    let out = load(
        "flood",
        &format!("{} 1", target("hot")),
        &[("PT_LINES", "1000")],
        60,
    );
    assert_eq!(
        out.lines()
            .iter()
            .filter(|l| l.starts_with("line "))
            .count(),
        1000
    );
    assert!(!out.stderr.contains("lost"), "{out:?}");
}

/// Wait (up to 60 s) until the count module's init_module has printed its
/// `register=0 pid=N` line to `log` and then until `ready(N)` holds for the
/// target (its threads exist, it has forked, ...), so that the test
/// interrupts ptap while the target is at work, however loaded the machine.
fn wait_until_registered(log: &std::path::Path, ready: impl Fn(i32) -> bool) {
    let t0 = std::time::Instant::now();
    let pid = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(pid) = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|v| v.parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the module never registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    while !ready(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the target never got going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// Threads of process `pid`.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Has process `pid` a child?
fn has_child(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|c| !c.trim().is_empty())
}

#[test]
fn ctrl_c_detaches_and_the_target_goes_on() {
    let m = module("count");
    let log = out_dir().join(format!("ctrl_c_{}.out", std::process::id()));
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .arg("-o")
        .arg(&log)
        .arg("-c")
        .arg(format!("{} 1 1500", target("spin")));
    // The target inherits ptap's stdout/stderr; keep them away from the test's pipes.
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let ptap_pid = child.id();
    // spin's worker thread calls work() as soon as it exists.
    wait_until_registered(&log, |pid| threads_of(pid) >= 2);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let stdout = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("hits="), "cleanup_module ran: {stdout}");
    let hits: i64 = stdout
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("hits="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap();
    assert!(hits > 0, "{stdout}");
    let pid: i32 = stdout
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap();
    assert_eq!(
        // SAFETY: probing a pid with signal 0.
        unsafe { libc::kill(pid, 0) },
        0,
        "the target goes on after detach"
    );
    // It finishes on its own (its parent ptap is gone; init reaps it).
    let t0 = std::time::Instant::now();
    // SAFETY: as above.
    while unsafe { libc::kill(pid, 0) } == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(
        // SAFETY: as above.
        unsafe { libc::kill(pid, 0) },
        0,
        "the detached target finished"
    );
    remove_snapshot(ptap_pid);
    remove_snapshot(ptap_pid);
}

#[test]
fn runtime_files_are_found_and_missing_module_is_an_error() {
    let mut c = ptap();
    c.args(["load", "/nonexistent/mod.so", "-c", "true"]);
    let out = run_cmd(c, Duration::from_secs(10));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("ptap load: /nonexistent/mod.so:"),
        "{out:?}"
    );
    let mut c = ptap();
    c.args([
        "load",
        module("count").to_str().unwrap(),
        "-c",
        "'unterminated",
    ]);
    let out = run_cmd(c, Duration::from_secs(10));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot split"), "{out:?}");
}

#[test]
fn exit_status_of_the_target_is_ptaps() {
    // (A module that loads: one that loads nowhere makes ptap exit 1.)
    let out = load("count", "sh -c 'exit 7'", &[("PT_SYM", "malloc")], 30);
    assert_eq!(out.code, Some(7), "{out:?}");
    let out = load(
        "count",
        "sh -c 'exit 7'",
        &[("PT_SYM", "does_not_exist")],
        30,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
}

#[test]
fn an_execed_child_reattaches_through_the_preload() {
    let hot = target("hot");
    let out = load("count", &format!("sh -c '{hot} 3; exit 5'"), &[], 30);
    assert_eq!(out.code, Some(5), "{out:?}");
    // sh itself has no work(): its init_module fails (reported), hot's succeeds.
    assert!(out.stdout.contains("register=-2"), "{out:?}");
    assert!(out.stdout.contains("register=0"), "{out:?}");
    assert_eq!(out.get("hits"), 3, "{out:?}");
    assert_eq!(out.get("sum"), 9);
}

#[test]
fn ctrl_c_detaches_forked_children_too() {
    let m = module("count");
    let log = out_dir().join(format!("ctrl_c_fork_{}.out", std::process::id()));
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .arg("-o")
        .arg(&log)
        .arg("-c")
        .arg(format!("{} 1500", target("forks")));
    let errlog = out_dir().join(format!("ctrl_c_fork_{}.err", std::process::id()));
    c.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errlog).unwrap());
    let mut child = c.spawn().unwrap();
    let ptap_pid = child.id();
    wait_until_registered(&log, has_child);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = std::time::Instant::now();
    let status = child.wait().unwrap();
    let elapsed = t0.elapsed();
    let stderr = std::fs::read_to_string(&errlog).unwrap();
    let _ = std::fs::remove_file(&errlog);
    let stdout = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.code(), Some(130), "{stdout}{stderr}");
    assert!(!stderr.contains("did not detach"), "{stderr}");
    // Well below the 3 s unregister grace period ("did not detach").
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?} {stderr}");
    // Both the parent and the forked child ran cleanup_module.
    assert_eq!(stdout.matches("hits=").count(), 2, "{stdout}{stderr}");
    remove_snapshot(ptap_pid);
}

#[test]
fn a_target_the_runtime_cannot_enter_is_reported() {
    let src = root().join("tests/targets/hot.c");
    let bin = build(
        "cc",
        &src,
        &out_dir().join("hot_static"),
        &["-O2", "-static"],
        &[],
    );
    let out = load("count", &format!("{} 2", bin.display()), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("sum=4"), "{out:?}");
    assert!(
        out.stderr
            .contains("the runtime never attached to the target"),
        "{out:?}"
    );
    let out = load("count", &format!("{} 2", target("hot")), &[], 30);
    assert!(!out.stderr.contains("never attached"), "{out:?}");
}

#[test]
fn more_threads_than_thread_table_slots() {
    // 6000 sequential threads: the 4096-slot table must recycle dead threads' slots.
    let out = load("count", &format!("{} 6000", target("churn")), &[], 120);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("threads"), 6000);
    assert_eq!(out.get("hits"), 6000, "{out:?}");
    let out = load(
        "kret",
        &format!("{} 5000", target("churn")),
        &[("PT_MAXACTIVE", "4")],
        120,
    );
    assert_eq!(out.get("returns"), 5000, "{out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
}

/// `ptap load` has the module-session options `ptap run` has (one clap
/// struct): -T ends the session and leaves the target running; --no-follow
/// keeps a forked child unprobed.
#[test]
fn load_takes_the_timeout_and_no_follow_options() {
    let m = module("count");
    // spin runs 3 s; -T ends the session after 0.3 s. The target shares
    // ptap's stdout: its last line (after its 3 s) shows it went on.
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .args(["-T", "0.3", "-c"])
        .arg(format!("{} 1 3000", target("spin")));
    let out = run_cmd(c, Duration::from_secs(60));
    assert_eq!(
        out.code,
        Some(0),
        "-T ends the session as a success: {out:?}"
    );
    assert!(out.stderr.contains("detached from pid"), "{out:?}");
    assert!(out.stdout.contains("hits="), "{out:?}");
    assert!(
        out.stdout.contains("spin_calls="),
        "the target goes on after -T: {out:?}"
    );

    // forks: the forked child calls work() 3 times, the parent 2 times.
    let mut c = ptap();
    c.arg("load").arg(&m).arg("-c").arg(target("forks"));
    let out = run_cmd(c, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("hits=3 "), "{out:?}");
    assert!(out.stdout.contains("hits=2 "), "{out:?}");
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .arg("--no-follow")
        .arg("-c")
        .arg(target("forks"));
    let out = run_cmd(c, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        !out.stdout.contains("hits=3 "),
        "the child was probed: {out:?}"
    );
    assert!(out.stdout.contains("hits=2 "), "{out:?}");
}

/// `-T` takes a number of seconds a session can wait: `inf`, `nan` or a
/// negative number is one clear error from the command line (it used to
/// panic in the session loop), for scripts and modules alike.
#[test]
fn a_timeout_that_is_not_a_number_of_seconds_is_a_clear_error() {
    for t in ["inf", "nan", "1e300", "-0.5"] {
        let mut c = ptap();
        c.arg(format!("-T{t}"))
            .args(["-e", "probe begin { print(1) }"]);
        let out = run_cmd(c, Duration::from_secs(30));
        assert_eq!(out.code, Some(2), "{t}: {out:?}");
        assert!(
            out.stderr.contains("give a number of seconds, 0 or more")
                && !out.stderr.contains("panicked"),
            "{t}: {out:?}"
        );
        let mut c = ptap();
        c.args(["load", "mod.so", &format!("-T{t}"), "-c", "true"]);
        let out = run_cmd(c, Duration::from_secs(30));
        assert_eq!(out.code, Some(2), "{t}: {out:?}");
        assert!(
            out.stderr.contains("give a number of seconds"),
            "{t}: {out:?}"
        );
    }
}
