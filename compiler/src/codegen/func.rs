//! The function translator: state shared by `expr.rs` and `stmt.rs`, and
//! the plumbing they use (locals, string buffers, helper calls, runtime
//! errors, the action budget).
//!
//! Shape of every lowered function: the entry block takes the parameters;
//! `exit` takes one block parameter, the i64 the function returns (0 for
//! handlers); `error_exit` returns after a runtime error has been stored in
//! the ctx (a handler returns the error code, a script function returns 0
//! and its caller looks at `ctx.error`).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64, I8};
use cranelift_codegen::ir::{
    Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::{DataId, FuncId, Module};
use ptap_lang::checked::{ArgAbi, CheckedScript, Local, ScalarType};
use ptap_lang::Span;
use ptap_rt_core::script::ctx::offset;
use ptap_rt_core::script::helper_table::Helper;

use super::helper_imports::HelperIds;
use super::meta::{Formats, Layout, Locations};
use super::CodegenError;

pub(crate) type R<T> = Result<T, CodegenError>;

/// What the translators share across functions of one module.
pub(crate) struct Shared<'s> {
    pub script: &'s CheckedScript,
    pub helpers: HelperIds,
    /// Script functions, by FuncId of the checked script.
    pub functions: Vec<FuncId>,
    pub layout: Layout,
    pub formats: Formats,
    pub locations: Locations,
    /// String literals (NUL-terminated data objects).
    pub strings: HashMap<String, DataId>,
    /// Bytes of a string buffer: MAXSTRINGLEN + 1.
    pub cap: i64,
    /// Histograms of each global (bucket offsets inside its slot).
    pub hists: super::hist::Hists,
    /// Data objects made so far (for unique names).
    pub blobs: usize,
    /// Script functions the function being translated calls (for the
    /// stack check, `super::stack`).
    pub calls: Vec<usize>,
}

/// Where a local lives.
#[derive(Clone, Copy)]
pub(crate) enum LocalSlot {
    Long(Variable),
    /// A string buffer on the stack (its address is loop-invariant).
    Str(Value),
}

/// How `arg1..6` are read in this function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgSel {
    Fixed(ArgAbi),
    /// Points of the probe disagree: read `ctx.abi` at run time.
    Dynamic,
}

pub(crate) enum Kind {
    Handler {
        args: ArgSel,
    },
    /// A script function; `ret_buf` receives a string result.
    Function {
        ret_buf: Option<Value>,
    },
}

pub(crate) struct FunctionTranslator<'a, 'f, 's, M: Module> {
    pub b: FunctionBuilder<'f>,
    pub module: &'a mut M,
    pub shared: &'a mut Shared<'s>,
    pub ctx: Value,
    pub locals: Vec<LocalSlot>,
    /// (continue target, break target) of the enclosing loops.
    pub loops: Vec<(Block, Block)>,
    pub exit: Block,
    /// Leaves the function after an error (returns).
    pub error_exit: Block,
    /// Where an error goes now: `error_exit`, or the catch block of the
    /// innermost `try`.
    pub error_target: Block,
    pub kind: Kind,
    /// The handler runs in ptap (begin/end/timer only): its stack is
    /// ptap's main thread's, so bigger buffers are fine.
    pub in_ptap: bool,
    /// `$name` locations of the probe being translated.
    pub tvars: HashMap<String, super::dwarf_access::TVar>,
    /// Byte offset of each `@entry` value in the kretprobe instance's data
    /// ([`super::expr::entry_layout`]).
    pub entry_offsets: Vec<i32>,
    funcs: HashMap<FuncId, FuncRef>,
    /// Per (error code, error target): a block taking the location id (i32)
    /// that stores code + location in the ctx and jumps to the target.
    fail_blocks: HashMap<(u32, Block), Block>,
    /// Per error target: a block taking a location id, for errors a helper
    /// already stored.
    helper_fail: HashMap<Block, Block>,
}

/// Loads and stores of the ctx, the registers and the globals: aligned, never trapping.
pub(crate) fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'a, 'f, 's, M: Module> FunctionTranslator<'a, 'f, 's, M> {
    pub(crate) fn new(
        b: FunctionBuilder<'f>,
        module: &'a mut M,
        shared: &'a mut Shared<'s>,
        ctx: Value,
        kind: Kind,
    ) -> Self {
        let mut t = FunctionTranslator {
            b,
            module,
            shared,
            ctx,
            locals: Vec::new(),
            loops: Vec::new(),
            exit: Block::from_u32(0),
            error_exit: Block::from_u32(0),
            error_target: Block::from_u32(0),
            kind,
            in_ptap: false,
            tvars: HashMap::new(),
            entry_offsets: Vec::new(),
            funcs: HashMap::new(),
            fail_blocks: HashMap::new(),
            helper_fail: HashMap::new(),
        };
        t.exit = t.b.create_block();
        t.b.append_block_param(t.exit, I64);
        t.error_exit = t.b.create_block();
        t.error_target = t.error_exit;
        t
    }

    /// Declare the locals: longs as variables (0), strings as stack buffers ("").
    pub(crate) fn declare_locals(&mut self, locals: &[Local]) {
        for l in locals {
            let slot = match l.ty {
                ScalarType::Long => {
                    let v = self.b.declare_var(I64);
                    let zero = self.b.ins().iconst(I64, 0);
                    self.b.def_var(v, zero);
                    LocalSlot::Long(v)
                }
                ScalarType::String => LocalSlot::Str(self.str_buf()),
            };
            self.locals.push(slot);
        }
    }

    /// A fresh empty string buffer on the stack.
    pub(crate) fn str_buf(&mut self) -> Value {
        let size = (self.shared.cap as u32).div_ceil(8) * 8;
        let ss = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            3,
        ));
        let p = self.b.ins().stack_addr(I64, ss, 0);
        let z = self.b.ins().iconst(I8, 0);
        self.b.ins().store(flags(), z, p, 0);
        p
    }

    pub(crate) fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub(crate) fn cap(&mut self) -> Value {
        let c = self.shared.cap;
        self.iconst(c)
    }

    fn func_ref(&mut self, id: FuncId) -> FuncRef {
        if let Some(r) = self.funcs.get(&id) {
            return *r;
        }
        let r = self.module.declare_func_in_func(id, self.b.func);
        self.funcs.insert(id, r);
        r
    }

    /// Call helper `h` (first argument is the ctx if its signature says so).
    pub(crate) fn call_helper(&mut self, h: Helper, args: &[Value]) -> Option<Value> {
        let id = self.shared.helpers.get(h);
        let r = self.func_ref(id);
        let call = self.b.ins().call(r, args);
        self.b.inst_results(call).first().copied()
    }

    /// Call a helper that returns a long.
    pub(crate) fn call_long(&mut self, h: Helper, args: &[Value]) -> Value {
        match self.call_helper(h, args) {
            Some(v) => v,
            None => self.iconst(0),
        }
    }

    /// Call a script function.
    pub(crate) fn call_function(&mut self, id: FuncId, args: &[Value]) -> Value {
        let r = self.func_ref(id);
        let call = self.b.ins().call(r, args);
        self.b.inst_results(call)[0]
    }

    /// Continue in a new block (after a jump, code is unreachable until the next label).
    pub(crate) fn dead_block(&mut self) {
        let b = self.b.create_block();
        self.b.switch_to_block(b);
    }

    pub(crate) fn jump(&mut self, to: Block, args: &[Value]) {
        let a: Vec<BlockArg> = args.iter().map(|&v| v.into()).collect();
        self.b.ins().jump(to, &a);
    }

    fn loc(&mut self, span: Span) -> Value {
        let id = self.shared.locations.id(span);
        self.b.ins().iconst(I32, i64::from(id))
    }

    /// If `cond` (i8/i64, nonzero) holds, raise runtime error `code` at `span`.
    pub(crate) fn fail_if(&mut self, cond: Value, code: u32, span: Span) {
        let key = (code, self.error_target);
        let fail = match self.fail_blocks.get(&key) {
            Some(b) => *b,
            None => {
                // Block parameter: the location id of the failing construct
                // (the body is filled in by `finish`).
                let blk = self.b.create_block();
                self.b.append_block_param(blk, I32);
                self.fail_blocks.insert(key, blk);
                blk
            }
        };
        let loc = self.loc(span);
        let cont = self.b.create_block();
        self.b.ins().brif(cond, fail, &[loc.into()], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// After a helper that may fail: if `ctx.error` is set, record `span` and leave.
    pub(crate) fn check_helper(&mut self, span: Span) {
        let fail = match self.helper_fail.get(&self.error_target) {
            Some(b) => *b,
            None => {
                // Block parameter: the location id of the failing call (filled in by `finish`).
                let blk = self.b.create_block();
                self.b.append_block_param(blk, I32);
                self.helper_fail.insert(self.error_target, blk);
                blk
            }
        };
        let err = self.b.ins().load(I32, flags(), self.ctx, offset::ERROR);
        let loc = self.loc(span);
        let cont = self.b.create_block();
        self.b.ins().brif(err, fail, &[loc.into()], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// After a script-function call: propagate an error (its location is set).
    pub(crate) fn check_callee(&mut self) {
        let err = self.b.ins().load(I32, flags(), self.ctx, offset::ERROR);
        let cont = self.b.create_block();
        let e = self.error_target;
        self.b.ins().brif(err, e, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// One statement or loop iteration: take one unit of the MAXACTION budget.
    pub(crate) fn count_action(&mut self, span: Span) {
        let a = self.b.ins().load(I64, flags(), self.ctx, offset::ACTIONS);
        let a1 = self.b.ins().iadd_imm_s(a, -1);
        self.b.ins().store(flags(), a1, self.ctx, offset::ACTIONS);
        let out = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, a1, 0);
        self.fail_if(out, ptap_rt_core::script::ctx::ERR_MAXACTION, span);
    }

    /// The globals base pointer.
    pub(crate) fn globals(&mut self) -> Value {
        self.b.ins().load(I64, flags(), self.ctx, offset::GLOBALS)
    }

    /// Fill in `exit` and `error_exit` and finish the function.
    pub(crate) fn finish(mut self, body_falls_through: bool) {
        if body_falls_through {
            // Falling off the end returns 0, or the (empty) result buffer of a string function.
            let v = match self.kind {
                Kind::Function { ret_buf: Some(b) } => b,
                _ => self.iconst(0),
            };
            let e = self.exit;
            self.jump(e, &[v]);
        }
        self.b.switch_to_block(self.exit);
        let v = self.b.block_params(self.exit)[0];
        self.b.ins().return_(&[v]);
        let mut fails: Vec<((u32, Block), Block)> =
            self.fail_blocks.iter().map(|(k, b)| (*k, *b)).collect();
        fails.sort();
        for ((code, target), blk) in fails {
            self.b.switch_to_block(blk);
            let loc = self.b.block_params(blk)[0];
            let c = self.b.ins().iconst(I32, i64::from(code));
            self.b.ins().store(flags(), c, self.ctx, offset::ERROR);
            self.b
                .ins()
                .store(flags(), loc, self.ctx, offset::ERROR_LOC);
            self.jump(target, &[]);
        }
        let mut helper_fails: Vec<(Block, Block)> =
            self.helper_fail.iter().map(|(t, b)| (*t, *b)).collect();
        helper_fails.sort();
        for (target, blk) in helper_fails {
            self.b.switch_to_block(blk);
            let loc = self.b.block_params(blk)[0];
            self.b
                .ins()
                .store(flags(), loc, self.ctx, offset::ERROR_LOC);
            self.jump(target, &[]);
        }
        self.b.switch_to_block(self.error_exit);
        match self.kind {
            Kind::Handler { .. } => {
                let e = self.b.ins().load(I32, flags(), self.ctx, offset::ERROR);
                let e = self.b.ins().uextend(I64, e);
                self.b.ins().return_(&[e]);
            }
            Kind::Function { .. } => {
                let z = self.iconst(0);
                self.b.ins().return_(&[z]);
            }
        }
        self.b.seal_all_blocks();
        let cfg = self.module.isa().frontend_config();
        self.b.finalize(cfg);
    }
}
