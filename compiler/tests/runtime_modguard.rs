//! A C module's init_module() and cleanup_module() under the fault guard
//! (`ptap load -c`): a fault or an init_module() that never returns is
//! reported, the module is taken out, the target runs to its end unprobed,
//! and ptap exits with status 1. (`-x`: see cli_attach.rs.)
mod support;
use support::*;

fn run(env: &[(&str, &str)]) -> Output {
    load("badinit", &format!("{} 3", target("hot")), env, 60)
}

#[test]
fn a_faulting_init_module_is_aborted_and_the_target_runs_unprobed() {
    let out = run(&[("PT_INIT", "fault")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("sum=9 counter=3"), "{out:?}");
    assert!(
        out.stderr
            .contains("faulted (trap 14, address 0x10, ip init_module+"),
        "{out:?}"
    );
    assert!(out.stderr.contains("nothing is probed"), "{out:?}");
    assert!(!out.stdout.contains("cleanup"), "{out:?}");
}

#[test]
fn an_init_module_that_never_returns_is_abandoned() {
    let out = run(&[("PT_INIT", "hang"), ("PTAP_INIT_TIMEOUT", "1")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("sum=9 counter=3"), "{out:?}");
    assert!(
        out.stderr
            .contains("did not return within 1 s (PTAP_INIT_TIMEOUT) and was abandoned"),
        "{out:?}"
    );
}

#[test]
fn a_faulting_cleanup_module_is_aborted_and_reported() {
    let out = run(&[("PT_CLEANUP", "fault")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("cleanup hits>0=1"), "{out:?}");
    assert!(!out.stdout.contains("not reached"), "{out:?}");
    assert!(
        out.stderr.contains("cleanup_module() of")
            && out.stderr.contains("faulted (trap 14, address 0x18"),
        "{out:?}"
    );
}

#[test]
fn a_well_behaved_module_still_exits_with_the_targets_status() {
    let out = run(&[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("not reached"), "{out:?}");
    assert!(!out.stderr.contains("ptap:"), "{out:?}");
}
