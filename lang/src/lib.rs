//! ptap-lang: the front end of the ptap language.
//!
//! Passes: [`parse`] (lexer + LALR(1) parser, -p1) and [`check`] (name
//! resolution, type inference, probe contexts, formats, -p2). [`frontend`]
//! runs both. The result, a [`CheckedScript`], is what the compiler lowers.
pub mod alias;
pub mod ast;
pub mod builtins;
pub mod check;
pub mod checked;
pub mod diag;
pub mod lexer;
pub mod options;
pub mod parser;
pub mod points;
pub mod points_stap;
pub mod preprocess;
pub mod print;
pub mod printf;
pub mod sources;
pub mod span;
pub mod stdlib;
pub mod syscall_vars;
pub mod syscalls;
pub mod walk;

pub use checked::CheckedScript;
pub use diag::{Diagnostic, ToDiagnostic};
pub use options::{Limits, Options};
pub use sources::Sources;
pub use span::{FileId, Span};

/// A failed pass: the files involved (to render against) and what went wrong.
#[derive(Debug)]
pub struct Failure {
    pub sources: Sources,
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    /// The diagnostics as plain text, as ptap prints them.
    pub fn render(&self) -> String {
        diag::render(&self.sources, &self.diagnostics)
    }
}

/// Pass 1: parses one file of `sources` (conditionals `%( %? %: %)`
/// evaluated with default options: no script arguments, no guru mode).
pub fn parse(sources: &Sources, file: FileId) -> Result<ast::Script, Vec<Diagnostic>> {
    parse_with(sources, file, &Options::default())
}

/// Pass 1 with the session's options (script arguments for `$#`, `-g` for
/// `guru_mode` in conditionals).
pub fn parse_with(
    sources: &Sources,
    file: FileId,
    opts: &Options,
) -> Result<ast::Script, Vec<Diagnostic>> {
    let (text, macros) = preprocess::apply(sources.text(file), file, opts)?;
    parser::parse_file_with(&text, file, &macros)
        .map_err(|errs| errs.iter().map(ToDiagnostic::to_diagnostic).collect())
}

/// Pass 2: checks a parsed script. Stdlib files it needs are added to `sources`.
pub fn check(
    sources: Sources,
    script: ast::Script,
    opts: &Options,
) -> Result<CheckedScript, Failure> {
    check::check(sources, script, opts).map_err(|(sources, diagnostics)| Failure {
        sources,
        diagnostics,
    })
}

/// The whole front end: `name` is how diagnostics name the script
/// (a path, `<command line>` for -e, `<stdin>` for -).
pub fn frontend(name: &str, text: &str, opts: &Options) -> Result<CheckedScript, Failure> {
    let mut sources = Sources::new();
    let file = sources.add(name, text);
    let script = match parse_with(&sources, file, opts) {
        Ok(s) => s,
        Err(diagnostics) => {
            return Err(Failure {
                sources,
                diagnostics,
            })
        }
    };
    check(sources, script, opts)
}

/// A script that did not pass: its diagnostics, rendered as ptap prints
/// them.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// `ptap -p1`: the parse tree as text, or the rendered diagnostics.
pub fn render_p1(name: &str, text: &str) -> Result<String, Rejected> {
    let mut sources = Sources::new();
    let file = sources.add(name, text);
    match parse(&sources, file) {
        Ok(script) => Ok(print::p1::script(&script, &sources)),
        Err(d) => Err(Rejected(diag::render(&sources, &d))),
    }
}

/// `ptap -p2`: the elaborated script as text, or the rendered diagnostics.
pub fn render_p2(name: &str, text: &str, opts: &Options) -> Result<String, Rejected> {
    match frontend(name, text, opts) {
        Ok(checked) => Ok(print::p2::script(&checked)),
        Err(f) => Err(Rejected(f.render())),
    }
}
