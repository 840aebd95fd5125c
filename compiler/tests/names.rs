//! Demangled names in what the target prints: backtraces and usymname()
//! (the spec file tests/spec/names.spec covers point resolution).
mod support;
use std::time::Duration;
use support::*;

fn script(prog: &str, cmd: &str) -> Output {
    let mut c = ptap();
    c.arg("-e").arg(prog).arg("-c").arg(cmd);
    run_cmd(c, Duration::from_secs(120))
}

#[test]
fn cxx_backtrace_shows_demangled_names() {
    let out = script(
        r#"probe kprobe("ns::Class::method") { print_ubacktrace() exit() }"#,
        &format!("{} 3", target("cxx_names")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let first = lines.iter().position(|l| l.starts_with("Call Trace:"));
    let first = first.unwrap_or_else(|| panic!("no backtrace: {out:?}"));
    assert!(
        lines[first + 1].ends_with("] ns::Class::method+0x0"),
        "{out:?}"
    );
    assert!(lines[first + 2].ends_with("] main+0x") || lines[first + 2].contains("] main+0x"));
    assert!(!out.stdout.contains("_ZN2ns"), "{out:?}");
}

#[test]
fn rust_backtrace_and_usymname_show_demangled_names() {
    let out = script(
        r#"probe kprobe(compute) { print(usymname(register("rip"))) print_ubacktrace() exit() }"#,
        &format!("{} 3", target("rs_names")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("rs_names::rs1::compute\n"), "{out:?}");
    assert!(
        out.stdout.contains("] rs_names::rs1::compute+0x0\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("] rs_names::main+0x"), "{out:?}");
}
