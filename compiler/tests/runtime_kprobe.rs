//! kprobes inside user-space targets ("kprobe" and registration bullets).
mod support;
use support::*;

#[test]
fn seed_kprobe_example_runs_end_to_end() {
    let out = load(
        "examples/modules/kprobe_example.c",
        &format!("{} 3", target("hot")),
        &[],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    // The target's own stdout is flushed by exit(), after the module's
    // cleanup: only the ring's lines have a fixed order.
    let l: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with("sum="))
        .collect();
    assert_eq!(l[0], "kprobe registered", "{out:?}");
    assert_eq!(
        l.iter()
            .filter(|l| l.starts_with("pre_handler: p->addr=0x"))
            .count(),
        3,
        "{out:?}"
    );
    assert_eq!(
        l.iter()
            .filter(|l| l.starts_with("post_handler: p->addr=0x"))
            .count(),
        3,
        "{out:?}"
    );
    assert!(out.stdout.contains("di=2\n"), "{out:?}");
    assert!(out.stdout.contains("Call Trace:\n"), "{out:?}");
    assert!(out.stdout.contains("] work+0x0\n"), "{out:?}");
    assert!(
        out.stdout.contains("] main+0x24\n"),
        "the stack shows the caller: {out:?}"
    );
    assert!(out.stdout.contains("sum=9 counter=3"), "{out:?}");
    assert_eq!(*l.last().unwrap(), "kprobe unregistered", "{out:?}");
}

#[test]
fn pre_handler_sees_the_threads_registers() {
    let out = load(
        "count",
        &format!("{} 4", target("hot")),
        &[("PT_PRINT", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let pres: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("pre "))
        .collect();
    // ip is reported relative to p->addr: the probed address itself.
    assert_eq!(
        pres,
        [
            "pre ip=0 di=0",
            "pre ip=0 di=1",
            "pre ip=0 di=2",
            "pre ip=0 di=3"
        ],
        "{out:?}"
    );
}

#[test]
fn boosted_probe_takes_exactly_one_trap_per_hit() {
    // The trap path (jump-optimized probes take no trap at all: see
    // runtime_optprobe.rs, jump_optimized_kprobe_takes_no_trap).
    let out = load(
        "count",
        &format!("{} 1000", target("hot")),
        &[("PTAP_NO_OPTIMIZE", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 1000);
    assert_eq!(out.get("posts"), 0);
    assert_eq!(
        out.get("traps"),
        1000,
        "no second trap without a post_handler: {out:?}"
    );
    assert_eq!(out.get("sum"), 1000 * 1000, "sum of 2i+1 for i<1000");
}

#[test]
fn post_handler_runs_after_the_displaced_instruction() {
    let out = load(
        "count",
        &format!("{} 3", target("hot")),
        &[("PT_POST", "1"), ("PT_PRINT", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 3);
    assert_eq!(out.get("posts"), 3);
    assert_eq!(
        out.get("traps"),
        6,
        "int3 + one trap after the instruction (the post slot's int3): {out:?}"
    );
    let l = out.lines();
    let i = l.iter().position(|l| l.starts_with("pre ")).unwrap();
    assert_eq!(l[i], "pre ip=0 di=0");
    // post_handler: after the displaced instruction (work's first, 5 bytes: lea 1(%rdi,%rdi),%rax).
    assert!(
        l[i + 1].starts_with("post ip=") && l[i + 1].ends_with(" flags=0"),
        "{out:?}"
    );
    assert_ne!(
        l[i + 1],
        "post ip=0 flags=0",
        "ip moved past the instruction: {out:?}"
    );
    assert_eq!(out.get("sum"), 9);
}

#[test]
fn rip_relative_instruction_runs_out_of_line() {
    // bump's first instruction reads `counter` rip-relatively; boosted and stepped.
    for post in [false, true] {
        let mut env = vec![("PT_SYM", "bump")];
        if post {
            env.push(("PT_POST", "1"));
        }
        let out = load("count", &format!("{} 100", target("hot")), &env, 30);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.get("hits"), 100);
        assert_eq!(out.get("counter"), 4950, "{out:?}");
    }
}

#[test]
fn handler_changes_to_regs_take_effect() {
    // work(x) = 2x+1; the pre_handler forces x = 100.
    let out = load(
        "count",
        &format!("{} 10", target("hot")),
        &[("PT_SETDI", "100")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("sum"), 10 * 201, "{out:?}");
    let out = load(
        "count",
        &format!("{} 10", target("hot")),
        &[("PT_SETDI", "100"), ("PT_POST", "1")],
        30,
    );
    assert_eq!(out.get("sum"), 10 * 201, "{out:?}");
}

#[test]
fn several_probes_on_one_address_run_in_registration_order() {
    let out = load("order", &format!("{} 2", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let l: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with("sum="))
        .collect();
    assert_eq!(
        l,
        ["A di=0", "B di=0", "C di=0", "B-post", "A di=1", "B di=1", "C di=1", "B-post", "done"],
        "{out:?}"
    );
}

#[test]
fn a_hit_inside_a_handler_runs_no_handler_and_counts_nmissed() {
    let out = load("reentry", &format!("{} 5", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.get("work_hits"),
        5,
        "only main's calls ran work's handler: {out:?}"
    );
    assert_eq!(
        out.get("work_missed"),
        5,
        "the calls from bump's handler were missed: {out:?}"
    );
    assert_eq!(out.get("bump_hits"), 5);
}

#[test]
fn exact_hit_counts_from_8_threads() {
    let out = load("count", &format!("{} 8 5000", target("threads")), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("calls"), 40000);
    assert_eq!(out.get("hits"), 40000, "{out:?}");
    assert_eq!(out.get("nmissed"), 0);
    let out = load(
        "count",
        &format!("{} 8 2000", target("threads")),
        &[("PT_POST", "1")],
        60,
    );
    assert_eq!(out.get("hits"), 16000, "{out:?}");
    assert_eq!(out.get("posts"), 16000, "{out:?}");
}

#[test]
fn registration_error_codes() {
    // The trap path: the module reads the int3 byte at the probed address.
    // The jump path: registration_error_codes_on_the_jump_path.
    let out = load(
        "errors",
        &format!("{} 2", target("hot")),
        &[("PTAP_NO_OPTIMIZE", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    for (k, v) in [
        ("unknown", -2),
        ("not_boundary", -84),
        ("runtime", -22),
        ("data", -22),
        ("ok", 0),
        ("again", -17),
        ("qualified", 0),
        ("qualified_path_lib", 0),
        ("unknown_lib", -2),
        ("both_addr_and_symbol", -22),
        ("byte_before_is_int3", 0),
        ("byte_during_is_int3", 1),
        ("second_on_same_addr", 0),
        ("still_int3_with_one_left", 1),
        ("restored", 1),
        ("ok_again", 0),
        ("lookup_local", 1),
        ("lookup_missing", 0),
        ("addr_matches", 1),
        ("disable", 0),
        ("enable", 0),
        ("disable_unregistered", -22),
        ("disarmed", 1),
        ("rearmed", 1),
    ] {
        assert_eq!(out.value(k), Some(v), "{k}: {out:?}");
    }
    assert!(out.stdout.contains("cleanup\n"), "{out:?}");
    // Each refusal is explained on stderr.
    for why in [
        "ptap: register_kprobe(no_such_function_xyz): unknown symbol `no_such_function_xyz` (-2)\n",
        "address is not on an instruction boundary (-84)\n",
        "is inside the ptap runtime itself (-22)\n",
        "is not in the executable code of a loaded object (-22)\n",
        "ptap: register_kprobe(work): this struct is already registered (-17)\n",
        "ptap: register_kprobe(work): both addr and symbol_name are set (-22)\n",
    ] {
        assert!(out.stderr.contains(why), "{why}: {out:?}");
    }
}

#[test]
fn unregister_from_another_thread_at_any_time() {
    let out = load("toggle", &format!("{} 4 700", target("spin")), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("rounds"), 100, "{out:?}");
    assert_eq!(
        out.get("violations"),
        0,
        "a handler ran after unregister returned: {out:?}"
    );
    assert_eq!(out.get("hits_positive"), 1, "{out:?}");
    assert!(out.get("spin_calls") > 0);
}

#[test]
fn init_failure_is_reported_and_the_target_still_runs() {
    let out = load(
        "count",
        &format!("{} 2", target("hot")),
        &[("PT_SYM", "does_not_exist")],
        30,
    );
    // The target ran (its output is there); the session failed: status 1.
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.get("register"), -2);
    assert!(out.stderr.contains("init_module() of"), "{out:?}");
    assert!(out.stderr.contains("returned -2"), "{out:?}");
    assert_eq!(out.get("sum"), 4);
}

#[test]
fn post_handler_on_a_ret_is_single_stepped() {
    // work+5 is `ret`: it leaves the slot, so it is single-stepped with TF.
    let out = load(
        "count",
        &format!("{} 3", target("hot")),
        &[("PT_OFF", "5"), ("PT_POST", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 3);
    assert_eq!(out.get("posts"), 3);
    assert_eq!(out.get("traps"), 6, "{out:?}");
    assert_eq!(out.get("sum"), 9);
}

#[test]
fn pre_handler_returning_nonzero_resumes_where_it_set_ip() {
    // Fault injection: work() returns 42 without running.
    let out = load(
        "count",
        &format!("{} 5", target("hot")),
        &[("PT_SKIP", "42")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("sum"), 5 * 42, "{out:?}");
    assert_eq!(out.get("hits"), 5);
}

#[test]
fn disable_kprobe_stops_the_handlers() {
    let out = load(
        "count",
        &format!("{} 10", target("hot")),
        &[("PT_DISABLE", "4"), ("PTAP_NO_OPTIMIZE", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 4, "{out:?}");
    assert_eq!(
        out.get("traps"),
        4,
        "the probe was disarmed: no more traps: {out:?}"
    );
    assert_eq!(out.get("sum"), 100);
}

#[test]
fn disable_kprobe_stops_the_handlers_on_the_jump_path() {
    let out = load(
        "count",
        &format!("{} 10", target("hot")),
        &[("PT_DISABLE", "4")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits"), 4, "{out:?}");
    assert_eq!(out.get("traps"), 0, "jump-optimized: never a trap: {out:?}");
    assert_eq!(out.get("sum"), 100);
}

#[test]
fn registration_error_codes_on_the_jump_path() {
    let out = load("errors", &format!("{} 2", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    // Same codes as on the trap path; the first byte of a live optimized
    // probe is a jmp (0xe9), not an int3.
    for (k, v) in [
        ("unknown", -2),
        ("not_boundary", -84),
        ("runtime", -22),
        ("data", -22),
        ("ok", 0),
        ("again", -17),
        ("qualified", 0),
        ("qualified_path_lib", 0),
        ("unknown_lib", -2),
        ("both_addr_and_symbol", -22),
        ("byte_before_is_int3", 0),
        ("byte_during_is_int3", 0),
        ("second_on_same_addr", 0),
        ("ok_again", 0),
        ("lookup_local", 1),
        ("lookup_missing", 0),
        ("addr_matches", 1),
        ("disable", 0),
        ("enable", 0),
        ("disable_unregistered", -22),
        ("disarmed", 1),
    ] {
        assert_eq!(out.value(k), Some(v), "{k}: {out:?}");
    }
    assert!(out.stdout.contains("cleanup\n"), "{out:?}");
}

#[test]
fn handlers_on_different_threads_run_concurrently() {
    let out = load(
        "concurrent",
        &format!("{} 2 200", target("threads")),
        &[],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("overlapped"), 1, "{out:?}");
}

#[test]
fn a_forked_child_keeps_its_probes() {
    let out = load("count", &target("forks"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    let hits: Vec<i64> = out
        .lines()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("hits=")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(
        hits,
        [3, 2],
        "child then parent, each at its own exit: {out:?}"
    );
}

#[test]
fn a_handler_may_unregister_its_own_probe() {
    let out = load("selfremove", &format!("{} 10", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("hits_a"), 3, "{out:?}");
    // a unregisters b at hit 3 before b's turn in that hit: b does not run
    // once unregister_kprobe(&b) has returned (not even later in the same
    // hit: the entry is marked dead), so b ran at hits 1 and 2 only.
    assert_eq!(out.get("hits_b"), 2, "{out:?}");
    assert_eq!(out.get("sum"), 100);
}

/// Offsets of the instructions of `sym` in `bin` (objdump), minus `skip` mnemonics.
fn insn_offsets(bin: &std::path::Path, sym: &str, skip: &[&str]) -> Vec<u64> {
    let out = std::process::Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(bin)
        .output()
        .expect("objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text
        .lines()
        .skip_while(|l| !l.ends_with(&format!("<{sym}>:")));
    let start =
        u64::from_str_radix(lines.next().unwrap().split_whitespace().next().unwrap(), 16).unwrap();
    let mut offs = Vec::new();
    for l in lines {
        let Some((addr, rest)) = l.trim().split_once(':') else {
            break;
        };
        let Ok(a) = u64::from_str_radix(addr, 16) else {
            break;
        };
        let mnemonic = rest.split_whitespace().next().unwrap_or("");
        if !skip.contains(&mnemonic) {
            offs.push(a - start);
        }
        if mnemonic == "ret" {
            break;
        }
    }
    offs
}

#[test]
fn every_instruction_kind_runs_out_of_line_or_is_emulated() {
    let bin = compile("insns");
    let plain = run_cmd(
        std::process::Command::new(&bin),
        std::time::Duration::from_secs(10),
    );
    assert!(
        plain.stdout.contains("mix0=103 mix5=1032 total=2146"),
        "{plain:?}"
    );
    let offs = insn_offsets(&bin, "insn_mix", &["ud2"]);
    assert_eq!(offs.len(), 23, "{offs:?}");
    let list = offs
        .iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for post in [true, false] {
        let mut env = vec![("PT_SYM", "insn_mix"), ("PT_OFFS", list.as_str())];
        if !post {
            env.push(("PT_NOPOST", "1"));
        }
        let out = load("every", &format!("{} 3", bin.display()), &env, 60);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.get("registered"), 23, "{out:?}");
        assert!(
            out.stdout.contains("mix0=103 mix5=1032 total=2146"),
            "same results: {out:?}"
        );
        // 5 calls: x=0 (twice) executes 20 instructions, x!=0 (3 times) 26
        // (the loop body runs 3 times: 6 of them).
        let expect = 2 * 20 + 3 * 26;
        assert_eq!(out.get("pres"), expect, "{out:?}");
        assert_eq!(out.get("posts"), if post { expect } else { 0 }, "{out:?}");
    }
}
