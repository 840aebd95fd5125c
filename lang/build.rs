//! Generates the LALR(1) parser from src/parser/grammar.lalrpop.
//! lalrpop fails the build on any conflict, so a clean build proves the grammar is conflict-free.
fn main() {
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .emit_rerun_directives(true)
        .process()
        .expect("lalrpop failed to generate the parser");
}
