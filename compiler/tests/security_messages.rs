//! Messages that name the real cause: a data symbol given as a probe
//! point, a Ctrl-C before the runtime attached, another ptap session
//! attaching to the same process.
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ptap, run_cmd, run_cmd_with, target};

const SECS: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("msgs")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_data_symbol_is_named_as_such() {
    let exe = target("scribble");
    let mut c = ptap();
    c.args(["-e", "probe kprobe(sink) { }", "-c"])
        .arg(format!("{exe} 1 1"));
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("`sink` in {exe} is a data object, not a function")),
        "{out:?}"
    );
    assert!(!out.stderr.contains("resolved to nothing"), "{out:?}");
}

/// A Ctrl-C while the target has not reached the runtime yet: a stand-in
/// runtime that stops in its constructor keeps it there, deterministically.
#[test]
fn a_ctrl_c_before_the_runtime_attached_says_interrupted() {
    let d = scratch("intr");
    let src = d.join("stall.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void stall(void) {
    printf("ready %d\n", getpid());
    fflush(stdout);
    pause();
}"#,
    )
    .unwrap();
    let so = d.join("libstall.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC"])
        .arg(&src)
        .arg("-o")
        .arg(&so)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = ptap();
    c.env("PTAP_RUNTIME", &so)
        .args(["-e", "probe kprobe(work) { }", "-c"])
        .arg(format!("{} 1", target("hot")));
    let out = run_cmd_with(c, SECS, |ptap_pid, stdout| {
        let child: i32 = loop {
            if let Some(p) = stdout()
                .lines()
                .find_map(|l| l.strip_prefix("ready ").map(|p| p.trim().parse().unwrap()))
            {
                break p;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // SAFETY: signals to the ptap and target processes this test started.
        unsafe {
            libc::kill(ptap_pid as i32, libc::SIGINT);
            libc::kill(child, libc::SIGKILL);
        }
    });
    assert!(
        out.stderr
            .contains("interrupted before the runtime attached to the target"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("statically linked"), "{out:?}");
}

/// The loser of two sessions racing for one process: a tracer named ptap
/// holds the process (strace renamed, so the test controls the timing).
#[test]
fn another_ptap_attaching_is_named() {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(strace) = strace else {
        eprintln!("skipped: no strace to stand in for a ptap that is attaching");
        return;
    };
    let d = scratch("race");
    let fake = d.join("ptap");
    support::copy_executable(&strace, &fake);
    let flag = d.join("flag");
    let mut t = Command::new(target("wait_file"))
        .arg(&flag)
        .arg("60")
        .arg("7")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(t.stdout.take().unwrap()).lines();
    let _before = lines.next();
    let mut tracer = Command::new(&fake)
        .arg("-o")
        .arg("/dev/null")
        .arg("-p")
        .arg(t.id().to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // strace says it attached on stderr.
    let mut err = BufReader::new(tracer.stderr.take().unwrap()).lines();
    let said = err.next();
    assert!(
        said.as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|l| l.contains("attached"))),
        "{said:?}"
    );
    let mut c = ptap();
    c.arg("-x")
        .arg(t.id().to_string())
        .args(["-e", "probe kprobe(work) { }"]);
    let out = run_cmd(c, SECS);
    let _ = tracer.kill();
    let _ = tracer.wait();
    std::fs::write(&flag, b"").unwrap();
    let _ = t.wait();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "another ptap session (pid {}) is attaching to pid {}",
            tracer.id(),
            t.id()
        )),
        "{out:?}"
    );
}
