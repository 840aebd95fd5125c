//! Probe handlers and target signal handlers that siglongjmp (jump and trap
//! paths): an asynchronous signal raised inside a probe handler is delivered
//! only after the runtime's hit path is done with the thread's state.
mod support;
use support::*;

fn signal_raised_in_a_handler(trap_path: bool) {
    let env: &[(&str, &str)] = if trap_path {
        &[("PTAP_NO_OPTIMIZE", "1")]
    } else {
        &[]
    };
    let out = load("sigprobe", &format!("{} 20", target("sigprobe")), env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("register=0,0"), "{out:?}");
    assert_eq!(out.get("jumps"), 20, "{out:?}");
    assert_eq!(
        out.get("hits"),
        20,
        "every work() hit ran its handler: {out:?}"
    );
    assert_eq!(
        out.get("after_hits"),
        20,
        "no stuck 'in handler' state: {out:?}"
    );
    assert_eq!(out.get("missed"), 0, "{out:?}");
    assert_eq!(
        out.get("segv_caught"),
        1,
        "the target's own SIGSEGV reaches its handler: {out:?}"
    );
}

#[test]
fn siglongjmp_from_a_signal_raised_in_a_handler_jump_path() {
    signal_raised_in_a_handler(false);
}

#[test]
fn siglongjmp_from_a_signal_raised_in_a_handler_trap_path() {
    signal_raised_in_a_handler(true);
}

#[test]
fn a_stale_fault_guard_does_not_capture_a_later_target_fault() {
    for trap_path in [false, true] {
        let env: &[(&str, &str)] = if trap_path {
            &[("PTAP_NO_OPTIMIZE", "1")]
        } else {
            &[]
        };
        let out = load("guardstale", &format!("{} 3", target("sigprobe")), env, 30);
        assert!(out.stdout.contains("register=0 jumped=1"), "{out:?}");
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.get("segv_caught"), 1, "{out:?}");
        assert!(
            !out.stderr.contains("faulted"),
            "the target's fault is not a probe handler's: {out:?}"
        );
    }
}

#[test]
fn after_a_bounded_grace_period_gives_up_the_users_struct_is_not_touched() {
    let out = load("slowgrace", &format!("{} 3", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("register=0"), "{out:?}");
    assert_eq!(out.get("unregistered"), 1, "{out:?}");
    assert_eq!(
        out.get("violations"),
        0,
        "the runtime read the struct after unregister returned: {out:?}"
    );
    assert_eq!(out.get("posts"), 0, "{out:?}");
    assert!(
        out.stderr.contains("stayed inside a probe handler"),
        "{out:?}"
    );
}

/// The target's own view of its signal handlers is the same with and
/// without ptap (the runtime runs them through a wrapper that defers them
/// during jump-path hits): signal()'s return value, sigaction queries
/// (handler, SA_SIGINFO, SA_RESTART, mask), the siginfo of a sigqueue,
/// SA_RESETHAND, SIG_IGN; and with a 100 us interval timer interrupting
/// the probed loop, every call is counted once.
#[test]
fn the_targets_signal_handlers_behave_as_without_ptap() {
    let n = 200_000;
    let cmd = format!("{} {n}", target("sigwrap"));
    let native = {
        let mut c = std::process::Command::new(target("sigwrap"));
        c.arg(n.to_string());
        run_cmd(c, std::time::Duration::from_secs(60))
    };
    assert_eq!(native.code, Some(0), "{native:?}");
    assert!(
        native.stdout.contains("usr2 value=42 queued=1"),
        "{native:?}"
    );
    for trap_path in [false, true] {
        let env: &[(&str, &str)] = if trap_path {
            &[("PTAP_NO_OPTIMIZE", "1")]
        } else {
            &[]
        };
        let out = load("count", &cmd, env, 120);
        assert_eq!(out.code, Some(0), "{out:?}");
        let target_lines: String = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with("register=") && !l.starts_with("hits="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            target_lines, native.stdout,
            "trap path {trap_path}: {out:?}"
        );
        assert_eq!(out.get("hits"), n, "trap path {trap_path}: {out:?}");
        assert_eq!(out.get("nmissed"), 0, "{out:?}");
    }
}
