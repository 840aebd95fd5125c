//! `ptap load` of a module that cannot work is one clear error and exit
//! status 1 (before the target runs when ptap can tell), and a handler that
//! faults on every hit gives a few lines and a count, not one per hit.
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{ptap, run_cmd, target};

const SECS: Duration = Duration::from_secs(60);

fn dir(name: &str) -> PathBuf {
    let d = support::out_dir()
        .join("badmods")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cc(d: &Path, name: &str, src: &str, args: &[&str]) -> PathBuf {
    let c = d.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = d.join(name);
    let st = Command::new("cc")
        .args(args)
        .arg(&c)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn load(module: &Path) -> support::Output {
    let mut c = ptap();
    c.arg("load").arg(module).arg("-c").arg("echo target-ran");
    run_cmd(c, SECS)
}

/// One `ptap` line on stderr containing `what`, exit status 1; `ran`: the
/// target ran (only the dynamic loader in the target could tell).
fn check(out: &support::Output, what: &str, ran: bool) {
    assert_eq!(out.code, Some(1), "{what}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: {out:?}");
    assert!(lines[0].starts_with("ptap"), "{what}: {out:?}");
    assert!(lines[0].contains(what), "{what}: {out:?}");
    assert_eq!(out.stdout.contains("target-ran"), ran, "{what}: {out:?}");
}

const INIT: &str = "int init_module(void) { return 0; } void cleanup_module(void) {}";

#[test]
fn bad_modules_are_one_line_errors_with_exit_status_1() {
    let d = dir("bad");
    check(&load(&d), "is a directory", false);
    let text = d.join("text.so");
    std::fs::write(&text, "hello\n").unwrap();
    check(&load(&text), "is not an ELF shared object", false);
    let pie = cc(
        &d,
        "pie",
        "int main(void) { return 0; }",
        &["-fPIE", "-pie"],
    );
    check(&load(&pie), "is a position-independent executable", false);
    let obj = cc(&d, "obj.o", INIT, &["-c", "-fPIC"]);
    check(&load(&obj), "not a shared object", false);
    let undef = cc(
        &d,
        "undef.so",
        "extern int nope(void); int init_module(void) { return nope(); } void cleanup_module(void) {}",
        &["-shared", "-fPIC"],
    );
    check(&load(&undef), "undefined symbol: nope", true);
    let dep = cc(&d, "libptapgone.so", INIT, &["-shared", "-fPIC"]);
    let needs = cc(
        &d,
        "needs.so",
        INIT,
        &[
            "-shared",
            "-fPIC",
            "-Wl,--no-as-needed",
            &format!("-L{}", d.display()),
            "-lptapgone",
        ],
    );
    std::fs::remove_file(&dep).unwrap();
    check(&load(&needs), "libptapgone.so", true);
    let enomem = cc(
        &d,
        "enomem.so",
        "int init_module(void) { return -12; } void cleanup_module(void) {}",
        &["-shared", "-fPIC"],
    );
    check(&load(&enomem), "returned -12", true);
}

/// Root reads any file: the unreadable module is tried by user nobody.
#[test]
fn an_unreadable_module_is_a_one_line_error() {
    let d = dir("unreadable");
    let m = cc(&d, "secret.so", INIT, &["-shared", "-fPIC"]);
    std::fs::set_permissions(&m, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .arg("-c")
        .arg("echo target-ran")
        .env("TMPDIR", "/tmp")
        .env_remove("XDG_RUNTIME_DIR")
        .uid(65534)
        .gid(65534);
    let out = run_cmd(c, SECS);
    check(&out, "cannot read module", false);
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
}

/// 2000 hits of a faulting handler: 3 lines, then a count; exit status 1.
#[test]
fn identical_handler_faults_are_counted_not_repeated() {
    let m = support::module("fault");
    let mut c = ptap();
    c.arg("load")
        .arg(&m)
        .arg("-c")
        .arg(format!("{} 2000", target("hot")));
    let out = run_cmd(c, SECS);
    assert_eq!(out.code, Some(1), "{out:?}");
    let faults = out.stderr.matches("faulted (trap 14").count();
    assert_eq!(faults, 3 + 1, "{out:?}");
    let more = out
        .stderr
        .lines()
        .find(|l| l.contains(" more times: "))
        .unwrap_or_else(|| panic!("{out:?}"));
    // Lost records (full ring) are counted apart: shown + more <= hits.
    let n: u64 = more["ptap: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0 && n <= 1997, "{out:?}");
    assert!(out.stderr.lines().count() < 12, "{out:?}");
}
