//! Lowering of a checked script to Cranelift IR, written once against
//! `cranelift_module::Module`: `ObjectModule` writes probe modules
//! ([`emit_object`]); ptap loads that same object into its own process for
//! the begin/end/timer probes (`host::Program`). `JITModule` ([`jit::Jit`])
//! serves the tests only.
//!
//! Per probe `i`: `ptap_probe_i(ctx: *mut ProbeCtx) -> i64` (0, or the error
//! code), and for a kretprobe with `@entry`: `ptap_entry_i(ctx)` which saves
//! the entry values into `ctx.entry[]`. Script functions:
//! `ptap_fn_NAME(ctx, [string result buffer], params...) -> i64`.
//! The context layout and the helper table are the runtime's
//! (`ptap_rt_core::script::{ctx, helper_table}`).
//!
//! Files: `func.rs` (the translator's state and plumbing: locals, string
//! buffers, helper calls, runtime errors, the MAXACTION budget), `expr.rs`,
//! `builtin.rs`, `format.rs` (printf/print/sprintf), `stmt.rs`, `agg.rs`
//! (statistics), `hist.rs` (histograms), `array.rs` (associative arrays,
//! foreach), `helper_imports.rs` (imports from the runtime's helper table),
//! `meta.rs` (globals layout, metadata), `host.rs` (ptap's side: session
//! globals, begin/end/timer), `jit.rs` (for the tests).
//!
//! Compiled: long and string locals/globals/parameters, every operator
//! (`=~` through a small NFA compiled by `regex.rs`), if/while/for/break/
//! continue/next/return/delete/try-catch, script functions (recursion
//! bounded by MAXNESTING), printf/print/sprintf/sprint, the context (`argN`
//! per ABI, `ret`, `@entry`, `register`), the context builtins, fault-safe
//! target reads (and guru-mode writes), statistics, associative arrays with
//! tuple keys (get/set/`+=`/`++`/in/delete/`<<<`/`@count(a[k])`...),
//! foreach (sort mark, limit, `v = k`), `@hist_log`/`@hist_linear` of
//! statistics globals and array elements, `$name` at function entries
//! (DWARF of the target executable, `dwarf.rs`/`tvars.rs`; written in guru
//! mode). Not yet (a clear compile error naming the construct): `$name`
//! anywhere but a function entry, foreach over arrays larger than 4096
//! entries in target probes and functions (262144 in begin/end/timer
//! probes; the index buffer is on the handler's stack).

mod agg;
mod array;
mod builtin;
mod defined;
pub mod dwarf;
pub mod dwarf_access;
pub mod dwarf_lines;
mod expr;
mod format;
mod func;
mod helper_imports;
pub(crate) mod hist;
pub mod host;
pub mod jit;
pub mod meta;
mod regex;
mod stack;
mod stmt;
mod tvar_code;
pub mod tvars;

use std::collections::HashMap;

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, InstBuilder};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module, ModuleError};
use ptap_lang::checked::{ArgAbi, CheckedScript, Probe, ScalarType, Type};
use ptap_lang::diag::{self, Diagnostic, ToDiagnostic};
use ptap_lang::points::Caps;
use ptap_lang::printf::Format;
use ptap_lang::Span;
use ptap_rt_core::script::meta::Meta;

use func::{ArgSel, FunctionTranslator, Kind, Shared};

/// Why a script could not be compiled.
#[derive(Debug)]
pub enum CodegenError {
    /// A construct the compiler does not lower yet.
    Unsupported { what: String, span: Span },
    /// A `$name` the target's debug information gives no value for here.
    TargetVar { what: String, span: Span },
    /// A point that resolves to no code (a source line without code, a
    /// file missing from the debug information).
    Point { what: String, span: Span },
    /// Cranelift refused the module (a bug in the translator).
    Module(String),
    /// The host ISA is not supported.
    Isa(String),
    /// A handler could need more stack than the runtime gives handlers.
    Stack {
        need: u64,
        limit: u64,
        span: Span,
        maxstringlen: u64,
        maxnesting: u64,
    },
}

impl CodegenError {
    pub(crate) fn unsupported(what: &str, span: Span) -> CodegenError {
        CodegenError::Unsupported {
            what: what.to_string(),
            span,
        }
    }
}

impl From<ModuleError> for CodegenError {
    fn from(e: ModuleError) -> Self {
        CodegenError::Module(format!("{e:?}"))
    }
}

impl ToDiagnostic for CodegenError {
    fn to_diagnostic(&self) -> Diagnostic {
        match self {
            CodegenError::Unsupported { what, span } => {
                diag::error(format!("cannot compile {what}")).with_labels(vec![diag::primary(
                    *span,
                    "not supported by the compiler yet",
                )])
            }
            CodegenError::TargetVar { what, span } => diag::error(format!("cannot compile {what}"))
                .with_labels(vec![diag::primary(
                    *span,
                    "no value for this variable here",
                )]),
            CodegenError::Point { what, span } => {
                diag::error(what.clone()).with_labels(vec![diag::primary(*span, "in this point")])
            }
            CodegenError::Module(m) => diag::error(format!("internal compiler error: {m}")),
            CodegenError::Isa(m) => {
                diag::error(format!("cannot generate code for this machine: {m}"))
            }
            CodegenError::Stack {
                need,
                limit,
                span,
                maxstringlen,
                maxnesting,
            } => diag::error(format!(
                "this probe's handler could need {} KiB of stack; a handler may use {} KiB",
                need.div_ceil(1024),
                limit / 1024
            ))
            .with_labels(vec![diag::primary(*span, "in this probe")])
            .with_notes(vec![format!(
                "each string value takes MAXSTRINGLEN + 1 bytes (MAXSTRINGLEN={maxstringlen}), and \
                 script functions may nest {maxnesting} calls deep (MAXNESTING): lower -D \
                 MAXSTRINGLEN or -D MAXNESTING, or use fewer string variables"
            )]),
        }
    }
}

impl std::fmt::Display for CodegenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_diagnostic().message)
    }
}

/// What [`compile`] produced besides the code in the module.
#[derive(Debug)]
pub struct CompiledModule {
    /// The metadata (also the `.ptap_meta` section of an object).
    pub meta: Meta,
    /// The formats, parsed, by format id (what `format_record` needs).
    pub formats: Vec<Format>,
    /// Per probe: its handler.
    pub handlers: Vec<FuncId>,
    /// Per probe: its `@entry` handler, if any.
    pub entry_handlers: Vec<Option<FuncId>>,
    /// (symbol, Cranelift IR text) of every function, in definition order.
    pub ir: Vec<(String, String)>,
}

/// x86-64 ISA extensions handlers are compiled for, fixed (not detected from
/// the host): x86-64-v2, that is up to SSE4.2 and POPCNT, and none of AVX,
/// AVX2, FMA, BMI, LZCNT or AVX-512. Handlers thus run on any x86-64 CPU of
/// the last fifteen years, a module built on one machine runs on another, and
/// compiled code only ever writes the low 128 bits of xmm0-15 and MXCSR: the
/// jump-path trampolines rely on that (docs/optprobes.md).
pub const ISA_FLAGS: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];

/// The x86-64 ISA with ptap's settings (optimized, not PIC: the loader
/// applies absolute relocations; frame pointers kept for backtraces) and
/// the fixed extensions of [`ISA_FLAGS`].
pub fn host_isa() -> Result<OwnedTargetIsa, CodegenError> {
    let mut fb = settings::builder();
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v)
            .map_err(|e| CodegenError::Isa(format!("{k}={v}: {e}")))
    };
    set(&mut fb, "opt_level", "speed")?;
    set(&mut fb, "is_pic", "false")?;
    set(&mut fb, "preserve_frame_pointers", "true")?;
    let mut ib = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .map_err(|e| CodegenError::Isa(e.to_string()))?;
    for f in ISA_FLAGS {
        ib.enable(f)
            .map_err(|e| CodegenError::Isa(format!("{f}: {e}")))?;
    }
    ib.finish(settings::Flags::new(fb))
        .map_err(|e| CodegenError::Isa(e.to_string()))
}

/// How a probe reads `arg1..6`.
fn arg_sel(p: &Probe) -> ArgSel {
    let abis: Vec<ArgAbi> = p
        .points
        .iter()
        .filter_map(|pt| Caps::of(&pt.kind).args)
        .collect();
    match abis.first() {
        None => ArgSel::Fixed(ArgAbi::SysV),
        Some(&a) if abis.iter().all(|&b| b == a) => ArgSel::Fixed(a),
        Some(_) => ArgSel::Dynamic,
    }
}

/// A REPL session's state that a new module continues from: its globals
/// keep their offsets (new ones go after `globals_end`), its formats keep
/// their ids (new ones are appended; the module's metadata lists them all),
/// and location ids start at `locations` (the module's metadata holds
/// empty placeholders below).
#[derive(Debug, Clone, Default)]
pub struct SessionBase {
    pub globals: Vec<BaseGlobal>,
    pub globals_end: u64,
    pub formats: Vec<Format>,
    pub locations: u32,
}

/// A global of a [`SessionBase`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseGlobal {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub kind: ptap_rt_core::script::meta::GlobalKind,
}

/// Lower `script` into `module`: declares and defines every function and
/// returns the metadata. The caller finishes the module (object or JIT).
pub fn compile<M: Module>(
    script: &CheckedScript,
    module: &mut M,
) -> Result<CompiledModule, CodegenError> {
    compile_for(script, module, None)
}

/// [`compile`], with `$name` target variables resolved in the DWARF of
/// `exe` (the target executable).
pub fn compile_for<M: Module>(
    script: &CheckedScript,
    module: &mut M,
    exe: Option<&std::path::Path>,
) -> Result<CompiledModule, CodegenError> {
    compile_in(script, module, exe, None, None)
}

/// [`compile_for`] continuing a REPL session ([`SessionBase`]). `full`:
/// the session's whole script, of which `script` keeps only the probes of
/// this module (the globals' histograms, hence their shapes, come from it).
pub fn compile_in<M: Module>(
    script: &CheckedScript,
    module: &mut M,
    exe: Option<&std::path::Path>,
    base: Option<&SessionBase>,
    full: Option<&CheckedScript>,
) -> Result<CompiledModule, CodegenError> {
    // Source-line points become address points.
    let lines = dwarf_lines::expand(script, exe)?;
    let script = &*lines;
    let probe_vars = tvars::resolve_all(script, exe)?;
    let hists = hist::collect(full.unwrap_or(script))?;
    let layout = meta::layout(script, &hists, base)?;
    let helpers = helper_imports::HelperIds::declare(module)?;
    let cap = script.limits.maxstringlen as i64 + 1;

    let mut functions = Vec::new();
    for f in &script.functions {
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(I64));
        if f.ret == Type::String {
            sig.params.push(AbiParam::new(I64));
        }
        sig.params.extend((0..f.params).map(|_| AbiParam::new(I64)));
        sig.returns.push(AbiParam::new(I64));
        functions.push(module.declare_function(
            &format!("ptap_fn_{}", f.name),
            Linkage::Local,
            &sig,
        )?);
    }
    let mut handler_sig = module.make_signature();
    handler_sig.params.push(AbiParam::new(I64));
    handler_sig.returns.push(AbiParam::new(I64));
    let mut handlers = Vec::new();
    let mut entry_handlers = Vec::new();
    for (i, p) in script.probes.iter().enumerate() {
        handlers.push(module.declare_function(
            &meta::handler_symbol(i),
            Linkage::Export,
            &handler_sig,
        )?);
        entry_handlers.push(if p.entry_exprs.is_empty() {
            None
        } else {
            Some(module.declare_function(&meta::entry_symbol(i), Linkage::Export, &handler_sig)?)
        });
    }

    let mut shared = Shared {
        script,
        helpers,
        functions,
        layout,
        formats: meta::Formats {
            list: base.map(|b| b.formats.clone()).unwrap_or_default(),
        },
        locations: meta::Locations {
            base: base.map_or(0, |b| b.locations),
            ..meta::Locations::default()
        },
        strings: HashMap::new(),
        cap,
        hists,
        blobs: 0,
        calls: Vec::new(),
    };
    let mut frames = stack::Frames::default();
    let mut ctx = module.make_context();
    let mut fbc = FunctionBuilderContext::new();
    let mut ir = Vec::new();

    for (i, f) in script.functions.iter().enumerate() {
        ctx.func.signature = module
            .declarations()
            .get_function_decl(shared.functions[i])
            .signature
            .clone();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            let ret_buf = (f.ret == Type::String).then(|| params[1]);
            let args = &params[1 + usize::from(ret_buf.is_some())..];
            let mut t = FunctionTranslator::new(
                b,
                module,
                &mut shared,
                params[0],
                Kind::Function { ret_buf },
            );
            if let Some(rb) = ret_buf {
                let z = t.b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
                t.b.ins().store(func::flags(), z, rb, 0);
            }
            t.declare_locals(&f.locals);
            for (k, &a) in args.iter().enumerate() {
                match (t.locals[k], f.locals[k].ty) {
                    (func::LocalSlot::Long(v), ScalarType::Long) => t.b.def_var(v, a),
                    (func::LocalSlot::Str(p), _) => {
                        let cap = t.cap();
                        t.call_helper(
                            ptap_rt_core::script::helper_table::Helper::StrCopy,
                            &[p, a, cap],
                        );
                    }
                    _ => {}
                }
            }
            t.translate_block(&f.body)?;
            t.finish(true);
        }
        let frame = define(
            module,
            &mut ctx,
            shared.functions[i],
            format!("ptap_fn_{}", f.name),
            &mut ir,
        )?;
        frames
            .functions
            .push((frame, std::mem::take(&mut shared.calls)));
    }

    for (i, p) in script.probes.iter().enumerate() {
        if let Some(id) = entry_handlers[i] {
            ctx.func.signature = handler_sig.clone();
            let tvars = probe_vars[i].1.clone();
            handler(&mut ctx, &mut fbc, module, &mut shared, p, tvars, |t, c| {
                for (k, e) in p.entry_exprs.iter().enumerate() {
                    let v = t.translate_expr(e)?;
                    let base = t.b.ins().load(
                        I64,
                        func::flags(),
                        c,
                        ptap_rt_core::script::ctx::offset::ENTRY,
                    );
                    let at = t.entry_offsets[k];
                    if e.ty == Type::String {
                        // The string itself (MAXSTRINGLEN + 1 bytes) in the instance.
                        let dst = t.b.ins().iadd_imm_s(base, i64::from(at));
                        let cap = t.cap();
                        t.call_helper(
                            ptap_rt_core::script::helper_table::Helper::StrCopy,
                            &[dst, v, cap],
                        );
                    } else {
                        t.b.ins().store(func::flags(), v, base, at);
                    }
                }
                Ok(())
            })?;
            let frame = define(module, &mut ctx, id, meta::entry_symbol(i), &mut ir)?;
            let calls = std::mem::take(&mut shared.calls);
            frames.handlers.push((frame, calls, p.span));
        }
        ctx.func.signature = handler_sig.clone();
        let tvars = probe_vars[i].0.clone();
        handler(&mut ctx, &mut fbc, module, &mut shared, p, tvars, |t, _| {
            t.in_ptap = in_ptap(p);
            t.translate_block(&p.body)
        })?;
        let frame = define(
            module,
            &mut ctx,
            handlers[i],
            meta::handler_symbol(i),
            &mut ir,
        )?;
        let calls = std::mem::take(&mut shared.calls);
        // begin/end/timer handlers run in ptap, on its own threads' stacks.
        if !in_ptap(p) {
            frames.handlers.push((frame, calls, p.span));
        }
    }
    let limit = ptap_rt_core::hit::threads::HANDLER_STACK as u64 - stack::RUNTIME_RESERVE;
    stack::check(&frames, script.limits.maxnesting, limit).map_err(|e| CodegenError::Stack {
        need: e.need,
        limit,
        span: e.span,
        maxstringlen: script.limits.maxstringlen,
        maxnesting: script.limits.maxnesting,
    })?;

    let meta = meta::build(script, &shared.layout, &shared.formats, &shared.locations);
    Ok(CompiledModule {
        meta,
        formats: shared.formats.list,
        handlers,
        entry_handlers,
        ir,
    })
}

/// Does every point of `p` run in ptap (begin, end, timers), none in a target?
fn in_ptap(p: &Probe) -> bool {
    p.points.iter().all(|q| {
        matches!(
            q.kind,
            ptap_lang::checked::PointKind::Begin
                | ptap_lang::checked::PointKind::End
                | ptap_lang::checked::PointKind::Timer { .. }
        )
    })
}

/// Builds one handler (`fn(ctx)`) of probe `p` in `ctx.func`: the entry
/// block, a translator with the probe's target variables and locals; `body`
/// translates the rest (it gets the context pointer).
fn handler<'s, M: Module>(
    ctx: &mut Context,
    fbc: &mut FunctionBuilderContext,
    module: &mut M,
    shared: &mut Shared<'s>,
    p: &Probe,
    tvars: HashMap<String, dwarf_access::TVar>,
    body: impl FnOnce(
        &mut FunctionTranslator<'_, '_, 's, M>,
        cranelift_codegen::ir::Value,
    ) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let mut b = FunctionBuilder::new(&mut ctx.func, fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let c = b.block_params(entry)[0];
    let mut t = FunctionTranslator::new(b, module, shared, c, Kind::Handler { args: arg_sel(p) });
    t.tvars = tvars;
    t.entry_offsets = expr::entry_layout(p, t.shared.cap as u64).0;
    t.declare_locals(&p.locals);
    body(&mut t, c)?;
    t.finish(true);
    Ok(())
}

/// Compile `ctx.func` as `id`; returns the bytes of its sized stack slots.
fn define<M: Module>(
    module: &mut M,
    ctx: &mut Context,
    id: FuncId,
    name: String,
    ir: &mut Vec<(String, String)>,
) -> Result<u64, CodegenError> {
    ir.push((name, ctx.func.display().to_string()));
    let frame = ctx
        .func
        .sized_stack_slots
        .values()
        .map(|s| u64::from(s.size))
        .sum();
    module.define_function(id, ctx)?;
    module.clear_context(ctx);
    Ok(frame)
}

/// The probe module of `script`: an ELF relocatable object with the
/// handlers in `.text`, string literals in data sections, the helpers as
/// undefined symbols and the metadata in a `.ptap_meta` section.
pub fn emit_object(script: &CheckedScript) -> Result<Vec<u8>, CodegenError> {
    emit_object_for(script, None)
}

/// [`emit_object`] with `$name` resolved against `exe` ([`compile_for`]).
pub fn emit_object_for(
    script: &CheckedScript,
    exe: Option<&std::path::Path>,
) -> Result<Vec<u8>, CodegenError> {
    emit_object_in(script, exe, None, None)
}

/// [`emit_object_for`] continuing a REPL session ([`compile_in`]).
pub fn emit_object_in(
    script: &CheckedScript,
    exe: Option<&std::path::Path>,
    base: Option<&SessionBase>,
    full: Option<&CheckedScript>,
) -> Result<Vec<u8>, CodegenError> {
    use cranelift_object::object::write::StandardSegment;
    use cranelift_object::object::SectionKind;
    use cranelift_object::{ObjectBuilder, ObjectModule};
    let isa = host_isa()?;
    let builder = ObjectBuilder::new(
        isa,
        "ptap_module",
        cranelift_module::default_libcall_names(),
    )?;
    let mut module = ObjectModule::new(builder);
    let compiled = compile_in(script, &mut module, exe, base, full)?;
    let mut product = module.finish();
    let obj = &mut product.object;
    let seg = obj.segment_name(StandardSegment::Data).to_vec();
    let sec = obj.add_section(
        seg,
        ptap_rt_core::script::meta::SECTION.as_bytes().to_vec(),
        SectionKind::Metadata,
    );
    obj.append_section_data(sec, compiled.meta.encode().as_bytes(), 1);
    product
        .emit()
        .map_err(|e| CodegenError::Module(e.to_string()))
}

/// `ptap -p3`: the Cranelift IR of every function, as text.
pub fn ir_text(script: &CheckedScript) -> Result<String, CodegenError> {
    ir_text_for(script, None)
}

/// [`ir_text`] with `$name` resolved against `exe` ([`compile_for`]).
pub fn ir_text_for(
    script: &CheckedScript,
    exe: Option<&std::path::Path>,
) -> Result<String, CodegenError> {
    use cranelift_object::{ObjectBuilder, ObjectModule};
    let isa = host_isa()?;
    let builder = ObjectBuilder::new(
        isa,
        "ptap_module",
        cranelift_module::default_libcall_names(),
    )?;
    let mut module = ObjectModule::new(builder);
    let compiled = compile_for(script, &mut module, exe)?;
    let mut out = String::new();
    for (name, text) in &compiled.ir {
        out.push_str(&format!("; {name}\n{text}\n"));
    }
    Ok(out)
}
