//! The runtime's layers point one way (ARCHITECTURE.md, "Inside the
//! runtime"): a file may use its own layer and the layers below it, never
//! one above it nor a sibling. Above all, nothing in `hit/` (code that runs in
//! a trap, a trampoline or a SIGSYS handler) uses the control side
//! (`kprobes/`, `syscall/`, `script/`) or anything above it.
//!
//! Read from the source: every `crate::...` path in runtime/src outside
//! comments and string literals.

use std::path::{Path, PathBuf};

/// Layers from the top down; a layer may use those after it (and itself).
/// Layers on one line are siblings: neither uses the other.
const LAYERS: &[&[&str]] = &[
    &["lifecycle"],
    &["api"],
    &["script"],
    &["syscall"],
    &["kprobes"],
    &["hit"],
    &["session", "proc"],
    &["base"],
];

/// Crate-root modules that are files of a layer (not folders).
const ROOT_FILES: &[(&str, &str)] = &[("fmt", "base"), ("abi", "base")];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&layer))
}

/// The layer of a top-level module name (`hit`, `fmt`, ...).
fn layer_of_module(m: &str) -> Option<&'static str> {
    if let Some((_, l)) = ROOT_FILES.iter().find(|(f, _)| *f == m) {
        return Some(l);
    }
    LAYERS
        .iter()
        .flat_map(|l| l.iter())
        .copied()
        .find(|l| *l == m)
}

/// Code without comments and without the contents of string and char
/// literals (so that a `crate::` in prose is not read as a use).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                // a char literal ('x' or '\n'); lifetimes have no closing quote
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The top-level modules a file's code names through `crate::` (with the
/// line of each use), including each item of `use crate::{a, b::c}`.
fn crate_uses(code: &str) -> Vec<(usize, String)> {
    let mut v = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // e.g. `ptap_rt_crate::`, `$crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let m = item.trim().split("::").next().unwrap_or("").trim();
                    if !m.is_empty() {
                        v.push((n + 1, m.to_string()));
                    }
                }
                continue;
            }
            let m: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !m.is_empty() {
                v.push((n + 1, m));
            }
        }
    }
    v
}

/// The layer a file of runtime/src belongs to (by its path), or None for the
/// crate root.
fn layer_of_file(rel: &Path) -> Result<Option<&'static str>, String> {
    let first = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    if first == "lib.rs" {
        return Ok(None);
    }
    let m = first.strip_suffix(".rs").unwrap_or(first);
    layer_of_module(m).map(Some).ok_or_else(|| {
        format!(
            "runtime/src/{}: not in any layer; put it in a layer's folder or add it to \
             LAYERS / ROOT_FILES in runtime/tests/layers.rs",
            rel.display()
        )
    })
}

/// Every way `src` (the text of runtime/src/`rel`) breaks the layering.
fn violations(rel: &Path, src: &str) -> Vec<String> {
    let from = match layer_of_file(rel) {
        Ok(Some(l)) => l,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    for (line, m) in crate_uses(&code_only(src)) {
        let Some(to) = layer_of_module(&m) else {
            out.push(format!(
                "runtime/src/{}:{line}: crate::{m} is in no layer",
                rel.display()
            ));
            continue;
        };
        if to == from {
            continue;
        }
        let (rf, rt) = (rank(from).unwrap(), rank(to).unwrap());
        if rf >= rt {
            let how = if rf == rt {
                "a sibling layer"
            } else {
                "a layer above it"
            };
            out.push(format!(
                "runtime/src/{}:{line}: {from} uses crate::{m} ({to}: {how})",
                rel.display()
            ));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("runtime/src is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn runtime_layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "runtime/src has {} files?", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        bad.extend(violations(rel, &text));
    }
    assert!(
        bad.is_empty(),
        "the runtime's layers must point one way (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

/// The check itself: it sees a use upward, a grouped use, and a sibling, and
/// it does not read comments or strings.
#[test]
fn the_layer_check_sees_what_it_must() {
    let hit = Path::new("hit/int3.rs");
    assert_eq!(
        violations(hit, "use crate::kprobes::register::VERBOSE;\n").len(),
        1
    );
    assert_eq!(
        violations(hit, "use crate::{base::sys, script::ctx};\n").len(),
        1
    );
    assert_eq!(
        violations(
            Path::new("proc/symbols.rs"),
            "let s = crate::session::output::diag;\n"
        )
        .len(),
        1
    );
    assert!(violations(
        hit,
        "// see crate::kprobes::optimize\nlet s = \"crate::api\";\n"
    )
    .is_empty());
    assert!(violations(
        hit,
        "use crate::hit::site;\nuse crate::base::sys;\nuse crate::fmt::Buf;\n"
    )
    .is_empty());
    assert!(violations(Path::new("kprobes/x.rs"), "crate::hit::site::lookup(a);\n").is_empty());
    assert_eq!(violations(Path::new("extra.rs"), "").len(), 1);
}
