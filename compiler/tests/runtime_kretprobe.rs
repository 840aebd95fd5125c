//! kretprobes and jprobes .
mod support;
use support::*;

#[test]
fn seed_kretprobe_example_reports_failing_opens() {
    let out = load(
        "examples/modules/kretprobe_example.c",
        &target("opens"),
        &[],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Planted return probe at "), "{out:?}");
    assert_eq!(
        out.stdout.matches("libc:open returns -1\n").count(),
        2,
        "{out:?}"
    );
    assert!(out.stdout.contains("opened 2 of 4"), "{out:?}");
    assert!(
        out.stdout
            .contains("kretprobe unregistered\nMissed probing 0 instances of libc:open\n"),
        "{out:?}"
    );
}

#[test]
fn seed_jprobe_example_prints_arguments() {
    let out = load(
        "examples/modules/jprobe_example.c",
        &target("args"),
        &[],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("jprobe: a=1, b=2, c=3, d=4, e=5, f=6\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("sum6=21 sum7=280"), "{out:?}");
    assert!(out.stdout.contains("jprobe unregistered\n"), "{out:?}");
}

#[test]
fn kretprobe_handler_sees_return_value_and_entry_data() {
    let out = load(
        "kret",
        &format!("{} 3", target("hot")),
        &[("PT_PRINT", "1")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let l: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("work("))
        .collect();
    assert_eq!(l, ["work(0)=1", "work(1)=3", "work(2)=5"], "{out:?}");
    assert_eq!(out.get("returns"), 3);
    assert_eq!(out.get("sum"), 9);
}

#[test]
fn kretprobe_recursion_fib20() {
    let out = load(
        "kret",
        &format!("{} 20", target("fib")),
        &[("PT_SYM", "fib"), ("PT_MAXACTIVE", "64")],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("fib(20)=6765 calls=21891"), "{out:?}");
    assert_eq!(out.get("returns"), 21891, "{out:?}");
    assert_eq!(out.get("entries"), 21891);
    assert_eq!(out.get("nmissed"), 0);
}

#[test]
fn maxactive_exhausted_counts_nmissed() {
    let out = load(
        "kret",
        &format!("{} 15", target("fib")),
        &[("PT_SYM", "fib"), ("PT_MAXACTIVE", "5")],
        60,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("fib(15)=610 calls=1973"), "{out:?}");
    let (ret, missed) = (out.get("returns"), out.get("nmissed"));
    assert!(missed > 0, "{out:?}");
    assert_eq!(
        ret + missed,
        1973,
        "every call either returned through the trampoline or was missed: {out:?}"
    );
}

#[test]
fn default_maxactive_is_at_least_10() {
    // fib(12) nests 12 deep: with the default max(10, 2*CPUs) some are missed
    // only if fewer than 12 instances exist.
    let out = load(
        "kret",
        &format!("{} 9", target("fib")),
        &[("PT_SYM", "fib")],
        60,
    );
    assert_eq!(
        out.get("nmissed"),
        0,
        "depth 9 fits in the default: {out:?}"
    );
    assert_eq!(out.get("returns"), 109);
}

#[test]
fn kretprobe_from_many_threads() {
    let out = load("kret", &format!("{} 8 2000", target("threads")), &[], 60);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.get("returns"), 16000, "{out:?}");
    assert_eq!(out.get("nmissed"), 0);
}

#[test]
fn kretprobed_function_left_by_longjmp() {
    let out = load(
        "kret",
        &target("longjmp"),
        &[("PT_SYM", "jumper"), ("PT_MAXACTIVE", "4")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("jumps=100 sum=90"), "{out:?}");
    assert_eq!(out.get("entries"), 110);
    assert_eq!(out.get("returns"), 10, "{out:?}");
    assert_eq!(
        out.get("nmissed"),
        0,
        "abandoned instances were reaped: {out:?}"
    );
}

#[test]
fn exit_from_inside_a_kretprobed_function() {
    let out = load(
        "kret",
        &target("exit"),
        &[("PT_SYM", "leave_now"), ("PT_SYM2", "work")],
        30,
    );
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stdout.contains("leaving with 3"), "{out:?}");
    assert_eq!(
        out.get("returns"),
        1,
        "work returned, leave_now never did: {out:?}"
    );
    assert_eq!(out.get("entries"), 2);
}

#[test]
fn cxx_exception_through_kretprobed_frames() {
    let out = load(
        "kret",
        &target("cxx_throw"),
        &[("PT_SYM", "_Z7throweri"), ("PT_SYM2", "_Z6middlei")],
        30,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("caught=50 sum=2500"), "{out:?}");
    // 50 even calls return through both trampolines; the 50 odd ones unwind.
    assert_eq!(out.get("returns"), 100, "{out:?}");
    assert_eq!(out.get("entries"), 200);
    assert_eq!(
        (out.get("nmissed"), out.get("nmissed2")),
        (0, 0),
        "unwinding is not a miss: {out:?}"
    );
    assert_eq!(
        out.get("unwound"),
        100,
        "the unwound thrower and middle frames: {out:?}"
    );
}

/// 100,000 exceptions through kretprobed frames: thrower (returns and
/// throws) and catcher, which catches them itself, so its frame survives
/// every exception and each of its returns is traced.
#[test]
fn hundred_thousand_exceptions_through_kretprobes() {
    let out = load(
        "kret",
        &format!("{} 100000", target("cxx_unwind")),
        &[("PT_SYM", "_Z7throweri"), ("PT_SYM2", "_Z7catcheri")],
        300,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("caught=50000 sum=2500000000 neg=50000"),
        "{out:?}"
    );
    // thrower: 200,000 calls, 100,000 return; catcher: 100,000 calls, all return.
    assert_eq!(out.get("entries"), 300_000, "{out:?}");
    assert_eq!(out.get("returns"), 200_000, "{out:?}");
    assert_eq!((out.get("nmissed"), out.get("nmissed2")), (0, 0), "{out:?}");
    assert_eq!(out.get("unwound"), 100_000, "{out:?}");
}

#[test]
fn backtrace_in_a_probe_shows_real_return_addresses() {
    let out = load("bt", &target("nested"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("] work+0x0\n"), "{out:?}");
    assert!(out.stdout.contains("] outer+0x5\n"), "{out:?}");
    assert!(
        !out.stdout.contains("] ? "),
        "unwound with CFI, no guesses: {out:?}"
    );
    assert!(
        out.stdout.contains("] _start+0x"),
        "down to the outermost frame: {out:?}"
    );
    assert!(
        out.stdout.contains("] main+0xe\n"),
        "outer's hijacked return address shows as main: {out:?}"
    );
    assert!(
        !out.stdout.contains("libptap_rt"),
        "no trampoline in the trace: {out:?}"
    );
    assert!(out.stdout.contains("outer returned 16"), "{out:?}");
}

fn jprobe_mirror(trap_path: bool) {
    let env: &[(&str, &str)] = if trap_path {
        &[("PTAP_NO_OPTIMIZE", "1")]
    } else {
        &[]
    };
    let out = load("jargs", &target("args"), env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("register=0,0"), "{out:?}");
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
}

#[test]
fn jprobe_mirror_principle_and_restored_stack() {
    jprobe_mirror(false);
}

#[test]
fn jprobe_mirror_principle_and_restored_stack_trap_path() {
    jprobe_mirror(true);
}

/// GCC calls `sum7` (a local leaf) with a stack that is not 16-byte aligned;
/// the jprobe entry must still get the ABI's alignment (release builds of
/// printk use movaps: the trap path died with SIGSEGV there).
fn jprobe_entry_alignment(trap_path: bool, plain_return: bool) {
    let mut env = vec![("PT_RETURN", if plain_return { "1" } else { "0" })];
    if trap_path {
        env.push(("PTAP_NO_OPTIMIZE", "1"));
    }
    let out = load("jalign", &target("args"), &env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("register=0,0"), "{out:?}");
    assert!(out.stdout.contains("jsum6 aligned=1 a=1 f=6\n"), "{out:?}");
    assert!(
        out.stdout.contains("jsum7 aligned=1 a=10 f=60 g=70\n"),
        "{out:?}"
    );
    if plain_return && trap_path {
        // The realigned copy's return slot leads back to the runtime:
        // the probed call still runs.
        assert!(out.stdout.contains("sum6=21 sum7=280"), "{out:?}");
    } else if !plain_return {
        assert!(out.stdout.contains("sum6=21 sum7=280"), "{out:?}");
    }
}

#[test]
fn jprobe_entry_gets_an_aligned_stack_trap_path() {
    jprobe_entry_alignment(true, false);
}

#[test]
fn jprobe_entry_gets_an_aligned_stack_jump_path() {
    jprobe_entry_alignment(false, false);
}

#[test]
fn jprobe_entry_returning_without_jprobe_return_on_a_misaligned_call() {
    jprobe_entry_alignment(true, true);
    jprobe_entry_alignment(false, true);
}

#[test]
fn kretprobe_jprobe_and_kprobe_on_one_function() {
    let out = load("jr", &target("args"), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("sum6=21 sum7=280"), "{out:?}");
    // All pre_handlers first (registration order), then the jprobe entry,
    // then the instruction and post_handler, then the return.
    let l: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with("sum6="))
        .collect();
    assert_eq!(l, ["k di=1", "j a=1 f=6", "post", "ret=21"], "{out:?}");
}

#[test]
fn kretprobe_instances_on_a_signal_alternate_stack() {
    let out = load("kret", &target("altstack"), &[("PT_PRINT", "1")], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("result=30 inner=20"), "{out:?}");
    let l: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("work("))
        .collect();
    assert_eq!(l, ["work(2)=20", "work(1)=30"], "{out:?}");
    assert_eq!(out.get("nmissed"), 0);
}

#[test]
fn backtrace_falls_back_to_a_stack_scan_without_cfi() {
    // insn_mix is hand-written asm without CFI: the unwinder reaches it
    // precisely, then scans the stack for the rest ("?" entries).
    let env = [("PT_SYM", "mix_helper"), ("PT_DUMP", "1")];
    let out = load("count", &format!("{} 1", target("insns")), &env, 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    // (Line by line: the target's own output shares the pipe and may come
    // between two lines of the trace.)
    for l in [
        "] mix_helper+0x0\n",
        "] insn_mix+0x18\n",
        " (no unwind information further up; scanning the stack)\n",
    ] {
        assert!(out.stdout.contains(l), "{l}: {out:?}");
    }
    assert!(out.stdout.contains("] ? main+0x"), "{out:?}");
}

#[test]
fn dump_stack_outside_a_handler_unwinds_from_its_caller() {
    let out = load("stack", &format!("{} 1", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Call Trace:\n [<"), "{out:?}");
    assert!(out.stdout.contains("] inner+0x"), "{out:?}");
    assert!(out.stdout.contains("] init_module+0x"), "{out:?}");
    assert!(
        out.stdout.contains("load_module"),
        "the runtime's loader called it: {out:?}"
    );
}

#[test]
fn a_jprobe_entry_that_forgets_jprobe_return_is_survived() {
    let out = load("jbad", &format!("{} 3", target("hot")), &[], 30);
    assert_eq!(out.code, Some(0), "{out:?}");
    // Each buggy entry returned 1000 in place of work(): the call was skipped.
    assert!(out.stdout.contains("sum=3000 counter=3"), "{out:?}");
    assert!(
        out.stdout.contains("entries=3 hits=3 bump_missed=0"),
        "{out:?}"
    );
    assert_eq!(
        out.stderr
            .matches("jprobe entry returned without calling jprobe_return()")
            .count(),
        3,
        "{out:?}"
    );
}

#[test]
fn kretprobe_only_at_a_function_entry_and_duplicates_leave_the_live_probe_alone() {
    for trap_path in [false, true] {
        let env: &[(&str, &str)] = if trap_path {
            &[("PTAP_NO_OPTIMIZE", "1")]
        } else {
            &[]
        };
        let out = load("kretentry", &format!("{} 3", target("hot")), env, 30);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.get("inside"), -22, "work+5 is not an entry: {out:?}");
        assert_eq!(out.get("entry"), 0, "{out:?}");
        assert_eq!(out.get("again"), -17, "{out:?}");
        assert_eq!(out.get("nmissed_kept"), 1, "{out:?}");
        assert_eq!(out.get("rets"), 3, "the live probe still works: {out:?}");
        assert_eq!(out.get("sum"), 9, "{out:?}");
    }
}
