//! What the help and the docs show a newcomer exists: every repository path
//! that `ptap --help` or README.md names is a file of the repository (a
//! `tests/targets/NAME` or `examples/modules/NAME.so` program counts when its
//! source is there), every tool in examples/ compiles (`-p2`), and the
//! completion and manual page generators work.
mod support;

use std::path::Path;
use std::process::Command;

/// Words of `text` that name a path inside the repository.
fn repo_paths(text: &str) -> Vec<String> {
    let prefixes = ["examples/", "tests/", "docs/", "bench/", "runtime/include/"];
    text.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | ')' | ','))
        .filter(|w| prefixes.iter().any(|p| w.starts_with(p)))
        .map(|w| w.trim_end_matches(['.', ':', ';']).to_string())
        .filter(|w| !w.ends_with('/') && !w.contains('*'))
        .collect()
}

/// Files that tools write (named in the docs as their outputs).
const GENERATED: &[&str] = &["bench/results.json"];

fn exists(root: &Path, rel: &str) -> bool {
    if GENERATED.contains(&rel) {
        return true;
    }
    let p = root.join(rel);
    if p.exists() {
        return true;
    }
    // Built programs: their sources are what the repository holds.
    let base = rel.trim_end_matches(".so");
    ["c", "cpp"]
        .iter()
        .any(|ext| root.join(format!("{base}.{ext}")).exists())
}

fn missing_in(root: &Path, text: &str) -> Vec<String> {
    repo_paths(text)
        .into_iter()
        .filter(|w| !exists(root, w))
        .collect()
}

/// Words of `text` (in the doc `doc`) that lead out of the repository: a
/// `../` path that exists neither beside the doc nor inside one of the
/// repository's folders (`cd fuzz && ... ../tests`), or this checkout's own
/// absolute path (a path of the machine the doc was written on).
fn outside_paths(root: &Path, doc: &Path, text: &str) -> Vec<String> {
    let here = doc.parent().unwrap_or(root);
    let me = root.canonicalize().unwrap_or(root.to_path_buf());
    let me = me.to_string_lossy();
    text.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | ')' | ','))
        .filter(|w| {
            if w.starts_with(me.as_ref()) {
                return true;
            }
            if !w.starts_with("../") {
                return false;
            }
            let w = w.trim_end_matches(['.', ':', ';']);
            let beside = here.join(w);
            let inside = std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join(w).exists());
            !(inside || beside.exists() && beside.canonicalize().is_ok_and(|p| p.starts_with(&*me)))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn help_names_only_files_that_exist() {
    let out = Command::new(env!("CARGO_BIN_EXE_ptap"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("examples/"),
        "the help shows no example:\n{help}"
    );
    let missing = missing_in(&support::root(), &help);
    assert!(
        missing.is_empty(),
        "ptap --help names missing files: {missing:?}"
    );
}

#[test]
fn readme_and_docs_name_only_files_that_exist() {
    let root = support::root();
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        docs.push(e.unwrap().path());
    }
    for d in docs
        .iter()
        .filter(|d| d.extension().is_some_and(|x| x == "md"))
    {
        let text = std::fs::read_to_string(d).unwrap();
        let missing = missing_in(&root, &text);
        assert!(
            missing.is_empty(),
            "{} names missing files: {missing:?}",
            d.display()
        );
        let outside = outside_paths(&root, d, &text);
        assert!(
            outside.is_empty(),
            "{} points outside the repository: {outside:?}",
            d.display()
        );
    }
}

#[test]
fn every_example_tool_compiles() {
    let dir = support::root().join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "pt") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.lines().nth(1).is_some_and(|l| l.starts_with("# ")) && text.contains("# Run:"),
            "{}: a tool starts with a header comment saying what it does and how to run it",
            p.display()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_ptap"))
            .arg("-p2")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not compile:\n{}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 10, "only {n} tools in examples/");
}

#[test]
fn completions_and_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ptap"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "completions {shell} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("ptap") && text.contains("no-follow"),
            "{shell} completions lack ptap's options"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ptap"))
        .arg("man")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(".TH ptap 1"),
        "man: {text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_ptap"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
