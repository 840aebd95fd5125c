//! ptap-lang: the front end of the ptap language (lexer, parser, checker, diagnostics).
