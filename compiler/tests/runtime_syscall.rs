//! Syscall probes : coverage, arguments and return values,
//! children, signals, detach — through `ptap load` of C modules that use
//! runtime/include/ptap/syscalls.h.
mod support;

use support::*;
#[path = "support/sys.rs"]
mod support_sys;
use support_sys::*;

const MODULE: &str = "tests/targets/sys_mod.c";

fn sys_opens(mode: &str) -> String {
    format!("{} {mode}", target("sys_opens"))
}

fn paths(out: &Output) -> Vec<String> {
    opens(out).into_iter().map(|o| o.3).collect()
}

#[test]
fn seed_example_prints_failing_opens_of_cat() {
    let out = sys_load(
        "examples/modules/syscall_example.c",
        "cat /nonexistent",
        &[],
        30,
    );
    assert_eq!(out.code, Some(1), "cat fails as usual: {out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.ends_with(": open(\"/nonexistent\") returns -2")),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("cat: /nonexistent: No such file or directory"),
        "cat still prints its own error: {out:?}"
    );
}

#[test]
fn wrappers_fopen_syscall_and_inline_instruction_are_all_seen() {
    let out = sys_load(MODULE, &sys_opens("basic"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("open=-1 fopen=NULL syscall=-1 inline=-2 ok=1"),
        "the target's own results are unchanged: {out:?}"
    );
    let o = opens(&out);
    let want = [
        "/nonexistent/open",
        "/nonexistent/fopen",
        "/nonexistent/syscall",
        "/nonexistent/inline",
    ];
    assert_eq!(paths(&out), want, "{out:?}");
    for (nr, _, _, _, ret) in &o {
        assert_eq!(*ret, -2, "raw -ENOENT: {out:?}");
        assert_eq!(*nr, 257, "glibc and the inline call use openat: {out:?}");
    }
    assert!(
        out.stdout.contains("registered again=-17 bad=-22"),
        "{out:?}"
    );
    assert!(out.stdout.contains("nmissed=0"), "{out:?}");
    assert_eq!(
        out.get("data_bad"),
        0,
        "per-call data from entry to return: {out:?}"
    );
    assert_eq!(
        out.get("outside"),
        0,
        "no per-call data outside handlers: {out:?}"
    );
}

#[test]
fn entry_sees_the_syscall_abi_and_ret_the_raw_return() {
    let out = sys_load(MODULE, &sys_opens("args"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("getppid_ok=1"), "{out:?}");
    let entry = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with("getppid entry"))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(
        entry, "getppid entry di=11 si=22 dx=33 r10=44 r8=55 r9=66 orig_ax=110 ax=-38",
        "{out:?}"
    );
    let ret = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with("getppid ret"))
        .unwrap_or_else(|| panic!("{out:?}"));
    let (a, b) = ret
        .strip_prefix("getppid ret ax=")
        .unwrap()
        .split_once(" real=")
        .unwrap();
    assert_eq!(a, b, "ax is the value the kernel returned: {out:?}");
}

#[test]
fn threads_created_while_armed_are_seen() {
    let out = sys_load(MODULE, &sys_opens("threads 32"), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("threads=32 failed_opens=32"), "{out:?}");
    let mut p = paths(&out);
    p.sort();
    let mut want: Vec<String> = (0..32).map(|i| format!("/nonexistent/t{i}")).collect();
    want.sort();
    assert_eq!(p, want, "{out:?}");
    let pids: std::collections::BTreeSet<i32> = opens(&out).iter().map(|o| o.1).collect();
    assert_eq!(pids.len(), 1, "threads share the process id: {out:?}");
}

#[test]
fn forked_children_are_seen_with_their_own_pid() {
    let out = sys_load(MODULE, &sys_opens("fork"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let parent = out.get("parent") as i32;
    let child = out.get("child") as i32;
    let o = opens(&out);
    let find = |p: &str| o.iter().find(|x| x.3 == p).map(|x| x.1);
    assert_eq!(find("/nonexistent/forkchild"), Some(child), "{out:?}");
    assert_eq!(find("/nonexistent/forkparent"), Some(parent), "{out:?}");
}

#[test]
fn exec_children_reattach_through_ld_preload() {
    let out = sys_load(MODULE, &sys_opens("exec"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let parent = out.get("parent") as i32;
    let o = opens(&out);
    let leaf = o
        .iter()
        .find(|x| x.3 == "/nonexistent/leaf")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_ne!(
        leaf.1, parent,
        "the exec'ed child reports its own pid: {out:?}"
    );
    assert!(out.stdout.contains("preload=yes"), "{out:?}");
}

#[test]
fn exec_without_the_runtime_is_not_killed_by_a_leftover_trap() {
    let out = sys_load(MODULE, &sys_opens("execclean"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("preload=no"), "{out:?}");
    assert!(
        out.stdout.contains("status=0 signaled=0"),
        "the child ran to completion: {out:?}"
    );
    assert!(
        paths(&out).is_empty(),
        "nothing traced without the runtime: {out:?}"
    );
}

#[test]
fn eintr_sa_restart_and_syscalls_in_signal_handlers_behave_as_without_probes() {
    let native = run_cmd(
        {
            let mut c = std::process::Command::new(compile("sys_opens"));
            c.arg("signals");
            c
        },
        std::time::Duration::from_secs(20),
    );
    assert_eq!(native.code, Some(0), "{native:?}");
    let out = sys_load(MODULE, &sys_opens("signals"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let pick = |o: &Output| -> Vec<String> {
        o.stdout
            .lines()
            .filter(|l| l.starts_with("norestart ") || l.starts_with("restart "))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        pick(&native),
        [
            "norestart r=-1 errno=4 handled=1",
            "restart r=1 errno=0 handled=2 c=x"
        ],
        "{native:?}"
    );
    assert_eq!(pick(&out), pick(&native), "{out:?}");
    assert_eq!(
        paths(&out),
        ["/nonexistent/inhandler", "/nonexistent/inhandler"],
        "the open made inside the signal handler is seen each time: {out:?}"
    );
}

#[test]
fn the_runtimes_own_syscalls_are_not_seen() {
    // The runtime's control thread waits on a futex every second, and
    // kallsyms_lookup_name (called from a handler) opens ELF files: none of
    // these may reach the module.
    let out = sys_load(MODULE, &sys_opens("quiet"), &[("SYS_MOD_LOOKUP", "1")], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("lookup=1"), "{out:?}");
    assert_eq!(paths(&out), ["/nonexistent/quiet"], "{out:?}");
    assert_eq!(out.get("futexes"), 0, "{out:?}");
    assert_eq!(out.get("opens_seen"), 1, "{out:?}");
}

#[test]
fn failures_of_two_programs_under_sh_are_reported_with_their_names() {
    let out = sys_load(
        MODULE,
        "sh -c 'head /nope; cat /nada'",
        &[("SYS_MOD_PREFIX", "/n")],
        30,
    );
    let o = opens(&out);
    let head = o
        .iter()
        .find(|x| x.3 == "/nope")
        .unwrap_or_else(|| panic!("{out:?}"));
    let cat = o
        .iter()
        .find(|x| x.3 == "/nada")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!((head.2.as_str(), head.4), ("head", -2), "{out:?}");
    assert_eq!((cat.2.as_str(), cat.4), ("cat", -2), "{out:?}");
    assert_ne!(head.1, cat.1, "two processes: {out:?}");
    assert!(out.stderr.contains("cat: /nada"), "{out:?}");
}

#[test]
fn after_detach_no_call_traps_and_the_target_goes_on() {
    let out = sys_load_interrupt(MODULE, &sys_opens("detach"), "armed=", 60);
    assert!(out.stdout.contains("armed=1 armed_threads=2"), "{out:?}");
    assert!(
        out.stdout
            .contains("detached=1 traps_during_run=1 traps_after=0 armed_after=0"),
        "the dispatch is off, not merely at ALLOW: {out:?}"
    );
    assert!(out.stdout.contains("/nonexistent/beforedetach"), "{out:?}");
    assert!(
        !out.stdout.contains("/nonexistent/afterdetach"),
        "no handler after detach: {out:?}"
    );
    assert!(
        out.stdout.contains("pristine_before=0 pristine_after=1"),
        "libc's openat sites were moved while probed, and put back byte for byte: {out:?}"
    );
}

#[test]
fn posix_spawn_system_vfork_and_raw_clone_threads_work_and_are_seen() {
    let out = sys_load(MODULE, &sys_opens("spawn"), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    for l in [
        "posix_spawn=0 status=0",
        "system=0",
        "vfork status=0",
        "rawclone tid>0=1 res=-2",
    ] {
        assert!(out.stdout.contains(l), "{l}: {out:?}");
    }
    let o = opens(&out);
    let leaves: std::collections::BTreeSet<i32> = o
        .iter()
        .filter(|x| x.3 == "/nonexistent/leaf")
        .map(|x| x.1)
        .collect();
    assert_eq!(leaves.len(), 3, "three exec'ed children: {out:?}");
    let raw = o
        .iter()
        .find(|x| x.3 == "/nonexistent/rawclone")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(!leaves.contains(&raw.1), "{out:?}");
}

#[test]
fn raw_masks_and_sigaltstack_take_effect_and_never_block_the_trap() {
    let native = run_cmd(
        {
            let mut c = std::process::Command::new(compile("sys_opens"));
            c.arg("masks");
            c
        },
        std::time::Duration::from_secs(20),
    );
    let want = "sigprocmask=0 blocked_int=1 sigaltstack=0 same=1 fd=-1";
    assert!(native.stdout.contains(want), "{native:?}");
    let out = sys_load(MODULE, &sys_opens("masks"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(want), "{out:?}");
    assert_eq!(paths(&out), ["/nonexistent/masked"], "{out:?}");
}

#[test]
fn thread_churn_while_armed_loses_nothing() {
    let out = sys_load(MODULE, &sys_opens("churn 50"), &[], 120);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("churn rounds=50 failed_opens=200"),
        "{out:?}"
    );
    assert_eq!(opens(&out).len(), 200, "{out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
    assert_eq!(out.get("data_bad"), 0, "{out:?}");
}

#[test]
fn ptap_syscall_follow_0_limits_tracing_to_the_first_process() {
    let env = [("PTAP_SYSCALL_FOLLOW", "0")];
    let out = sys_load(MODULE, &sys_opens("fork"), &env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(paths(&out), ["/nonexistent/forkparent"], "{out:?}");
    let out = sys_load(MODULE, &sys_opens("exec"), &env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("preload=yes"), "{out:?}");
    assert!(
        paths(&out).is_empty(),
        "the exec'ed child is not traced: {out:?}"
    );
    let out = sys_load(MODULE, &sys_opens("threads 4"), &env, 30);
    assert_eq!(paths(&out).len(), 4, "threads still are: {out:?}");
}

#[test]
fn handlers_change_arguments_and_results_and_a_faulting_handler_is_aborted() {
    let m = "tests/targets/sys_mod_edit.c";
    let out = sys_load(m, &sys_opens("basic"), &[], 30);
    // A handler faulted: the session exits 1 (the target exits 0).
    assert_eq!(out.code, Some(1), "{out:?}");
    let open = out.get("open");
    assert!(
        open >= 0,
        "entry rewrote the path to /etc/hostname: {out:?}"
    );
    assert!(
        out.stdout.contains("fopen=NULL syscall=-1 inline=-2 ok=1"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("a syscall probe handler faulted; it was aborted"),
        "{out:?}"
    );
    assert!(out.stdout.contains("edit cleanup"), "{out:?}");
    let out = sys_load(m, &sys_opens("ppid"), &[], 30);
    assert_eq!(out.get("ppid"), 4242, "{out:?}");
}

#[test]
fn a_late_registration_arms_threads_that_already_exist() {
    // The threads sleep in read() when the probe is registered: the arming
    // request interrupts them, the read restarts, and their opens are seen.
    let out = sys_load("tests/targets/sys_mod_none.c", &sys_opens("late"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("late registered=0 seen=3 reads_ok=3"),
        "{out:?}"
    );
}

#[test]
fn a_32bit_int80_call_is_made_with_its_own_numbering() {
    let out = sys_load(MODULE, &sys_opens("int80"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("int80 getpid ok=1"), "{out:?}");
}

#[test]
fn a_posix_spawn_child_resetting_handlers_leaves_the_parents_alone() {
    // The child shares memory with the parent until exec: its SIG_DFL for
    // SIGSEGV (POSIX_SPAWN_SETSIGDEF) must not erase the parent's handler.
    let out = sys_load(MODULE, &sys_opens("spawnsegv"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("segv handled after spawn status=0"),
        "{out:?}"
    );
}

#[test]
fn a_kprobe_single_stepping_the_syscall_instruction_and_a_syscall_probe_both_fire() {
    let out = sys_load(
        "tests/targets/sys_mod_kmix.c",
        &sys_opens("ppidloop 1000"),
        &[],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("reg 0 0"), "{out:?}");
    assert!(out.stdout.contains("ppidloop ok=1"), "{out:?}");
    for k in ["pre", "post", "sys_entry", "sys_ret"] {
        assert_eq!(out.get(k), 1001, "{k}: {out:?}");
    }
    assert_eq!(out.get("missed"), 0, "{out:?}");
}

#[test]
fn unregister_waits_for_running_handlers_and_none_runs_after() {
    for _ in 0..3 {
        let out = sys_load(
            "tests/targets/sys_mod_none.c",
            &sys_opens("hammer"),
            &[],
            60,
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stdout.contains(
                "hammer registered=0 hits_before=1 inside_after_unregister=0 more_after=0"
            ),
            "{out:?}"
        );
    }
}

#[test]
fn a_fast_signal_timer_over_probed_blocking_pipe_traffic_loses_nothing() {
    let out = sys_load(
        "tests/targets/sys_mod_rw.c",
        &sys_opens("sigstress"),
        &[],
        120,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("sigstress bad_writes=0 bad_reads=0 ticked=1"),
        "{out:?}"
    );
    let (e, r) = (out.get("entries"), out.get("returns"));
    assert!(e >= 40000, "{out:?}");
    assert_eq!(e, r, "every entry has its return: {out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
}

#[test]
fn bad_pointers_to_calls_the_runtime_reads_give_efault_as_without_probes() {
    let want = "efault -1/14 -1/14 -1/14 -1/14 -1/14 -1/14";
    let native = run_cmd(
        {
            let mut c = std::process::Command::new(compile("sys_opens"));
            c.arg("efault");
            c
        },
        std::time::Duration::from_secs(20),
    );
    assert!(native.stdout.contains(want), "{native:?}");
    let out = sys_load(MODULE, &sys_opens("efault"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(want), "{out:?}");
}

const FAST_MODULE: &str = "tests/targets/sys_fast_mod.c";

#[test]
fn only_probed_libc_calls_pay_and_probed_libc_calls_do_not_trap() {
    let out = sys_load(FAST_MODULE, &sys_opens("fast"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let has = |l: &str| out.stdout.lines().any(|x| x == l);
    // libc is the exempt range: an unprobed libc call never traps.
    assert!(has("libc_getpid traps=0 direct=0"), "{out:?}");
    // The executable's inline calls still trap, probed or not (coverage).
    assert!(has("inline_getpid traps=1000 direct=0"), "{out:?}");
    assert!(has("inline_getppid traps=1000 direct=0"), "{out:?}");
    // libc's getppid site is moved out of libc: the direct path, no trap.
    assert!(has("libc_getppid traps=0 direct=1000"), "{out:?}");
    assert!(has("patched=1 pristine=0"), "{out:?}");
    // syscall(): an int3 site; an unprobed number runs natively from libc,
    // a probed one is sent to the site's direct stub (no SIGSYS either).
    assert!(has("syscall_getpid traps=0 direct=0"), "{out:?}");
    assert!(
        has("syscall_getppid traps=0 direct=100 int3_sites=1"),
        "{out:?}"
    );
    // Every path ran the handlers for every call.
    assert!(
        has("getppid entries=2100 returns=2100 nmissed=0"),
        "{out:?}"
    );
}

#[test]
fn a_probed_blocking_call_on_the_direct_path_keeps_eintr_and_sa_restart() {
    let native = run_cmd(
        {
            let mut c = std::process::Command::new(compile("sys_opens"));
            c.arg("fast");
            c
        },
        std::time::Duration::from_secs(20),
    );
    assert_eq!(native.code, Some(0), "{native:?}");
    let out = sys_load(FAST_MODULE, &sys_opens("fast"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let pick = |o: &Output| -> Vec<String> {
        o.stdout
            .lines()
            .filter(|l| {
                l.starts_with("norestart ")
                    || l.starts_with("restart ")
                    || l.starts_with("libc_readv ")
                    || l.starts_with("inline_readv ")
            })
            .map(String::from)
            .collect()
    };
    assert_eq!(
        pick(&native),
        [
            "libc_readv r=1 c=a",
            "inline_readv r=1 c=b",
            "norestart r=-1 errno=4 handled=1",
            "restart r=1 errno=0 handled=2 c=x"
        ],
        "{native:?}"
    );
    assert_eq!(pick(&out), pick(&native), "{out:?}");
    // Entry and return of each readv, from the patched libc site (direct
    // path) and from the inline instruction (trap), with the raw results:
    // the interrupted one returns -EINTR; the restarted one is one call.
    let fd = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pipe_fd="))
        .unwrap_or_else(|| panic!("{out:?}"));
    let entry = format!("readv entry nr=19 fd={fd} iovcnt=1");
    let rv: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("readv "))
        .collect();
    assert_eq!(
        rv,
        [
            entry.as_str(),
            "readv ret=1",
            entry.as_str(),
            "readv ret=1",
            entry.as_str(),
            "readv ret=-4",
            entry.as_str(),
            "readv ret=1",
        ],
        "{out:?}"
    );
}

/// libc's system call sites are swept once per session: the first process
/// of the tree sweeps and leaves the result in ptap's private directory;
/// the processes it starts read it back (checked site by site against their
/// own libc) instead of decoding libc's text again, and see the same calls.
#[test]
fn followed_processes_read_back_the_first_process_sweep() {
    let out = sys_load(
        MODULE,
        "sh -c 'head /nope; cat /nada; cat /nada2'",
        &[("SYS_MOD_PREFIX", "/n"), ("PTAP_VERBOSE", "1")],
        30,
    );
    let swept = out.stderr.matches("found by sweeping libc's text").count();
    let read = out
        .stderr
        .matches("read back from this session's earlier sweep")
        .count();
    assert_eq!(
        (swept, read),
        (1, 3),
        "sh sweeps, head and both cats read: {out:?}"
    );
    let o = opens(&out);
    for (path, comm) in [("/nope", "head"), ("/nada", "cat"), ("/nada2", "cat")] {
        let x = o
            .iter()
            .find(|x| x.3 == path)
            .unwrap_or_else(|| panic!("{path}: {out:?}"));
        assert_eq!((x.2.as_str(), x.4), (comm, -2), "{out:?}");
    }
}
