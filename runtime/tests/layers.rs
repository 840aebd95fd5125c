//! The runtime's layers point one way (ARCHITECTURE.md, "Inside the
//! runtime"): a file may use its own layer and the layers below it, never
//! one above it nor a sibling. Above all, nothing in `hit/` (code that runs in
//! a trap, a trampoline or a SIGSYS handler) uses the control side
//! (`kprobes/`, `syscall/`, `script/`) or anything above it.
//!
//! Two crates: the core (runtime/src, `ptap_rt_core`, linked by ptap too)
//! and the shared object's crate on top of it (runtime/so/src, `ptap_rt`:
//! the constructor and the exported C symbols). The core never names the
//! shared object's crate.
//!
//! Read from the source: every `crate::...` path outside comments and string
//! literals.

use std::path::{Path, PathBuf};

/// A crate's layers from the top down; a layer may use those after it (and
/// itself). Layers on one line are siblings: neither uses the other.
struct Layers {
    /// The source folder, from runtime/ (for messages).
    src: &'static str,
    layers: &'static [&'static [&'static str]],
    /// Crate-root modules that are files of a layer (not folders).
    root_files: &'static [(&'static str, &'static str)],
}

/// runtime/src: ptap-rt-core.
const CORE: Layers = Layers {
    src: "runtime/src",
    layers: &[
        &["lifecycle"],
        &["script"],
        &["syscall"],
        &["kprobes"],
        &["hit"],
        &["session", "proc"],
        &["base"],
    ],
    root_files: &[("fmt", "base"), ("abi", "base")],
};

/// runtime/so/src: libptap_rt.so (all of the core is below it).
const SO: Layers = Layers {
    src: "runtime/so/src",
    layers: &[&["lifecycle"], &["api"]],
    root_files: &[],
};

impl Layers {
    fn rank(&self, layer: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.contains(&layer))
    }

    /// The layer of a top-level module name (`hit`, `fmt`, ...).
    fn layer_of_module(&self, m: &str) -> Option<&'static str> {
        if let Some((_, l)) = self.root_files.iter().find(|(f, _)| *f == m) {
            return Some(l);
        }
        self.layers
            .iter()
            .flat_map(|l| l.iter())
            .copied()
            .find(|l| *l == m)
    }
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

/// The layer a file of the crate belongs to (by its path), or None for the
/// crate root.
fn layer_of_file(c: &Layers, rel: &Path) -> Result<Option<&'static str>, String> {
    let first = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    if first == "lib.rs" {
        return Ok(None);
    }
    let m = first.strip_suffix(".rs").unwrap_or(first);
    c.layer_of_module(m).map(Some).ok_or_else(|| {
        format!(
            "{}/{}: not in any layer; put it in a layer's folder or add it to \
             the crate's layers in runtime/tests/layers.rs",
            c.src,
            rel.display()
        )
    })
}

/// Every way `src` (the text of `rel` in the crate `c`) breaks the layering.
fn violations(c: &Layers, rel: &Path, src: &str) -> Vec<String> {
    let code = code_only(src);
    let mut out = Vec::new();
    if c.src == CORE.src && names_crate(&code, "ptap_rt") {
        out.push(format!(
            "{}/{}: the core names ptap_rt (libptap_rt.so's crate, which is above it)",
            c.src,
            rel.display()
        ));
    }
    let from = match layer_of_file(c, rel) {
        Ok(Some(l)) => l,
        Ok(None) => return out,
        Err(e) => {
            out.push(e);
            return out;
        }
    };
    for (line, m) in crate_uses(&code) {
        let Some(to) = c.layer_of_module(&m) else {
            out.push(format!(
                "{}/{}:{line}: crate::{m} is in no layer",
                c.src,
                rel.display()
            ));
            continue;
        };
        if to == from {
            continue;
        }
        let (rf, rt) = (c.rank(from).unwrap(), c.rank(to).unwrap());
        if rf >= rt {
            let how = if rf == rt {
                "a sibling layer"
            } else {
                "a layer above it"
            };
            out.push(format!(
                "{}/{}:{line}: {from} uses crate::{m} ({to}: {how})",
                c.src,
                rel.display()
            ));
        }
    }
    out
}

/// True when `code` names the crate `name` as a path (`name::...`).
fn names_crate(code: &str, name: &str) -> bool {
    let pat = format!("{name}::");
    code.match_indices(&pat).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("the crate's source folder is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn check(c: &Layers, min_files: usize) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = root.join(c.src);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() >= min_files,
        "{} has {} files?",
        c.src,
        files.len()
    );
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        bad.extend(violations(c, rel, &text));
    }
    bad
}

#[test]
fn runtime_layers_point_one_way() {
    let mut bad = check(&CORE, 20);
    bad.extend(check(&SO, 5));
    assert!(
        bad.is_empty(),
        "the runtime's layers must point one way (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

/// The core is a dependency of the shared object's crate, never the reverse.
#[test]
fn the_core_does_not_depend_on_the_shared_object() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("runtime/Cargo.toml");
    assert!(
        !manifest.contains("ptap-runtime"),
        "runtime/Cargo.toml (ptap-rt-core) must not depend on ptap-runtime (runtime/so/)"
    );
}

/// The check itself: it sees a use upward, a grouped use, and a sibling, and
/// it does not read comments or strings.
#[test]
fn the_layer_check_sees_what_it_must() {
    let hit = Path::new("hit/int3.rs");
    assert_eq!(
        violations(&CORE, hit, "use crate::kprobes::register::VERBOSE;\n").len(),
        1
    );
    assert_eq!(
        violations(&CORE, hit, "use crate::{base::sys, script::ctx};\n").len(),
        1
    );
    assert_eq!(
        violations(
            &CORE,
            Path::new("proc/symbols.rs"),
            "let s = crate::session::output::diag;\n"
        )
        .len(),
        1
    );
    assert!(violations(
        &CORE,
        hit,
        "// see crate::kprobes::optimize\nlet s = \"crate::api\";\n"
    )
    .is_empty());
    assert!(violations(
        &CORE,
        hit,
        "use crate::hit::site;\nuse crate::base::sys;\nuse crate::fmt::Buf;\n"
    )
    .is_empty());
    assert!(violations(
        &CORE,
        Path::new("kprobes/x.rs"),
        "crate::hit::site::lookup(a);\n"
    )
    .is_empty());
    assert_eq!(violations(&CORE, Path::new("extra.rs"), "").len(), 1);
    // The core never names the shared object's crate; that crate uses all
    // of the core, and its api/ is below its lifecycle.
    assert_eq!(
        violations(&CORE, hit, "ptap_rt::lifecycle::shutdown();\n").len(),
        1
    );
    assert!(violations(&CORE, hit, "use ptap_rt_core::x;\n").is_empty());
    let api = Path::new("api/kprobes.rs");
    assert!(violations(&SO, api, "use ptap_rt_core::script::attach;\n").is_empty());
    assert_eq!(
        violations(&SO, api, "crate::lifecycle::shutdown();\n").len(),
        1
    );
    assert!(violations(
        &SO,
        Path::new("lifecycle.rs"),
        "crate::api::signals::prime();\n"
    )
    .is_empty());
}
