//! Helper imports: the compiler side of the runtime's one helper table
//! (`ptap_rt_core::script::helper_table::HELPERS`). Each helper becomes an imported
//! function of the module with the table's name and an all-i64 signature.

use cranelift_codegen::ir::{types::I64, AbiParam};
use cranelift_module::{FuncId, Linkage, Module};
use ptap_rt_core::script::helper_table::{Helper, HELPERS};

use super::CodegenError;

/// FuncIds of every helper, indexed by `Helper as usize`.
pub(crate) struct HelperIds(Vec<FuncId>);

impl HelperIds {
    pub(crate) fn declare<M: Module>(module: &mut M) -> Result<HelperIds, CodegenError> {
        let mut ids = Vec::with_capacity(HELPERS.len());
        for h in HELPERS {
            let mut sig = module.make_signature();
            sig.params
                .extend(h.params.iter().map(|_| AbiParam::new(I64)));
            if h.ret {
                sig.returns.push(AbiParam::new(I64));
            }
            ids.push(module.declare_function(h.name, Linkage::Import, &sig)?);
        }
        Ok(HelperIds(ids))
    }

    pub(crate) fn get(&self, h: Helper) -> FuncId {
        self.0[h as usize]
    }
}
