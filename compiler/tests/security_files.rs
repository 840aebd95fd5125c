//! The files ptap gives its targets (the runtime, the probe module, the
//! attach parameters) are private whatever the umask, cannot be replaced
//! or pre-created by another user, and are gone when ptap ends (also
//! after a detach, and after `-x`).
mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ptap, run_cmd, run_cmd_with, target};

const SECS: Duration = Duration::from_secs(60);

/// A fresh directory ptap is told to use as its temporary directory.
fn tmpdir(name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("sec")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ptap_in(tmp: &Path) -> Command {
    let mut c = ptap();
    c.env("TMPDIR", tmp).env_remove("XDG_RUNTIME_DIR");
    c
}

fn entries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn files_are_private_with_umask_000() {
    let tmp = tmpdir("umask");
    let mut c = ptap_in(&tmp);
    c.arg("-e")
        .arg("probe kretprobe(sys_open) { }")
        .arg("-c")
        .arg(r#"sh -c 'stat -c %a $(dirname $LD_PRELOAD) $PTAP_MODULE'"#);
    // SAFETY: umask in the child before exec; async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.lines(), vec!["700", "600"], "{out:?}");
    assert!(entries(&tmp).is_empty(), "left behind: {:?}", entries(&tmp));
}

/// While a root session runs, user nobody (in a directory where it may
/// create files, like /tmp) can neither list, add to, nor replace the
/// session's files.
#[test]
fn another_user_cannot_touch_the_session_files() {
    let tmp = tmpdir("other");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let flag = tmp.join("flag");
    let mut c = ptap_in(&tmp);
    c.arg("-e")
        .arg("probe kretprobe(sys_open) { }")
        .arg("-c")
        .arg(format!(
            r#"sh -c 'echo $LD_PRELOAD; while [ ! -e {} ]; do sleep 0.05; done'"#,
            flag.display()
        ));
    let out = run_cmd_with(c, SECS, |_, stdout| {
        let lib = loop {
            let s = stdout();
            if let Some(l) = s.lines().next() {
                break PathBuf::from(l);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let dir = lib.parent().unwrap().to_path_buf();
        let before = std::fs::read(&lib).unwrap();
        let as_nobody = |script: &str| {
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .uid(65534)
                .gid(65534)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        };
        let d = dir.display();
        for attempt in [
            format!("ls {d}"),
            format!("touch {d}/x"),
            format!("echo evil > {d}/libptap_rt.so"),
            format!("ln -sf /etc/passwd {d}/script.o"),
            format!("echo evil > /tmp/ptap-evil-$$ && mv -f /tmp/ptap-evil-$$ {d}/libptap_rt.so"),
            format!("rm -f {d}/script.o"),
        ] {
            assert!(!as_nobody(&attempt).success(), "nobody could: {attempt}");
        }
        assert_eq!(std::fs::read(&lib).unwrap(), before);
        let mut names = entries(&dir);
        names.sort();
        // The system call sites the first process found (docs/syscalls.md):
        // written by the target, the session's user, mode 0600.
        names.retain(|n| {
            if !n.starts_with("syssites-") {
                return true;
            }
            let mode = std::fs::metadata(dir.join(n)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{n}");
            false
        });
        assert_eq!(names, vec!["libptap_rt.so", "script.o"]);
        std::fs::write(&flag, b"").unwrap();
    });
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(entries(&tmp), vec!["flag"], "left behind");
}

#[test]
fn a_temporary_directory_that_cannot_be_used_is_named_in_the_error() {
    let tmp = tmpdir("bad");
    let file = tmp.join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let mut c = ptap_in(&file);
    c.arg("-e")
        .arg("probe kretprobe(sys_open) { }")
        .arg("-c")
        .arg("true");
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(1), "{out:?}");
    let want = format!(
        "cannot create a private directory in {}: Not a directory",
        file.display()
    );
    assert!(out.stderr.contains(&want), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

/// No session leaves a file behind: a -c session, one that detaches from
/// a command that keeps running, a `ptap load` one, and a -x one.
#[test]
fn no_leftovers_after_c_detach_load_and_x_sessions() {
    let tmp = tmpdir("leftovers");
    // -c, the command exits.
    let mut c = ptap_in(&tmp);
    c.args(["-e", "probe kretprobe(sys_open) { }", "-c", "true"]);
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(entries(&tmp).is_empty(), "-c: {:?}", entries(&tmp));

    // -c, exit() while the command runs on (detach).
    let flag = tmp.join("flag");
    let mut c = ptap_in(&tmp);
    c.arg("-e")
        .arg("probe kretprobe(sys_open) { } probe timer.ms(20) { exit() }")
        .arg("-c")
        .arg(format!(
            r#"sh -c 'exec >/dev/null 2>&1; while [ ! -e {} ]; do sleep 0.05; done'"#,
            flag.display()
        ))
        .arg("-v");
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("it keeps running"), "{out:?}");
    assert!(entries(&tmp).is_empty(), "detach: {:?}", entries(&tmp));
    std::fs::write(&flag, b"").unwrap();
    std::fs::remove_file(&flag).unwrap();

    // ptap load.
    let m = support::module("count");
    let mut c = ptap_in(&tmp);
    c.arg("load")
        .arg(&m)
        .arg("-c")
        .arg(format!("{} 2", target("hot")));
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(entries(&tmp).is_empty(), "load: {:?}", entries(&tmp));

    // -x: attach to a running process, count, exit().
    let mut t = Command::new(target("wait_file"))
        .arg(&flag)
        .arg("60")
        .arg("7")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = ptap_in(&tmp);
    c.arg("-x")
        .arg(t.id().to_string())
        .arg("-e")
        .arg("global n probe kprobe(work) { n++ } probe timer.ms(20) { if (n > 3) exit() }");
    let out = run_cmd(c, SECS);
    std::fs::write(&flag, b"").unwrap();
    let st = t.wait().unwrap();
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(st.code(), Some(7));
    assert_eq!(entries(&tmp), vec!["flag"], "-x left behind");
}
