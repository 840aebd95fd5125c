//! Signal masks never make a probe hit fatal: a storm of handlers with a
//! full sa_mask, the target's own SIGTRAP handler without SA_NODEFER,
//! handlers run inside sigsuspend/ppoll/pselect with every other signal
//! blocked, and full sigprocmask/pthread_sigmask blocks, all calling a
//! probed function on the trap path (its first instruction is a call); and
//! the target's handlers run on the stack they asked for.
mod support;
use support::*;
#[path = "support/sys.rs"]
mod support_sys;

fn masked(trap_path: bool) {
    let env: &[(&str, &str)] = if trap_path {
        &[("PTAP_NO_OPTIMIZE", "1")]
    } else {
        &[]
    };
    let n = 300;
    let out = load("count", &format!("{} {n}", target("masked")), env, 120);
    assert_eq!(out.code, Some(0), "the target survived: {out:?}");
    assert!(out.stdout.contains("register=0"), "{out:?}");
    let calls = out.get("calls");
    assert_eq!(out.get("trap"), n, "{out:?}");
    assert_eq!(out.get("usr2"), n, "{out:?}");
    assert!(out.get("usr1") >= 4 * n, "{out:?}");
    assert_eq!(calls, out.get("usr1") + 2 * n + 2 * n, "{out:?}");
    assert_eq!(out.get("hits"), calls, "every call counted: {out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
}

#[test]
fn full_masks_never_block_the_trap_path() {
    masked(true);
}

#[test]
fn full_masks_with_the_jump_path_allowed() {
    masked(false);
}

/// The target's handlers run on the stack they asked for (SA_ONSTACK or
/// not), for its own SIGTRAP (raise, int3), SIGSEGV (a stack overflow, a
/// plain fault) and SIGUSR1, while an unrelated function is probed: the
/// same lines as without ptap.
#[test]
fn handlers_run_on_the_stack_they_asked_for() {
    let native = run_cmd(
        std::process::Command::new(target("sigstack")),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(native.code, Some(0), "{native:?}");
    assert_eq!(native.stdout.matches("onstack=1").count(), 4, "{native:?}");
    for trap_path in [false, true] {
        let env: &[(&str, &str)] = if trap_path {
            &[("PTAP_NO_OPTIMIZE", "1")]
        } else {
            &[]
        };
        let out = load("count", &target("sigstack"), env, 30);
        assert_eq!(out.code, Some(0), "{out:?}");
        let lines: String = out
            .stdout
            .lines()
            .filter(|l| l.contains("onstack="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(lines, native.stdout, "trap path {trap_path}: {out:?}");
        assert_eq!(out.get("hits"), 6, "{out:?}");
    }
}

/// A program started with every signal blocked (its parent's mask, set
/// with the raw system call, survives exec): the runtime unblocks SIGTRAP
/// and the other signals it handles before main, and every trap-path hit
/// is counted instead of killing the program.
#[test]
fn a_program_started_with_every_signal_blocked() {
    let cmd = format!("{} {} 50", target("blockexec"), target("masked"));
    let mut c = ptap();
    c.env("PTAP_NO_OPTIMIZE", "1")
        .arg("-e")
        .arg(r#"global n; probe kprobe(work)? { n++ } probe end { printf("n=%d\n", n) }"#)
        .arg("-c")
        .arg(&cmd);
    let out = run_cmd(c, std::time::Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("trap"), 50, "{out:?}");
    let calls = out.get("calls");
    assert!(calls >= 200, "{out:?}");
    assert_eq!(out.get("n"), calls, "{out:?}");
}

/// The program's own SIGSYS handler (without SA_NODEFER) makes a system
/// call from outside libc while system call probes trap every such call
/// with SIGSYS: SIGSYS is not blocked in the handler, the call is made.
#[test]
fn the_programs_own_sigsys_handler_can_make_system_calls_under_syscall_probes() {
    let out = support_sys::sys_load(
        "tests/targets/sys_mod.c",
        &format!("{} 5", target("sigsys_own")),
        &[],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("sigsys=5 ppid_ok=1"), "{out:?}");
}
