//! Type inference edge cases, the one-liner equivalence, and front-end API checks.
use codespan_reporting::diagnostic::LabelStyle;
use ptap_lang::checked::{ExprKind, GlobalShape, ScalarType, StmtKind, Type, ValueType};
use ptap_lang::{frontend, CheckedScript, Failure, Options};

fn ok(src: &str) -> CheckedScript {
    match frontend("t.pt", src, &Options::default()) {
        Ok(c) => c,
        Err(f) => panic!("expected success:\n{}", f.render()),
    }
}

fn fail(src: &str) -> Failure {
    match frontend("t.pt", src, &Options::default()) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(f) => f,
    }
}

/// Line numbers (1-based) of the primary and secondary labels of the first diagnostic.
fn label_lines(f: &Failure) -> (Vec<usize>, Vec<usize>) {
    let d = &f.diagnostics[0];
    let text = f.sources.text(ptap_lang::FileId(0));
    let line = |off: usize| text[..off].matches('\n').count() + 1;
    let mut p = Vec::new();
    let mut s = Vec::new();
    for l in &d.labels {
        match l.style {
            LabelStyle::Primary => p.push(line(l.range.start)),
            LabelStyle::Secondary => s.push(line(l.range.start)),
        }
    }
    (p, s)
}

#[test]
fn long_then_string_points_at_both_places() {
    let f = fail("probe begin {\n  x = 1\n  x = \"s\"\n}\n");
    assert_eq!(f.diagnostics.len(), 1, "{}", f.render());
    assert!(
        f.diagnostics[0].message.contains("type conflict"),
        "{}",
        f.render()
    );
    assert_eq!(label_lines(&f), (vec![3], vec![2]));
}

#[test]
fn string_then_long_through_a_global_in_another_probe() {
    let f = fail("global g\nprobe begin { g = \"a\" }\nprobe end { g += 1 }\n");
    assert_eq!(label_lines(&f), (vec![3], vec![2]), "{}", f.render());
}

#[test]
fn array_key_arity_mismatch() {
    let f = fail("global a\nprobe begin { a[1] = 1 }\nprobe end { print(a[1, 2]) }\n");
    assert!(
        f.diagnostics[0]
            .message
            .contains("2 key(s) here but with 1"),
        "{}",
        f.render()
    );
    assert_eq!(label_lines(&f), (vec![3], vec![2]));
}

#[test]
fn array_key_type_mismatch() {
    let f = fail("global a\nprobe begin { a[\"k\", 1] = 1 }\nprobe end { a[\"k\", \"j\"] = 2 }\n");
    assert!(
        f.diagnostics[0].message.contains("key 2 of `a`"),
        "{}",
        f.render()
    );
}

#[test]
fn statistics_used_as_a_scalar() {
    let f = fail("global s\nprobe begin { s <<< 1; x = s + 1 }\n");
    assert!(
        f.render().contains("statistics `s` used as a scalar value"),
        "{}",
        f.render()
    );
    let f = fail("global s\nprobe begin { s <<< 1 }\nprobe end { s = 2 }\n");
    assert!(f.render().contains("statistics"), "{}", f.render());
}

#[test]
fn statistics_in_arrays_and_extractors() {
    let c = ok("global s\nprobe begin { s[\"a\"] <<< 3 }\nprobe end { print(@avg(s[\"a\"])) }\n");
    assert_eq!(
        c.globals[0].shape,
        GlobalShape::Array {
            keys: vec![ScalarType::String],
            value: ValueType::Stats
        }
    );
}

#[test]
fn recursion_infers_through_itself() {
    let c = ok("function fact(n) { if (n <= 1) return 1; return n * fact(n - 1) }\nprobe begin { print(fact(5)) }\n");
    assert_eq!(c.functions[0].ret, Type::Long);
    assert_eq!(c.functions[0].locals[0].ty, ScalarType::Long);
    // Type known only from the recursive call's use as a string.
    let c = ok("function f(n) { if (n) return f(n - 1) . \"x\"; return \"\" }\nprobe begin { print(f(3)) }\n");
    assert_eq!(c.functions[0].ret, Type::String);
}

#[test]
fn recursion_with_conflicting_returns_is_an_error() {
    let f = fail(
        "function f(n) { if (n) return f(n - 1) + 1; return \"s\" }\nprobe begin { print(f(3)) }\n",
    );
    assert!(f.render().contains("type conflict"), "{}", f.render());
}

#[test]
fn parameter_typed_by_a_call_written_later() {
    let c = ok("function show(v) { print(v) }\nprobe end { show(\"text\") }\n");
    assert_eq!(c.functions[0].locals[0].ty, ScalarType::String);
    assert_eq!(c.functions[0].ret, Type::Void);
}

#[test]
fn every_expression_has_its_type_and_resolution() {
    let c = ok("global m\nprobe kprobe(work) { m[execname()] = arg1; x = m[\"a\"] + 1 }\n");
    let body = &c.probes[0].body;
    let StmtKind::Expr(e) = &body[1].kind else {
        panic!()
    };
    let ExprKind::Assign { value, .. } = &e.kind else {
        panic!()
    };
    assert_eq!(value.ty, Type::Long);
    let ExprKind::Binary { lhs, .. } = &value.kind else {
        panic!()
    };
    assert!(matches!(lhs.kind, ExprKind::Element { global: 0, .. }));
    assert_eq!(lhs.ty, Type::Long);
}

#[test]
fn one_liner_equals_the_block_form() {
    let one =
        ptap_lang::render_p1("a", "probe kretprobe(sys_open) < if ret<0 print(ret) >").unwrap();
    let block =
        ptap_lang::render_p1("b", "probe kretprobe(sys_open) { if (ret < 0) print(ret) }").unwrap();
    assert_eq!(one.replace(" /* one-liner */", ""), block);
    let one = ptap_lang::render_p2(
        "a",
        "probe kretprobe(sys_open) < if ret<0 print(ret) >",
        &Options::default(),
    );
    let block = ptap_lang::render_p2(
        "b",
        "probe kretprobe(sys_open) { if (ret < 0) print(ret) }",
        &Options::default(),
    );
    assert_eq!(one, block);
}

#[test]
fn stdlib_diagnostics_and_functions_name_the_stdlib_file() {
    let c = ok("probe end { print(errno_str(2)) }");
    assert!(c.functions[0].from_stdlib);
    assert_eq!(
        c.sources.name(c.functions[0].span.file),
        "stdlib-scripts/errno.pt"
    );
    let f = fail("probe end { print(errno_str(\"x\")) }");
    assert!(
        f.render().contains("stdlib-scripts/errno.pt"),
        "{}",
        f.render()
    );
}
