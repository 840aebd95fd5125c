//! The ptap side: session sizing, initial values, begin/end/timer probes,
//! the unread-globals report, exit().
mod codegen_support;
use codegen_support::*;
use ptap_compiler::codegen::host::{self, Which};

#[test]
fn begin_end_timer_and_report() {
    let e = env("global start = 5, label = \"go\", hits, last\n\
         probe begin { printf(\"%s %d\\n\", label, start) }\n\
         probe timer.ms(100) { hits++; last = \"t\" }\n\
         probe end { print(start + hits); exit() }");
    let meta = &e.jit.compiled.meta;
    assert_eq!(
        host::session_size(RING, meta),
        ptap_rt_core::script::globals::offset_in_session(RING) + meta.globals_size as usize
    );
    host::init_globals(&e.globals, meta, 77);
    assert_eq!(host::timers(meta), vec![(1, 0, 100_000_000)]);
    assert_eq!(
        host::run_probes(
            &e.jit.compiled.meta,
            |i| e.jit.handler(i),
            Which::Begin,
            &e.session,
            &e.globals
        ),
        0
    );
    for _ in 0..3 {
        host::run_probes(
            &e.jit.compiled.meta,
            |i| e.jit.handler(i),
            Which::Timer(1, 0),
            &e.session,
            &e.globals,
        );
    }
    assert!(!host::exit_requested(&e.globals));
    assert_eq!(
        host::run_probes(
            &e.jit.compiled.meta,
            |i| e.jit.handler(i),
            Which::End,
            &e.session,
            &e.globals
        ),
        0
    );
    assert!(host::exit_requested(&e.globals));
    assert_eq!(e.output(), "go 5\n8\n");
    assert_eq!(host::unread_globals(meta, &e.globals), "last=\"t\"\n");
    assert_eq!(host::errors(&e.globals), 0);
}

#[test]
fn end_probe_errors_are_counted() {
    let e = env("global z\nprobe end { print(1 / z) }");
    host::init_globals(&e.globals, &e.jit.compiled.meta, 1);
    assert_eq!(
        host::run_probes(
            &e.jit.compiled.meta,
            |i| e.jit.handler(i),
            Which::End,
            &e.session,
            &e.globals
        ),
        1
    );
    assert_eq!(host::errors(&e.globals), 1);
    assert_eq!(
        e.output(),
        "ERROR: division by 0 near `1 / z` at t.pt:2:19 in probe end\n"
    );
}

#[test]
fn ptap_side_probes_from_the_loaded_object() {
    let src = "global n = 41\nprobe begin { n++ }\nprobe end { printf(\"n=%d\\n\", n) }";
    let e = env(src);
    let checked = ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default()).unwrap();
    let m =
        ptap_rt_core::script::load::load(&ptap_compiler::emit_object(&checked).unwrap()).unwrap();
    host::init_globals(&e.globals, &m.meta, 1);
    let run = |w| host::run_probes(&m.meta, |i| m.handler(i), w, &e.session, &e.globals);
    assert_eq!(run(Which::Begin), 0);
    assert_eq!(run(Which::End), 0);
    assert_eq!(e.output(), "n=42\n");
}

#[test]
fn program_from_an_object_file_renders_like_the_compiler() {
    let src = "probe begin { printf(\"%-4s|%5d|%#x\\n\", \"ab\", -3, 255); print(\"x\", 1) }";
    let e = env(src);
    let checked = ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default()).unwrap();
    let compiled = host::Program::compile(&checked).unwrap();
    let p = host::Program::from_object(compiled.object.clone()).unwrap();
    assert_eq!(p.formats, e.jit.compiled.formats);
    host::init_globals(&e.globals, p.meta(), 1);
    assert_eq!(p.run(Which::Begin, &e.session, &e.globals), 0);
    let mut out = String::new();
    e.session.drain(|_, payload| match p.render(payload) {
        ptap_compiler::output::Rendered::Out(s) => out.push_str(&s),
        other => panic!("{other:?}"),
    });
    assert_eq!(out, "ab  |   -3|0xff\nx 1\n");
}

#[test]
fn end_of_session_summary_lists_causes() {
    use ptap_compiler::codegen::host::summary_text;
    assert_eq!(summary_text(0, 0, 0, 0, 0), "");
    assert_eq!(
        summary_text(1, 0, 0, 0, 0),
        "WARNING: Number of errors: 1, skipped probes: 0\n"
    );
    assert_eq!(
        summary_text(2, 3, 4, 2, 5),
        "WARNING: Number of errors: 2, skipped probes: 7\n\
         WARNING: Skipped due to nmissed (kretprobe without a free instance): 3\n\
         WARNING: Skipped due to reentrancy: 4\n\
         WARNING: Errors due to full maps: 2\n\
         WARNING: Output records lost (full output buffer): 5\n"
    );
}
