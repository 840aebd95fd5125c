//! Function names as users write them: the one matcher that ptap (point
//! resolution before the target starts, listings) and the runtime (in the
//! target) both use, so that a point means the same functions on both
//! sides. Pure code: no state, no unsafe; it allocates, so it is for
//! registration time, never for the hit path.
//!
//! - **Demangling.** C++ (Itanium ABI, `_Z...`) and Rust (legacy `_ZN...17h<hash>E`
//!   and v0 `_R...`) symbols are demangled with the `cpp_demangle` and
//!   `rustc-demangle` crates into the name a user writes: scopes and
//!   template arguments, without parameter list, return type or Rust hash
//!   (`_ZN2ns5Class6methodEi` is `ns::Class::method`,
//!   `_ZN3rs17compute17h308ee7d443610976E` is `rs1::compute`).
//! - **Exact names** ([`match_name`]): the symbol itself (the mangled name
//!   keeps working, `name@VERSION` too), else the demangled name, else a
//!   demangled name that ends with `::NAME` (`compute` finds
//!   `rs1::compute`; the caller refuses it when several scopes have one).
//!   A trailing template argument list may be left out (`ns::max` finds
//!   `ns::max<int>`). Overloads share a demangled name: all are selected.
//!   A C function GCC only left as a whole-function copy
//!   (`scale.constprop.0`) answers to its own name (`scale`).
//! - **Wildcards** ([`match_pattern`]): `*` and `?` against the symbol,
//!   its demangled name or one of its trailing scopes (`Parser::*` selects
//!   `Parser::parse` and `app::Parser::parse`; `comp*` selects
//!   `rs1::compute`).
//! - **Fragments** ([`fragment`]): GCC and LLVM put pieces of a function
//!   under names with a suffix after a dot. Wildcards and demangled names
//!   select function entries only:
//!   - `.cold`, `.cold.N` (GCC's and LLVM's hot/cold splitting): the
//!     unlikely blocks of a function, entered by a jump from its body and
//!     never called. Not selected; a kretprobe or jprobe there is refused
//!     (the word at the stack pointer is not a return address: a
//!     kretprobe would overwrite a local and break the function or its
//!     unwinding).
//!   - `.part.N` (GCC's partial inlining): the rest of a function whose
//!     head was inlined into its callers; it is called, but each call of
//!     the source function would be counted again (or only partly, the
//!     head having run inline). Not selected by wildcards; it can be named
//!     explicitly.
//!   - Whole-function copies are entries and are selected: `.isra.N` and
//!     `.constprop.N` (GCC's specialised clones, which callers call instead
//!     of the original), `.lto_priv.N`, `.llvm.N` (renamed by link-time
//!     optimisation), `.localalias` (another name of the same code).

/// What a symbol's suffix says about its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// A function entry (no suffix, or a whole-function copy).
    Entry,
    /// `.part.N`: the called tail of a partly inlined function.
    Part,
    /// `.cold[.N]`: entered by a jump, never called.
    Cold,
}

/// The name of an unmangled whole-function copy (`scale` of
/// `scale.constprop.0`); None for other symbols.
fn entry_clone_base(sym: &str) -> Option<&str> {
    let (name, suffix) = split_suffix(sym);
    let suffix = suffix?;
    let clone = suffix
        .split('.')
        .next()
        .is_some_and(|w| matches!(w, "isra" | "constprop" | "lto_priv" | "llvm" | "localalias"));
    (clone
        && fragment(sym) == Fragment::Entry
        && !name.starts_with("_Z")
        && !name.starts_with("_R"))
    .then_some(name)
}

/// The symbol without its version (`@GLIBC_2.2.5`).
fn unversioned(sym: &str) -> &str {
    sym.split('@').next().unwrap_or(sym)
}

/// (name, suffix after the first dot) of a symbol; a leading dot is part
/// of the name.
fn split_suffix(sym: &str) -> (&str, Option<&str>) {
    let sym = unversioned(sym);
    match sym.get(1..).and_then(|r| r.find('.')) {
        Some(i) => (&sym[..i + 1], Some(&sym[i + 2..])),
        None => (sym, None),
    }
}

/// Classify a symbol by its suffix (see the module documentation).
pub fn fragment(sym: &str) -> Fragment {
    let Some(suffix) = split_suffix(sym).1 else {
        return Fragment::Entry;
    };
    // Suffixes chain (`f.constprop.0.cold`, `f.isra.0.part.1`): the
    // last kind that is not an entry decides.
    if suffix.split('.').any(|w| w == "cold") {
        Fragment::Cold
    } else if suffix.split('.').any(|w| w == "part") {
        Fragment::Part
    } else {
        Fragment::Entry
    }
}

/// Is this a Rust symbol (legacy with its hash, or v0)?
fn is_rust(core: &str) -> bool {
    if core.starts_with("_R") {
        return true;
    }
    // Legacy: `_ZN` ... `17h` + 16 hex digits + `E`.
    let b = core.as_bytes();
    core.starts_with("_ZN")
        && b.len() > 20
        && b[b.len() - 1] == b'E'
        && &b[b.len() - 20..b.len() - 17] == b"17h"
        && b[b.len() - 17..b.len() - 1]
            .iter()
            .all(u8::is_ascii_hexdigit)
}

fn demangle_with(sym: &str, params: bool) -> Option<String> {
    // Suffixes and versions are only cut from the end: a name that does not
    // start like a mangled one is not (most names of a C library; checked
    // first because every symbol of a probed object passes here).
    if !(sym.starts_with("_Z") || sym.starts_with("_R")) {
        return None;
    }
    let (core, _) = split_suffix(sym);
    if !(core.starts_with("_Z") || core.starts_with("_R")) {
        return None;
    }
    if is_rust(core) {
        let d = rustc_demangle::try_demangle(core).ok()?;
        return Some(format!("{d:#}"));
    }
    let s = cpp_demangle::Symbol::new(core.as_bytes()).ok()?;
    let mut opts = cpp_demangle::DemangleOptions::new().no_return_type();
    if !params {
        opts = opts.no_params();
    }
    let d = s.demangle(&opts).ok()?;
    // A name that is not a function (a vtable, a guard variable) has no
    // name a user would probe; keep it as the demangler spells it.
    Some(d)
}

/// The name users write for a mangled function symbol (no parameters,
/// return type, hash or clone suffix); None if `sym` is not mangled or does
/// not demangle.
pub fn demangle(sym: &str) -> Option<String> {
    demangle_with(sym, false)
}

/// The demangled name with its parameter list (C++), to tell overloads
/// apart in listings.
pub fn demangle_full(sym: &str) -> Option<String> {
    demangle_with(sym, true)
}

/// `name` without whitespace (ptap writes points without it: `a<int, long>`
/// is matched as `a<int,long>`).
fn squeeze(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(char::is_whitespace) {
        name.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .into()
    } else {
        name.into()
    }
}

/// `name` without a trailing template argument list (`max<int>` -> `max`).
fn untemplated(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    if b.last() != Some(&b'>') {
        return None;
    }
    let mut depth = 0i32;
    for i in (0..b.len()).rev() {
        match b[i] {
            b'>' => depth += 1,
            b'<' => {
                depth -= 1;
                if depth == 0 {
                    return (i > 0).then(|| &name[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// How a symbol matched an exact name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameMatch {
    /// The symbol itself (or `name@VERSION`).
    Symbol,
    /// Its demangled name.
    Demangled,
    /// Its demangled name ends with `::NAME`.
    Scoped,
}

/// Does `sym` (demangled as `demangled`, if it is mangled) match the exact
/// name `query`? Fragments (`.cold`, `.part`) match only by their own symbol.
pub fn match_name(query: &str, sym: &str, demangled: Option<&str>) -> Option<NameMatch> {
    if sym == query || unversioned(sym) == query {
        return Some(NameMatch::Symbol);
    }
    let d = demangled?;
    if fragment(sym) != Fragment::Entry {
        return None;
    }
    let d = squeeze(d);
    let forms = [Some(&*d), untemplated(&d)];
    let mut best = None;
    for f in forms.into_iter().flatten() {
        if f == query {
            return Some(NameMatch::Demangled);
        }
        if f.len() > query.len() + 2
            && f.ends_with(query)
            && f[..f.len() - query.len()].ends_with("::")
        {
            best = Some(NameMatch::Scoped);
        }
    }
    best
}

/// Does the wildcard `pattern` select `sym` (demangled as `demangled`)?
/// Only function entries are selected (see [`fragment`]).
pub fn match_pattern(pattern: &str, sym: &str, demangled: Option<&str>) -> bool {
    if fragment(sym) != Fragment::Entry {
        return false;
    }
    glob(pattern.as_bytes(), sym.as_bytes())
        || demangled.is_some_and(|d| {
            let d = squeeze(d);
            let any = scopes(&d).any(|tail| glob(pattern.as_bytes(), tail.as_bytes()));
            any
        })
}

/// A demangled name and its trailing scopes: `a::b<c::d>::f`, `b<c::d>::f`,
/// `f` (only `::` outside template arguments and parentheses split).
fn scopes(d: &str) -> impl Iterator<Item = &str> {
    let b = d.as_bytes();
    let mut depth = 0i32;
    let mut cuts = vec![0usize];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' | b'(' | b'[' | b'{' => depth += 1,
            b'>' | b')' | b']' | b'}' => depth -= 1,
            b':' if depth == 0 && b.get(i + 1) == Some(&b':') => {
                cuts.push(i + 2);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    cuts.into_iter().map(move |c| &d[c..])
}

/// Could the mangled `sym` demangle to a name that `query` (a name or a
/// pattern) selects? A cheap test that avoids demangling every symbol of
/// a library for one point: both manglings spell identifiers out
/// (`<length><identifier>`), so the longest identifier of the query
/// (without wildcards) must appear in the symbol. Always true for
/// unmangled symbols and for queries without an identifier.
pub fn may_match(query: &str, sym: &str) -> bool {
    if !(sym.starts_with("_Z") || sym.starts_with("_R")) {
        return true;
    }
    let longest = query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty() && !w.starts_with("operator"))
        .max_by_key(|w| w.len());
    match longest {
        // `operator<<` is mangled `ls`; keywords (`unsigned`, `const`) are
        // abbreviated too: only words that are not C++ builtin type names.
        Some(w) if !BUILTIN_WORDS.contains(&w) && !w.starts_with("operator") => sym.contains(w),
        _ => true,
    }
}

/// Words of demangled names that manglings abbreviate.
const BUILTIN_WORDS: &[&str] = &[
    "void",
    "bool",
    "char",
    "short",
    "int",
    "long",
    "unsigned",
    "signed",
    "float",
    "double",
    "const",
    "volatile",
    "std",
    "wchar_t",
    "char8_t",
    "char16_t",
    "char32_t",
    "allocator",
    "basic_string",
    "basic_istream",
    "basic_ostream",
    "basic_iostream",
    "char_traits",
    "string",
    "istream",
    "ostream",
    "iostream",
];

/// A symbol of one object selected by a demangled name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Index of the symbol in the caller's list.
    pub index: usize,
    pub kind: NameMatch,
    /// Its demangled name.
    pub demangled: String,
}

/// The symbols of one object that the exact name `query` selects by their
/// demangled names (the caller tried the symbol names first): those of the
/// best kind of match (the demangled name itself, else `...::query`).
/// `syms` yields (index, symbol name).
pub fn select_demangled<'a>(query: &str, syms: impl Iterator<Item = (usize, &'a str)>) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    for (index, sym) in syms {
        if !may_match(query, sym) {
            continue;
        }
        // A whole-function copy of a C function (`scale.constprop.0`,
        // `f.isra.0`) answers to the function's name, as its DWARF does:
        // GCC may leave no symbol of the original.
        let Some(d) = demangle(sym).or_else(|| entry_clone_base(sym).map(str::to_string)) else {
            continue;
        };
        let Some(kind) = match_name(query, sym, Some(&d)) else {
            continue;
        };
        if kind == NameMatch::Symbol {
            continue;
        }
        if let Some(best) = hits.first() {
            if kind > best.kind {
                continue;
            }
            if kind < best.kind {
                hits.clear();
            }
        }
        hits.push(Hit {
            index,
            kind,
            demangled: d,
        });
    }
    hits
}

/// Several functions of different scopes end with `::query`: the message
/// that lists them (None when the hits are one function or its overloads).
pub fn ambiguity(query: &str, hits: &[Hit]) -> Option<String> {
    if hits.first()?.kind != NameMatch::Scoped {
        return None;
    }
    let mut names: Vec<&str> = hits.iter().map(|h| h.demangled.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < 2 {
        return None;
    }
    let shown = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    let more = if names.len() > 8 { ", ..." } else { "" };
    Some(format!(
        "is ambiguous: {} functions end with `::{query}` ({shown}{more}); write the full name",
        names.len()
    ))
}

/// Why a kretprobe or jprobe cannot sit on `sym`, if it is a fragment that
/// is entered by a jump.
pub fn entry_refusal(sym: &str, kind: &str) -> Option<String> {
    (fragment(sym) == Fragment::Cold).then(|| {
        format!(
            "is on `{sym}`, the cold part of a function (entered by a jump from its body, never called): a {kind} needs a function entry; probe the function itself, or use a kprobe"
        )
    })
}

/// `*` and `?` glob match (hand-written: a dozen lines, no crate needed).
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_cpp_and_rust() {
        assert_eq!(demangle("_Z6middlel").as_deref(), Some("middle"));
        assert_eq!(
            demangle("_ZN2ns5Class6methodEi").as_deref(),
            Some("ns::Class::method")
        );
        assert_eq!(
            demangle("_ZNK2ns5Class3getEv").as_deref(),
            Some("ns::Class::get")
        );
        assert_eq!(
            demangle("_ZN3rs17compute17h308ee7d443610976E").as_deref(),
            Some("rs1::compute")
        );
        assert_eq!(demangle("_Z7throwerl.cold").as_deref(), Some("thrower"));
        assert_eq!(demangle("main"), None);
        assert_eq!(
            demangle_full("_ZN2ns5Class6methodEi").as_deref(),
            Some("ns::Class::method(int)")
        );
        assert_eq!(demangle("_Z4tmaxIiET_S0_S0_").as_deref(), Some("tmax<int>"));
    }

    #[test]
    fn fragments() {
        assert_eq!(fragment("f"), Fragment::Entry);
        assert_eq!(fragment("f.cold"), Fragment::Cold);
        assert_eq!(fragment("_Z7throwerl.cold"), Fragment::Cold);
        assert_eq!(fragment("f.constprop.0.cold"), Fragment::Cold);
        assert_eq!(fragment("f.part.0"), Fragment::Part);
        assert_eq!(fragment("f.isra.0"), Fragment::Entry);
        assert_eq!(fragment("f.constprop.0"), Fragment::Entry);
        assert_eq!(fragment("memcpy@GLIBC_2.2.5"), Fragment::Entry);
        assert_eq!(fragment(".annobin_init.c"), Fragment::Entry);
    }

    #[test]
    fn names_and_patterns() {
        let d = Some("rs1::compute");
        let m = "_ZN3rs17compute17h308ee7d443610976E";
        assert_eq!(match_name("compute", m, d), Some(NameMatch::Scoped));
        assert_eq!(match_name("rs1::compute", m, d), Some(NameMatch::Demangled));
        assert_eq!(match_name(m, m, d), Some(NameMatch::Symbol));
        assert_eq!(match_name("pute", m, d), None);
        assert_eq!(
            match_name("thrower", "_Z7throwerl.cold", Some("thrower")),
            None
        );
        assert_eq!(
            match_name("tmax", "_Z4tmaxIiET_S0_S0_", Some("tmax<int>")),
            Some(NameMatch::Demangled)
        );
        assert!(match_pattern(
            "Parser::*",
            "_ZN6Parser5parseEv",
            Some("Parser::parse")
        ));
        assert!(match_pattern("*thrower*", "_Z7throwerl", Some("thrower")));
        assert!(!match_pattern(
            "*thrower*",
            "_Z7throwerl.cold",
            Some("thrower")
        ));
        assert!(!match_pattern("work*", "work.part.0", None));
        assert!(match_pattern(
            "rs2::*",
            "_ZN1x3rs23add17h0000000000000000E",
            Some("x::rs2::add")
        ));
        assert!(match_pattern(
            "comp*",
            "_ZN3rs17compute17h0000000000000000E",
            Some("rs1::compute")
        ));
        assert!(!match_pattern(
            "rs2::*",
            "_ZN1x3rs33add",
            Some("x::rs3::add")
        ));
        assert!(!match_pattern("b::*", "_Z1f", Some("a<b::c>::f")));
        assert!(match_pattern("work*", "work.isra.0", None));
        assert!(may_match("rs1::compute", m));
        assert!(!may_match("Parser::*", m));
        assert!(may_match("operator<<", "_ZlsRSoRK1X"));
    }

    #[test]
    fn c_clones_answer_to_their_function_name() {
        let hits = select_demangled(
            "scale",
            [(0, "scale.constprop.0"), (1, "scale.cold")].into_iter(),
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].index, 0);
        assert_eq!(hits[0].demangled, "scale");
        assert_eq!(entry_clone_base("f.part.0"), None);
        assert_eq!(entry_clone_base("_GLOBAL__sub_I_main.cpp"), None);
    }

    #[test]
    fn globbing() {
        assert!(glob(b"str*", b"strlen"));
        assert!(glob(b"*", b""));
        assert!(glob(b"ma?loc", b"malloc"));
        assert!(glob(b"*cpy*", b"__memcpy_avx"));
        assert!(!glob(b"str*", b"memcpy"));
        assert!(!glob(b"a?c", b"ac"));
    }
}
