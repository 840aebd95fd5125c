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
