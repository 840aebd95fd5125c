//! ptap-compiler: lowers checked scripts to native probe handlers with
//! Cranelift ([`codegen`]), writes probe modules ([`emit_object`]), prints
//! their IR ([`ir_text`], `ptap -p3`) and formats the output records the
//! handlers write ([`output`]). The `ptap` binary's driver uses these.

pub mod codegen;
pub mod metrics;
pub mod output;

pub use codegen::jit::Jit;
pub use codegen::{
    compile, compile_for, emit_object, emit_object_for, ir_text, ir_text_for, CodegenError,
    CompiledModule,
};
