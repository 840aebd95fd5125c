//! Jump-optimized probes : the jump path takes no trap, keeps the
//! kprobe semantics, is reported by -v, and survives live patching while 8
//! threads run through the probed code (both paths, exact counts).
mod support;
use support::*;

const STRESS_MOD: &str = "tests/targets/opt_stress_mod.c";
const NO_OPT: (&str, &str) = ("PTAP_NO_OPTIMIZE", "1");

/// 8 threads call work() and tick(); probe A on work() is registered and
/// unregistered 1,000 times (each time until it was hit at least once);
/// probe B on tick() stays: it must see every call, exactly.
fn stress(kind: &str, trap_path: bool) {
    let mut env = vec![("PT_KIND", kind)];
    if trap_path {
        env.push(NO_OPT);
    }
    let mut c = ptap();
    c.arg("load")
        .arg("-v")
        .arg(module(STRESS_MOD))
        .arg("-c")
        .arg(format!("{} 8", target("opt_stress")));
    for (k, v) in &env {
        c.env(k, v);
    }
    let out = run_cmd(c, std::time::Duration::from_secs(400));
    assert_eq!(out.code, Some(0), "{out:?}");
    let calls = out.get("calls");
    assert!(calls > 0, "{out:?}");
    assert_eq!(out.get("bad"), 0, "wrong results while patching: {out:?}");
    assert_eq!(out.get("failed"), 0, "{out:?}");
    assert_eq!(out.get("cycles"), 1000, "{out:?}");
    assert_eq!(out.get("no_hit_cycles"), 0, "{out:?}");
    assert_eq!(out.get("hits_b"), calls, "B saw every call: {out:?}");
    let a = out.get("hits_a");
    assert!(a >= 1000 && a <= calls, "{out:?}");
    assert_eq!(out.get("missed_a"), 0, "{out:?}");
    assert_eq!(out.get("missed_b"), 0, "{out:?}");
    assert_eq!(out.get("rets_bad"), 0, "{out:?}");
    let optimized = out.stderr.matches("jump-optimized").count();
    if trap_path {
        assert_eq!(optimized, 0, "{out:?}");
    } else {
        // B once, A at each of its 1,000 registrations (a cycle may stay on
        // the trap path if a thread kept the region busy; nearly none do).
        assert!(optimized >= 900, "{optimized} jump-optimized: {out:?}");
    }
}

#[test]
fn stress_kprobe_jump_path() {
    stress("k", false);
}

#[test]
fn stress_kprobe_trap_path() {
    stress("k", true);
}

#[test]
fn stress_kretprobe_jump_path() {
    stress("r", false);
}

#[test]
fn stress_kretprobe_trap_path() {
    stress("r", true);
}

#[test]
fn jump_optimized_kprobe_takes_no_trap() {
    let out = load("count", &format!("{} 1000", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 1000, "{out:?}");
    assert_eq!(out.get("traps"), 0, "{out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
    // The same module on the trap path: one trap per hit.
    let out = load("count", &format!("{} 1000", target("hot")), &[NO_OPT], 30);
    assert_eq!(out.get("hits"), 1000, "{out:?}");
    assert_eq!(out.get("traps"), 1000, "{out:?}");
}

#[test]
fn trap_free_kretprobe_sees_return_values() {
    let m = "tests/targets/opt_kret_mod.c";
    let out = load(m, &format!("{} 1000", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("returns"), 1000, "{out:?}");
    assert_eq!(out.get("wrong"), 0, "{out:?}");
    assert_eq!(out.get("nmissed"), 0, "{out:?}");
    assert_eq!(out.get("traps"), 0, "no int3 at entry or return: {out:?}");
    assert!(out.stdout.contains("sum=1000000 "), "{out:?}");
    let out = load(m, &format!("{} 1000", target("hot")), &[NO_OPT], 30);
    assert_eq!(out.get("returns"), 1000, "{out:?}");
    assert_eq!(out.get("wrong"), 0, "{out:?}");
    assert_eq!(
        out.get("traps"),
        2000,
        "int3 at entry and at return: {out:?}"
    );
}

#[test]
fn jump_path_honours_register_changes_and_redirects() {
    // regs->di set by the pre_handler: work(7) returns 15 for every call.
    let out = load(
        "count",
        &format!("{} 5", target("hot")),
        &[("PT_SETDI", "7")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("sum=75 "), "{out:?}");
    assert_eq!(out.get("traps"), 0, "{out:?}");
    // A pre_handler that sets ip (and sp) and returns 1: the jump path
    // honours it with one single-step trap after the trampoline's popfq.
    let out = load(
        "count",
        &format!("{} 5", target("hot")),
        &[("PT_SKIP", "42")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("sum"), 5 * 42, "{out:?}");
    assert_eq!(out.get("hits"), 5, "{out:?}");
}

#[test]
fn verbose_load_says_how_each_probe_is_placed() {
    let hot = format!("{} 3", target("hot"));
    let v = |env: &[(&str, &str)]| {
        let mut c = ptap();
        c.arg("load")
            .arg("-v")
            .arg(module("count"))
            .arg("-c")
            .arg(&hot);
        for (k, val) in env {
            c.env(k, val);
        }
        run_cmd(c, std::time::Duration::from_secs(30))
    };
    let out = v(&[]);
    assert!(
        out.stderr
            .contains("jump-optimized: 5 bytes replaced, trampoline 0x"),
        "{out:?}"
    );
    let out = v(&[NO_OPT]);
    assert!(
        out.stderr.contains("; trap path (PTAP_NO_OPTIMIZE)"),
        "{out:?}"
    );
    let out = v(&[("PT_POST", "1")]);
    assert!(
        out.stderr
            .contains("trap path: not optimized: a post_handler forces the trap path"),
        "{out:?}"
    );
    assert_eq!(out.get("posts"), 3, "{out:?}");
    // work+5 is its `ret`, the function's last byte: no room for a jump.
    let out = v(&[("PT_OFF", "5")]);
    assert!(
        out.stderr.contains(
            "trap path: not optimized: the 5-byte jump would cross the function's end (1 bytes left)"
        ),
        "{out:?}"
    );
    assert_eq!(out.get("hits"), 3, "{out:?}");
}

#[test]
fn a_thread_stopped_inside_the_region_keeps_the_probe_on_the_trap_path() {
    // A thread blocked in a system call issued from byte 2 of slow_read: its
    // saved ip is inside the 5 bytes a jump would replace. The barrier finds
    // it; once it has left, a new registration is optimized.
    let mut c = ptap();
    c.arg("load")
        .arg("-v")
        .arg(module("tests/targets/opt_blocked_mod.c"))
        .arg("-c")
        .arg(target("opt_blocked"));
    let out = run_cmd(c, std::time::Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("r1=0 opt1=0 trap1=1 r2=0 opt2=1\n"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "trap path: not optimized: a thread stayed stopped inside the replaced instructions"
        ),
        "{out:?}"
    );
    assert!(out.stdout.contains("reader a=1 b=1\n"), "{out:?}");
    assert!(out.stdout.contains("main read=3\n"), "{out:?}");
    assert_eq!(out.get("hits"), 3, "{out:?}");
}

#[test]
fn jprobes_run_on_the_jump_path_with_the_mirror_principle() {
    let mut c = ptap();
    c.arg("load")
        .arg("-v")
        .arg(module("jargs"))
        .arg("-c")
        .arg(target("args"));
    let out = run_cmd(c, std::time::Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stderr.matches("jump-optimized").count(), 2, "{out:?}");
    assert!(
        out.stdout.contains("jsum6 a=1 b=2 c=3 d=4 e=5 f=6\n"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("jsum7 a=10 f=60 g=70\n"),
        "the stack argument: {out:?}"
    );
    assert!(
        out.stdout.contains("sum6=21 sum7=280"),
        "registers and stack restored: {out:?}"
    );
    // An entry that returns instead of calling jprobe_return(): as on the
    // trap path, that call is skipped with the entry's value.
    let out = load("jbad", &format!("{} 3", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("sum=3000 counter=3"), "{out:?}");
    assert!(
        out.stdout.contains("entries=3 hits=3 bump_missed=0"),
        "{out:?}"
    );
}

#[test]
fn jprobe_entries_see_and_keep_float_arguments_on_both_paths() {
    for env in [&[][..], &[NO_OPT][..]] {
        let out = load(
            "tests/targets/opt_float_mod.c",
            &target("opt_float"),
            env,
            30,
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains("s=10.25\n"), "{env:?}: {out:?}");
        assert_eq!(out.get("seen_x100"), 825, "{out:?}");
        assert_eq!(out.get("nb"), 3, "{out:?}");
    }
}

/// GCC's -fipa-ra lets `main` keep twelve sums in vector registers
/// (xmm8-15 among them) across its calls of `pair_of`, which does not write
/// them; handlers at the entry and at the return overwrite every xmm
/// register (and ymm0-1 in full). The caller's values and the returned
/// ones (xmm0/xmm1, and ymm0 from `wide_of`) must come through on both
/// paths. (With only the argument registers saved at entries and returns,
/// `live` came out NaN.)
#[test]
fn values_callers_keep_in_vector_registers_survive_entry_and_return_handlers() {
    let want = ret_vec_plain();
    assert!(
        want.starts_with("pair=") && want.contains(" live="),
        "{want}"
    );
    for env in [&[][..], &[NO_OPT][..]] {
        let out = load(
            "tests/targets/ret_vec_mod.c",
            &format!("{} 50", target("ret_vec")),
            env,
            30,
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stdout.contains(&want),
            "{env:?}: want {want:?}: {out:?}"
        );
        assert_eq!(out.get("entries"), 50, "{out:?}");
        let wide = if want.contains("wide=skip") { 0 } else { 50 };
        assert_eq!(out.get("ret_hits"), 50 + wide, "{out:?}");
    }
}

/// The same callers under compiled-script probes (kprobe and kretprobes on
/// `pair_of`, a kretprobe on `wide_of`), whose handlers run the runtime's
/// SSE code (string formatting, map updates). With `PTAP_SSE_SAVE=1` the
/// trampolines and the return stub save only xmm0-15 and leave the upper
/// halves to the handlers' legacy SSE (where the CPU has AVX); with `=0`
/// they keep the wide save. The callers' sums must not change either way.
#[test]
fn values_callers_keep_survive_compiled_script_handlers_with_either_save() {
    let want = ret_vec_plain();
    let wide = if want.contains("wide=skip") { 0 } else { 50 };
    let prog = "global n, r, s, t, w
        probe kprobe(pair_of) { n++; s[sprintf(\"k%d-%s\", n % 7, \"pair\")] += 1 }
        probe kretprobe(pair_of) { r++; t[sprintf(\"r%d\", r % 5)] <<< r }
        probe kretprobe(wide_of) { w++ }
        probe end { printf(\"entries=%d rets=%d wides=%d\\n\", n, r, w) }";
    for save in ["1", "0"] {
        let mut cmd = ptap();
        cmd.env("PTAP_SSE_SAVE", save)
            .args(["-v", "-e", prog, "-c"])
            .arg(format!("{} 50", target("ret_vec")));
        let out = run_cmd(cmd, std::time::Duration::from_secs(60));
        assert_eq!(out.code, Some(0), "PTAP_SSE_SAVE={save}: {out:?}");
        assert!(
            out.stdout.contains(&want),
            "PTAP_SSE_SAVE={save}: want {want:?}: {out:?}"
        );
        assert_eq!(out.get("entries"), 50, "{out:?}");
        assert_eq!(out.get("rets"), 50, "{out:?}");
        assert_eq!(out.get("wides"), wide, "{out:?}");
        assert!(out.stderr.contains("jump-optimized"), "{out:?}");
    }
}

/// A C module whose code uses only legacy SSE and imports only the
/// runtime's functions counts as known code (`ptap load -v` says so): its
/// handlers get the lighter saves, and the callers' vector values still come
/// through. One that uses AVX (ret_vec_mod.c) keeps the full saves, and -v
/// says why. Registering a probe from inside a handler is refused (EBUSY).
#[test]
fn sse_only_c_modules_get_the_lighter_saves_and_callers_keep_their_values() {
    let want = ret_vec_plain();
    let wide = if want.contains("wide=skip") { 0 } else { 50 };
    let verbose = ("PTAP_VERBOSE", "1");
    let out = load(
        "tests/targets/ret_sse_mod.c",
        &format!("{} 50", target("ret_vec")),
        &[verbose, ("PTAP_SSE_SAVE", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&want), "want {want:?}: {out:?}");
    assert!(out.stderr.contains("lighter vector saves"), "{out:?}");
    assert_eq!(out.get("entries"), 50, "{out:?}");
    assert_eq!(out.get("ret_hits"), 50 + wide, "{out:?}");
    assert_eq!(
        out.get("nested"),
        -16,
        "register_kprobe from a handler: {out:?}"
    );
    let out = load(
        "tests/targets/ret_vec_mod.c",
        &format!("{} 5", target("ret_vec")),
        &[verbose],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("full vector saves around its handlers"),
        "{out:?}"
    );
}

/// What `ret_vec 50` prints without probes.
fn ret_vec_plain() -> String {
    let plain = std::process::Command::new(target("ret_vec"))
        .arg("50")
        .output()
        .expect("run ret_vec");
    String::from_utf8_lossy(&plain.stdout).into_owned()
}

/// An outer probe unregistered and registered again while a probe sits
/// inside the bytes its jump would replace keeps to the trap path: both
/// see every call (its prepared jump used to come back over the inner
/// probe's int3).
#[test]
fn an_outer_probe_registered_again_keeps_off_the_inner_probe() {
    let m = "tests/targets/near_sites_mod.c";
    let out = load(m, &format!("{} 1000", target("near_sites")), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("again"), 0, "{out:?}");
    assert_eq!(out.get("a"), 1000, "{out:?}");
    assert_eq!(out.get("b"), 1000, "{out:?}");
    assert!(out.stdout.contains("sum=999000"), "{out:?}");
}
