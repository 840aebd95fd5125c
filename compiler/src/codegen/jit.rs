//! Compiled handlers in ptap's own process (begin/end/timer probes, tests):
//! the same translator over a `JITModule`, with the helpers bound to the
//! runtime's table linked into ptap.

use cranelift_jit::{JITBuilder, JITModule};
use ptap_lang::checked::CheckedScript;
use ptap_rt_core::script::ctx::Handler;
use ptap_rt_core::script::helper_table;

use super::{compile_for, host_isa, CodegenError, CompiledModule};

pub struct Jit {
    module: Option<JITModule>,
    pub compiled: CompiledModule,
    handlers: Vec<Handler>,
    entry_handlers: Vec<Option<Handler>>,
}

impl Jit {
    pub fn new(script: &CheckedScript) -> Result<Jit, CodegenError> {
        Jit::new_for(script, None)
    }

    /// [`Jit::new`] with `$name` resolved in `exe`'s DWARF.
    pub fn new_for(
        script: &CheckedScript,
        exe: Option<&std::path::Path>,
    ) -> Result<Jit, CodegenError> {
        let mut b = JITBuilder::with_isa(host_isa()?, cranelift_module::default_libcall_names());
        for (name, addr) in helper_table::symbols() {
            b.symbol(name, addr as *const u8);
        }
        let mut module = JITModule::new(b);
        let compiled = compile_for(script, &mut module, exe)?;
        module.finalize_definitions()?;
        let as_handler = |p: *const u8| {
            // SAFETY: every handler is defined with the signature
            // `extern "C" fn(*mut ProbeCtx) -> i64` (see codegen/mod.rs).
            unsafe { core::mem::transmute::<*const u8, Handler>(p) }
        };
        let handlers = compiled
            .handlers
            .iter()
            .map(|&id| as_handler(module.get_finalized_function(id)))
            .collect();
        let entry_handlers = compiled
            .entry_handlers
            .iter()
            .map(|id| id.map(|id| as_handler(module.get_finalized_function(id))))
            .collect();
        Ok(Jit {
            module: Some(module),
            compiled,
            handlers,
            entry_handlers,
        })
    }

    /// Probe `i`'s handler (valid while `self` lives).
    pub fn handler(&self, i: usize) -> Option<Handler> {
        self.handlers.get(i).copied()
    }

    /// Probe `i`'s `@entry` handler (valid while `self` lives).
    pub fn entry_handler(&self, i: usize) -> Option<Handler> {
        self.entry_handlers.get(i).copied().flatten()
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the handlers' code is freed with the module; callers
            // only use handler pointers while the Jit lives (documented above).
            unsafe { m.free_memory() };
        }
    }
}
