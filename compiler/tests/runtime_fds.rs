//! The runtime's descriptors stay out of the target's way: its first open()
//! returns 3 as without ptap; closing every descriptor above 2
//! (close_range) while probed loses nothing, and the runtime never writes
//! into a descriptor the target reused (a file duplicated onto every
//! number stays empty); a child exec'ed after that still joins the session.
mod support;
use support::*;

/// A victim file on tmpfs when there is one (a write at a code address's
/// offset succeeds there; other file systems may refuse it with EFBIG).
fn victim(tag: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        out_dir()
    };
    dir.join(format!("ptap-fds-victim-{tag}-{}", std::process::id()))
}

fn paths() -> [(&'static str, &'static [(&'static str, &'static str)]); 2] {
    [("jump", &[]), ("trap", &[("PTAP_NO_OPTIMIZE", "1")])]
}

#[test]
fn the_targets_first_open_returns_3() {
    let fds = target("fds");
    for (tag, env) in paths() {
        let out = load("count", &format!("{fds} first 3"), env, 30);
        assert_eq!(out.code, Some(0), "{tag}: {out:?}");
        assert_eq!(out.get("first_fd"), 3, "{tag}: {out:?}");
        assert_eq!(out.get("hits"), 3, "{tag}: {out:?}");
    }
    let mut c = ptap();
    c.arg("-e")
        .arg(r#"global n; probe kprobe(work) { n++ } probe end { printf("n=%d\n", n) }"#)
        .arg("-c")
        .arg(format!("{fds} first 3"));
    let out = run_cmd(c, std::time::Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("first_fd"), 3, "{out:?}");
    assert_eq!(out.get("n"), 3, "{out:?}");
}

#[test]
fn close_range_while_probed_loses_nothing_and_writes_nowhere() {
    let fds = target("fds");
    for (tag, env) in paths() {
        let v = victim(tag);
        let out = load("count", &format!("{fds} close 3 {}", v.display()), env, 30);
        let len = std::fs::metadata(&v).map(|m| m.len());
        let _ = std::fs::remove_file(&v);
        assert_eq!(out.code, Some(0), "{tag}: {out:?}");
        assert_eq!(out.get("calls"), 6, "{tag}: {out:?}");
        assert_eq!(out.get("hits"), 6, "every call counted: {tag}: {out:?}");
        assert_eq!(
            len.ok(),
            Some(0),
            "the runtime wrote into the target's file: {tag}"
        );
    }
}

#[test]
fn a_child_execed_after_close_range_joins_the_session() {
    let fds = target("fds");
    let v = victim("exec");
    let mut c = ptap();
    c.arg("-e")
        .arg(r#"global n; probe kprobe(work) { n++ } probe end { printf("n=%d\n", n) }"#)
        .arg("-c")
        .arg(format!("{fds} exec 3 {}", v.display()));
    let out = run_cmd(c, std::time::Duration::from_secs(60));
    let _ = std::fs::remove_file(&v);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("first_fd"), 3, "{out:?}");
    assert_eq!(out.get("n"), 9, "before and after the exec: {out:?}");
}
