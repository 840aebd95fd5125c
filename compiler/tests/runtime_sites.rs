//! The runtime's one site table: kprobes and moved libc syscall sites are
//! two kinds of site in it, an int3 is dispatched with exactly one lookup,
//! and one address has one owner.
mod support;

use support::*;
#[path = "support/sys.rs"]
mod support_sys;
use support_sys::*;

#[test]
fn an_int3_of_either_kind_costs_exactly_one_site_table_lookup() {
    let n = 300;
    let cmd = format!("{} one {n}", target("sites_one_table"));
    // The trap path: a jump-optimized kprobe would not trap at all.
    let out = sys_load(
        "tests/targets/sites_mod.c",
        &cmd,
        &[("PTAP_NO_OPTIMIZE", "1")],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("reg 0 0"), "{out:?}");
    assert_eq!(out.get("ok"), 1, "results unchanged: {out:?}");
    // Each iteration traps twice: the kprobe's int3 and the int3 on the
    // `syscall` of libc's syscall() (moved: getppid is probed).
    assert_eq!(out.get("kprobe_hits"), n, "probe-kind dispatches: {out:?}");
    assert_eq!(
        out.get("syscall_int3"),
        n,
        "syscall-kind dispatches: {out:?}"
    );
    assert_eq!(out.get("traps"), 2 * n, "{out:?}");
    // One table read per int3, whatever its kind (the syscall side keeps no
    // lookup structure of its own, and the kprobe path does not look again).
    assert_eq!(out.get("lookups"), 2 * n, "{out:?}");
    // And both kinds' handlers ran for every call.
    assert_eq!(out.get("kprobe_pre"), n, "{out:?}");
    assert!(out.get("sys_entry") >= n, "{out:?}");
}

#[test]
fn a_kprobe_on_a_moved_syscall_site_is_refused_until_the_site_is_back() {
    let cmd = format!("{} conflict", target("sites_one_table"));
    let out = sys_load("tests/targets/sys_mod_none.c", &cmd, &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("syscall_probe"), 0, "{out:?}");
    assert_eq!(out.get("moved"), 1, "getppid's site is moved: {out:?}");
    assert_eq!(out.get("kprobe_while_moved"), -16, "EBUSY: {out:?}");
    assert!(
        out.stderr.contains("register_kprobe(libc:getppid): 0x")
            && out.stderr.contains(
                "is a libc system call site that a system call probe has moved out of libc"
            ),
        "a one-line reason: {out:?}"
    );
    assert_eq!(out.get("kprobe_after"), 0, "{out:?}");
    assert_eq!(out.get("kprobe_hits"), 10, "{out:?}");
}
