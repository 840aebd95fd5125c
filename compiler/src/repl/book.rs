//! The REPL's language state: what the session has accepted (globals,
//! functions, probes, as the text typed), and the compilation of a new
//! entry against it.
//!
//! Each entry is checked together with every live entry (so that types
//! agree across the session) and compiled to a module of its own holding
//! only its probes; the session's globals keep their offsets, formats and
//! error locations their ids ([`SessionBase`]). A line that is not a
//! declaration (`n`, `c["x"]`, `print(n)`, `foreach ...`) is wrapped in a
//! `probe begin` that ptap runs at once: as `print(LINE)` if that checks,
//! else as a statement.

use ptap_compiler::codegen::{BaseGlobal, SessionBase};
use ptap_lang::ast::{Item, Script};
use ptap_lang::diag::ToDiagnostic;
use ptap_lang::lexer::{self, Tok};
use ptap_lang::{FileId, Options, Rejected, Sources};
use ptap_rt_core::script::meta::{Meta, MetaLoc, MetaProbe};

/// One accepted entry (declarations and probes as typed).
#[derive(Clone)]
pub struct Entry {
    /// How diagnostics name it (`<input 3>`, a loaded file's path).
    pub name: String,
    pub text: String,
    /// The module holding its probes (None: declarations only).
    pub module: Option<u32>,
    /// Kept for checking only (an evaluated expression, a deleted probe):
    /// the types and shapes it gave the globals stay the session's; never
    /// compiled again, never saved.
    pub ghost: bool,
}

/// What a typed chunk became.
pub enum Compiled {
    /// A module (probes, or declarations whose globals are now typed).
    Unit(Box<Unit>),
    /// Declarations that nothing types yet (`global n` before any use, a
    /// function): kept in the session text, laid out once a later entry
    /// uses them.
    Pending,
}

/// A compiled entry.
pub struct Unit {
    pub text: String,
    /// What was checked (an expression wrapped in `probe begin`).
    pub source: String,
    /// A bare expression or statement (run once, never saved).
    pub eval: bool,
    /// The probe module (its metadata lists every format of the session).
    pub object: Vec<u8>,
    pub meta: Meta,
    /// Globals the entry added (offsets in the area).
    pub new_globals: Vec<usize>,
}

impl Unit {
    /// Does the module probe the target (anything for the runtime)?
    pub fn in_target(&self) -> bool {
        self.meta
            .probes
            .iter()
            .flat_map(|p| &p.points)
            .any(|q| q.kind.in_target())
    }

    pub fn has_probes(&self) -> bool {
        !self.meta.probes.is_empty()
    }
}

/// The session's accepted entries and the compiler's running state.
pub struct Book {
    pub entries: Vec<Entry>,
    pub base: SessionBase,
    /// Every error location of the session, by id.
    pub locations: Vec<MetaLoc>,
    /// Every probe of the session, by session-wide number.
    pub probes: Vec<MetaProbe>,
    pub opts: Options,
    /// Every global laid out in the area, in the order they came (with the
    /// limits of the latest module: `maxstringlen` for reading strings).
    pub known: Meta,
    /// Bytes of the globals area the modules may use (from its start).
    pub area_size: u64,
    inputs: usize,
}

/// Does `text` start with a declaration (`global`, `probe`, `function`)?
fn is_declaration(text: &str) -> bool {
    let (toks, _) = lexer::lex(text, FileId(0));
    matches!(
        toks.first().map(|t| &t.1),
        Some(Tok::Global | Tok::Probe | Tok::Function)
    )
}

/// Are the brackets of `text` (braces, parentheses, brackets and the
/// one-liner `< >`) balanced, or is more input needed?
pub fn needs_more(text: &str) -> bool {
    let (toks, _) = lexer::lex(text, FileId(0));
    let mut depth: i64 = 0;
    for (_, t, _) in &toks {
        match t {
            Tok::LBrace | Tok::LParen | Tok::LBracket | Tok::OneOpen => depth += 1,
            Tok::RBrace | Tok::RParen | Tok::RBracket | Tok::OneClose => depth -= 1,
            _ => {}
        }
    }
    if depth > 0 {
        return true;
    }
    // A one-liner whose closing `>` has not come yet: the lexer marks the
    // opening `<` only once the body is closed, so look for `probe ... <`
    // without a one-liner body.
    let probes = toks.iter().filter(|t| t.1 == Tok::Probe).count();
    let bodies = toks
        .iter()
        .filter(|t| matches!(t.1, Tok::LBrace | Tok::OneOpen))
        .count();
    probes > bodies
}

impl Book {
    pub fn new(opts: Options, area_size: u64, globals_start: u64) -> Book {
        Book {
            entries: Vec::new(),
            base: SessionBase {
                globals_end: globals_start,
                ..SessionBase::default()
            },
            locations: Vec::new(),
            probes: Vec::new(),
            opts,
            known: Meta::default(),
            area_size,
            inputs: 0,
        }
    }

    /// The name the next typed chunk gets.
    pub fn next_name(&mut self) -> String {
        self.inputs += 1;
        format!("<input {}>", self.inputs)
    }

    /// Check `text` (named `name`) with the live entries, and compile it.
    /// Err: the rendered diagnostics.
    pub fn compile(
        &self,
        name: &str,
        text: &str,
        exe: Option<&std::path::Path>,
    ) -> Result<Compiled, Rejected> {
        if is_declaration(text) {
            return self.compile_as(name, text, text, false, exe);
        }
        // A bare expression prints its value; anything else runs as a statement.
        let t = text.trim();
        let as_print = format!("probe begin {{\nprint({t}\n)}}");
        if let Ok(u) = self.compile_as(name, text, &as_print, true, exe) {
            return Ok(u);
        }
        let as_stmt = format!("probe begin {{\n{t}\n}}");
        self.compile_as(name, text, &as_stmt, true, exe)
    }

    fn compile_as(
        &self,
        name: &str,
        typed: &str,
        source: &str,
        eval: bool,
        exe: Option<&std::path::Path>,
    ) -> Result<Compiled, Rejected> {
        // Earlier declarations nothing types yet are left out of this check.
        let mut untyped: Vec<String> = Vec::new();
        let (mut checked, file) = loop {
            let mut sources = Sources::new();
            let mut items: Vec<Item> = Vec::new();
            for e in &self.entries {
                let f = sources.add(e.name.as_str(), e.text.as_str());
                // Accepted entries parsed before; a failure here is a bug.
                match ptap_lang::parse(&sources, f) {
                    Ok(s) => items.extend(s.items.into_iter().filter(
                        |it| !matches!(it, Item::Global(g) if untyped.contains(&g.name.name)),
                    )),
                    Err(d) => return Err(Rejected(ptap_lang::diag::render(&sources, &d))),
                }
            }
            let file = sources.add(name, source);
            match ptap_lang::parse(&sources, file) {
                Ok(s) => items.extend(s.items),
                Err(d) => return Err(Rejected(ptap_lang::diag::render(&sources, &d))),
            }
            let f = match ptap_lang::check(sources, Script { items }, &self.opts) {
                Ok(c) => break (c, file),
                Err(f) => f,
            };
            let in_entry = |d: &ptap_lang::Diagnostic| {
                d.labels.first().map(|l| l.file_id) == Some(file.0 as usize)
            };
            let earlier: Vec<String> = f
                .diagnostics
                .iter()
                .filter(|d| !in_entry(d))
                .filter_map(|d| untyped_global(&d.message))
                .filter(|n| !untyped.contains(n))
                .collect();
            if !earlier.is_empty() {
                untyped.extend(earlier);
                continue;
            }
            // Declarations alone, with nothing wrong but what later
            // entries settle: kept for them.
            let only_pending = !eval
                && f.diagnostics.iter().all(|d| {
                    d.message == "the script has no probes"
                        || (in_entry(d) && untyped_global(&d.message).is_some())
                });
            if only_pending && !has_probes(typed) {
                return Ok(Compiled::Pending);
            }
            return Err(Rejected(f.render()));
        };
        // This entry's probes only: the others are in their own modules.
        let full = checked.clone();
        checked.probes.retain(|p| p.span.file == file);
        let object =
            ptap_compiler::codegen::emit_object_in(&checked, exe, Some(&self.base), Some(&full))
                .map_err(|e| {
                    Rejected(ptap_lang::diag::render(
                        &checked.sources,
                        &[e.to_diagnostic()],
                    ))
                })?;
        let meta = ptap_rt_core::script::load::read_meta(&object)
            .map_err(|e| Rejected(format!("error: internal: {e}\n")))?;
        if meta.globals_size > self.area_size {
            return Err(Rejected(format!(
                "error: the session's globals area is full ({} of {} bytes would be used); start ptap with a larger PTAP_REPL_GLOBALS_MB\n",
                meta.globals_size, self.area_size
            )));
        }
        let new_globals = meta
            .globals
            .iter()
            .enumerate()
            .filter(|(_, g)| !self.base.globals.iter().any(|b| b.name == g.name))
            .map(|(i, _)| i)
            .collect();
        Ok(Compiled::Unit(Box::new(Unit {
            text: typed.to_string(),
            source: source.to_string(),
            eval,
            object,
            meta,
            new_globals,
        })))
    }

    /// Make `u`'s globals, formats, locations and probes the session's.
    /// Returns the session-wide number of its first probe.
    pub fn commit(&mut self, u: &Unit) -> u32 {
        let meta = &u.meta;
        // New globals were appended after the old end, in offset order.
        let mut new: Vec<&ptap_rt_core::script::meta::MetaGlobal> =
            u.new_globals.iter().map(|&i| &meta.globals[i]).collect();
        new.sort_by_key(|g| g.offset);
        for (k, g) in new.iter().enumerate() {
            let end = new.get(k + 1).map_or(meta.globals_size, |n| n.offset);
            self.base.globals.push(BaseGlobal {
                name: g.name.clone(),
                offset: g.offset,
                size: end - g.offset,
                kind: g.kind,
            });
        }
        self.base.globals_end = self.base.globals_end.max(meta.globals_size);
        self.known.limits = meta.limits.clone();
        self.known
            .globals
            .extend(u.new_globals.iter().map(|&i| meta.globals[i].clone()));
        self.base.formats = meta
            .formats
            .iter()
            .filter_map(|f| ptap_lang::printf::parse(f).ok())
            .collect();
        let known = self.locations.len();
        self.locations
            .extend(meta.locations.iter().skip(known).cloned());
        self.base.locations = self.locations.len() as u32;
        let first = self.probes.len() as u32;
        self.probes.extend(meta.probes.iter().cloned());
        first
    }

    /// Remove module `id`'s probes from its entry (its declarations stay;
    /// the probes stay as a ghost, for the types they gave).
    pub fn drop_probes(&mut self, id: u32) {
        let mut ghosts = Vec::new();
        for e in self.entries.iter_mut().filter(|e| e.module == Some(id)) {
            ghosts.push(Entry {
                name: e.name.clone(),
                text: items_of(&e.text, Keep::Probes, &[]),
                module: None,
                ghost: true,
            });
            e.text = declarations_of(&e.text);
            e.module = None;
        }
        self.entries.extend(ghosts);
        self.entries.retain(|e| !e.text.trim().is_empty());
    }

    /// Keep an evaluated expression's check text (see [`Entry::ghost`]).
    pub fn add_ghost(&mut self, name: &str, source: &str) {
        self.entries.push(Entry {
            name: name.to_string(),
            text: source.to_string(),
            module: None,
            ghost: true,
        });
    }

    /// The session as a script: every entry's text, in order; the probes
    /// of modules `off` says are disabled are left out, and so are the
    /// globals nothing in it types (the script would not check).
    pub fn script(&self, off: impl Fn(u32) -> bool) -> String {
        self.text_of(off, false)
    }

    /// Every entry checked together, the ghosts included (what the
    /// session's modules were compiled against): None if that does not
    /// check (it did when each entry was accepted).
    pub fn checked(&self) -> Option<ptap_lang::checked::CheckedScript> {
        let text = self.text_of(|_| false, true);
        ptap_lang::frontend("<session>", &text, &self.opts).ok()
    }

    fn text_of(&self, off: impl Fn(u32) -> bool, ghosts: bool) -> String {
        let mut untyped: Vec<String> = Vec::new();
        loop {
            let text = self.script_without(&off, &untyped, ghosts);
            let more: Vec<String> = match ptap_lang::frontend("<session>", &text, &self.opts) {
                Ok(_) => return text,
                Err(f) => f
                    .diagnostics
                    .iter()
                    .filter_map(|d| untyped_global(&d.message))
                    .filter(|n| !untyped.contains(n))
                    .collect(),
            };
            if more.is_empty() {
                return text;
            }
            untyped.extend(more);
        }
    }

    fn script_without(
        &self,
        off: &impl Fn(u32) -> bool,
        untyped: &[String],
        ghosts: bool,
    ) -> String {
        let mut out = String::new();
        for e in self.entries.iter().filter(|e| ghosts || !e.ghost) {
            let probes = !matches!(e.module, Some(id) if off(id));
            let text = if probes && untyped.is_empty() {
                e.text.clone()
            } else {
                let keep = if probes {
                    Keep::All
                } else {
                    Keep::Declarations
                };
                items_of(&e.text, keep, untyped)
            };
            let t = text.trim_end();
            if t.is_empty() {
                continue;
            }
            out.push_str(t);
            out.push('\n');
        }
        out
    }

    /// The metadata that renders every record of the session: all formats,
    /// locations and probes.
    pub fn render_meta(&self) -> Meta {
        Meta {
            formats: self.base.formats.iter().map(|f| f.to_source()).collect(),
            locations: self.locations.clone(),
            probes: self.probes.clone(),
            ..Meta::default()
        }
    }

    /// Names of the session's globals (completion).
    pub fn global_names(&self) -> Vec<String> {
        self.base.globals.iter().map(|g| g.name.clone()).collect()
    }

    /// Names of the session's functions (completion).
    pub fn function_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for e in self.entries.iter().filter(|e| !e.ghost) {
            let mut s = Sources::new();
            let f = s.add("", e.text.as_str());
            if let Ok(script) = ptap_lang::parse(&s, f) {
                for it in script.items {
                    if let Item::Function(fd) = it {
                        v.push(fd.name.name);
                    }
                }
            }
        }
        v
    }
}

/// `X` of "cannot infer the type of global `X`".
fn untyped_global(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("cannot infer the type of global `")?;
    Some(rest.strip_suffix('`')?.to_string())
}

/// Does `text` define a probe?
fn has_probes(text: &str) -> bool {
    let (toks, _) = lexer::lex(text, FileId(0));
    toks.iter().any(|t| t.1 == Tok::Probe)
}

/// The global and function declarations of `text` (its probes removed).
fn declarations_of(text: &str) -> String {
    items_of(text, Keep::Declarations, &[])
}

/// Which items [`items_of`] keeps.
#[derive(PartialEq, Clone, Copy)]
enum Keep {
    All,
    Declarations,
    Probes,
}

/// The items of `text` that `keep` says, each on its own line; globals
/// but those named in `skip`.
fn items_of(text: &str, keep: Keep, skip: &[String]) -> String {
    let mut s = Sources::new();
    let f = s.add("", text);
    let Ok(script) = ptap_lang::parse(&s, f) else {
        return String::new();
    };
    let mut out = String::new();
    for it in &script.items {
        let (kw, span) = match it {
            _ if keep == Keep::Probes && !matches!(it, Item::Probe(_)) => continue,
            Item::Global(g) if skip.contains(&g.name.name) => continue,
            Item::Global(g) => ("global ", g.span),
            Item::Function(fd) => ("", fd.span),
            Item::Probe(p) if keep != Keep::Declarations => ("", p.span),
            Item::Probe(_) => continue,
        };
        out.push_str(kw);
        out.push_str(text.get(span.range()).unwrap_or(""));
        out.push('\n');
    }
    out
}
