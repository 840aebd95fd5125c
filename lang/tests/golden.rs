//! Golden tests, auto-discovered:
//!
//! * `tests/lang/ok/NAME.pt` must elaborate; its `-p2` text must equal
//!   `NAME.p2` (and its `-p1` text `NAME.p1`, when that file exists);
//! * `tests/lang/err/NAME.pt` must fail; its rendered diagnostics must equal
//!   `NAME.stderr`.
//!
//! A script may start with directive comments: `# ptap-args: A B` (script
//! arguments), `# ptap-define: NAME=VAL`, `# ptap-guru`.
//! `PTAP_BLESS=1 cargo test -p ptap-lang --test golden` writes the expected
//! files; read every one you write before committing it.
use std::path::{Path, PathBuf};

use ptap_lang::Options;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lang")
}

fn options(text: &str) -> Options {
    let mut o = Options::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(a) = line.strip_prefix("# ptap-args:") {
            o.args = a.split_whitespace().map(str::to_string).collect();
        } else if let Some(d) = line.strip_prefix("# ptap-define:") {
            o.defines.push(d.trim().to_string());
        } else if line.trim() == "# ptap-guru" {
            o.guru = true;
        }
    }
    o
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list tests/lang/{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pt"))
        .collect();
    v.sort();
    v
}

/// Compares (or, when blessing, writes) one expected file.
fn compare(expected_path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("PTAP_BLESS").is_some() {
        std::fs::write(expected_path, actual).expect("write expected file");
        return;
    }
    match std::fs::read_to_string(expected_path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{}: output differs\n--- expected\n{expected}--- actual\n{actual}",
            expected_path.display()
        )),
        Err(_) => failures.push(format!(
            "{}: missing (actual output:)\n{actual}",
            expected_path.display()
        )),
    }
}

fn run(dir: &str, want_ok: bool) -> usize {
    let mut failures = Vec::new();
    let list = cases(dir);
    for path in &list {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let shown = format!("tests/lang/{dir}/{name}");
        let result = ptap_lang::render_p2(&shown, &text, &options(&text));
        match (result, want_ok) {
            (Ok(p2), true) => {
                compare(&path.with_extension("p2"), &p2, &mut failures);
                let p1_path = path.with_extension("p1");
                if p1_path.exists() {
                    let p1 = ptap_lang::render_p1(&shown, &text).unwrap_or_else(|e| e.0);
                    compare(&p1_path, &p1, &mut failures);
                }
            }
            (Err(diags), false) => compare(&path.with_extension("stderr"), &diags.0, &mut failures),
            (Ok(p2), false) => failures.push(format!(
                "{shown}: expected errors, but it elaborated:\n{p2}"
            )),
            (Err(diags), true) => {
                failures.push(format!("{shown}: expected success, got:\n{diags}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
    list.len()
}

#[test]
fn ok_cases_elaborate() {
    let n = run("ok", true);
    assert!(n >= 30, "only {n} ok cases");
}

#[test]
fn err_cases_fail_with_exact_diagnostics() {
    let n = run("err", false);
    assert!(n >= 30, "only {n} err cases");
}
