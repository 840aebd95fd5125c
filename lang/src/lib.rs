//! ptap-lang: the front end of the ptap language (lexer, parser, checker, diagnostics).
pub mod ast;
pub mod lexer;
pub mod parser;
pub mod span;
pub mod syscalls;
