//! The session mapping is untrusted input: a target that scribbles over it
//! (random bytes, adversarial ring sizes and positions, forged record and
//! array headers) while ptap drains its output and then runs the end
//! probes must never crash or hang ptap. A bounded fuzz run: a fixed set of
//! seeds, each a short session.
mod support;

use std::time::Duration;

use support::{ptap, run_cmd, target};

const SCRIPT: &str = r#"global a[64], b[16], s, t, u[32]
probe jprobe(poke) {
    a[arg1 % 100] <<< arg1
    b[sprintf("k%d", arg1 % 7)] = sprintf("v%d", arg1)
    u[arg1 % 40] = arg1
    s <<< arg1
    t = sprintf("%d", arg1)
    if (arg1 % 500 == 0) printf("poke %d %s\n", arg1, t)
}
probe end {
    foreach (k in a) printf("a[%d] %d %d\n", k, @count(a[k]), @avg(a[k]))
    foreach (k in b) printf("b[%s] %s\n", k, b[k])
    print(@hist_log(s))
    printf("end %d %s\n", @count(s), t)
}"#;

fn one(seed: u32) {
    let mut c = ptap();
    c.arg("-e")
        .arg(SCRIPT)
        .arg("-c")
        .arg(format!("{} {seed} 20000", target("scribble")));
    let out = run_cmd(c, Duration::from_secs(120));
    assert_eq!(out.signal, None, "seed {seed}: ptap died: {out:?}");
    assert!(
        !out.stderr.contains("panicked"),
        "seed {seed}: ptap panicked: {out:?}"
    );
    assert!(
        matches!(out.code, Some(0) | Some(1)),
        "seed {seed}: unexpected exit: {out:?}"
    );
}

#[test]
fn a_target_scribbling_the_session_never_crashes_ptap() {
    for seed in 1..=12 {
        one(seed);
    }
}

/// The case that crashed ptap: the ring size in the mapping grown past the
/// ring while head = tail, then output written by an end probe (in ptap).
#[test]
fn a_forged_ring_size_is_not_used() {
    let out = run_cmd(
        {
            let mut c = ptap();
            c.arg("-e")
                .arg(r#"probe end { printf("end ok\n") }"#)
                .arg("-c")
                .arg(format!("{} 0 0", target("scribble")));
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("end ok"), "{out:?}");
}

#[path = "codegen_support/mod.rs"]
mod codegen_support;

/// Statistics and arrays in the shared area forged by a process of the
/// session: the handlers that ptap runs (end probes) and the end report
/// never trap or read outside the area.
#[test]
fn forged_statistics_and_array_headers_are_survived() {
    use std::sync::atomic::Ordering;
    let e = codegen_support::env(
        r#"global s, a[8], r
        probe begin { s <<< 1; a[1] = 5; a[2] = 6 }
        probe end { r = @avg(s); printf("avg=%d n=%d\n", @avg(s), a[1] + a[2]) }"#,
    );
    assert_eq!(e.run(0).1.error, 0);
    let meta = &e.jit.compiled.meta;
    let off = |name: &str| meta.globals.iter().find(|g| g.name == name).unwrap().offset;
    // count -1, sum i64::MIN: a plain sdiv would trap.
    e.globals.long(off("s")).store(-1, Ordering::SeqCst);
    e.globals
        .long(off("s") + 8)
        .store(i64::MIN, Ordering::SeqCst);
    // The array's header claims a huge table.
    e.globals
        .long(off("a") + 8)
        .store(1 << 40, Ordering::SeqCst);
    let (_, ctx) = e.run(1);
    assert_eq!(ctx.error, 0);
    assert_eq!(e.output(), format!("avg={} n=0\n", i64::MIN));
    let report = ptap_compiler::codegen::host::unread_globals(meta, &e.globals);
    assert!(
        !report.contains("a["),
        "a forged array reads as empty: {report}"
    );
}
