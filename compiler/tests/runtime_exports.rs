//! The runtime split: libptap_rt.so (runtime/so/, over ptap-rt-core)
//! exports every function its public headers declare, and its interposers;
//! ptap itself links only the core, so it carries neither the runtime's
//! constructor nor an interposed libc function.

use object::{Object, ObjectSymbol};
use regex::Regex;

/// Functions declared by runtime/include/ptap/*.h (not typedefs, not
/// `static inline` helpers).
fn header_functions() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/include/ptap");
    let decl = Regex::new(r"^[a-z][\w \t\*]*?[ \t\*](\w+)\s*\(").unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "h") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            if line.starts_with("typedef") || line.starts_with("static") {
                continue;
            }
            if let Some(c) = decl.captures(line) {
                out.push(c[1].to_string());
            }
        }
    }
    out.sort();
    out
}

/// Defined symbols of an ELF file: its dynamic ones, or all of them.
fn defined(path: &str, dynamic: bool) -> Vec<String> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let f = object::File::parse(&*data).unwrap();
    let syms: Vec<_> = if dynamic {
        f.dynamic_symbols().collect()
    } else {
        f.symbols().collect()
    };
    syms.into_iter()
        .filter(|s| s.is_definition())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect()
}

const INTERPOSED: &[&str] = &["sigaction", "signal", "sigprocmask", "pthread_sigmask"];

#[test]
fn the_runtime_exports_every_header_function_and_its_interposers() {
    let want = header_functions();
    assert!(
        want.len() >= 25 && want.iter().any(|f| f == "register_kprobe"),
        "header parse: {want:?}"
    );
    let so = defined(env!("PTAP_EMBEDDED_RT"), true);
    let missing: Vec<_> = want.iter().filter(|f| !so.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "not exported by libptap_rt.so: {missing:?}"
    );
    for f in INTERPOSED
        .iter()
        .chain(&["ptap_rt_attach", "ptap_script_attach"])
    {
        assert!(
            so.iter().any(|s| s == f),
            "libptap_rt.so does not export {f}"
        );
    }
}

#[test]
fn ptap_links_neither_the_constructor_nor_the_interposers() {
    let ptap = defined(env!("CARGO_BIN_EXE_ptap"), false);
    assert!(
        ptap.iter().any(|s| s.contains("session")),
        "ptap has no symbol table to check"
    );
    for f in INTERPOSED
        .iter()
        .chain(&["register_kprobe", "ptap_rt_attach"])
    {
        assert!(!ptap.iter().any(|s| s == f), "ptap defines {f}");
    }
    assert!(
        !ptap.iter().any(|s| s.contains("ptap_rt_ctor")),
        "ptap carries the runtime's constructor"
    );
}
