//! Shared by the codegen tests: compile a script with the JIT, run its
//! handlers against an in-process session (ring + globals) and fake registers.
#![allow(dead_code)]

use ptap_compiler::output::{render_record, Rendered};
use ptap_compiler::Jit;
use ptap_lang::{Limits, Options};
use ptap_rt_core::abi::PtRegs;
use ptap_rt_core::script::ctx::ProbeCtx;
use ptap_rt_core::script::globals::{self, Globals};
use ptap_rt_core::session::{Session, REC_FORMAT};

pub const RING: usize = 1 << 16;

pub struct Env {
    _mem: Vec<u64>,
    pub session: Session,
    pub globals: Globals,
    pub jit: Jit,
}

impl Drop for Env {
    fn drop(&mut self) {
        // The memory goes away: its sizes are no longer this process's record.
        self.session.forget();
        for (off, _) in self.jit.compiled.meta.array_shapes() {
            ptap_rt_core::script::map::Map::forget_shape(&self.globals, off);
        }
        self.globals.forget();
    }
}

pub fn compile(src: &str) -> Result<Jit, String> {
    compile_with(src, &[])
}

pub fn compile_with(src: &str, defines: &[&str]) -> Result<Jit, String> {
    let guru = defines.contains(&"-g");
    let opts = Options {
        defines: defines
            .iter()
            .filter(|d| **d != "-g")
            .map(|s| s.to_string())
            .collect(),
        guru,
        ..Options::default()
    };
    let checked = ptap_lang::frontend("t.pt", src, &opts).map_err(|f| f.render())?;
    Jit::new(&checked).map_err(|e| e.to_string())
}

pub fn env(src: &str) -> Env {
    env_with(src, &[])
}

/// `defines` are `-D` values; `"-g"` among them turns on guru mode.
pub fn env_with(src: &str, defines: &[&str]) -> Env {
    let jit = compile_with(src, defines).unwrap_or_else(|e| panic!("compile failed:\n{e}"));
    let gsize = jit.compiled.meta.globals_size as usize;
    let total = globals::offset_in_session(RING) + gsize;
    let mut mem = vec![0u64; total.div_ceil(8)];
    let base = mem.as_mut_ptr() as *mut u8;
    // SAFETY: mem lives as long as Env.
    let session = unsafe { Session::create(base, RING) };
    // SAFETY: the globals area lies inside mem.
    let globals = unsafe { Globals::from_raw(base.add(globals::offset_in_session(RING))) };
    ptap_compiler::codegen::host::init_globals(&globals, &jit.compiled.meta, 4242);
    Env {
        _mem: mem,
        session,
        globals,
        jit,
    }
}

pub fn default_limits() -> Limits {
    Limits::default()
}

impl Env {
    pub fn ctx(&self, regs: *mut PtRegs) -> ProbeCtx {
        let maxaction = self.jit.compiled.meta.limits.maxaction as i64;
        ProbeCtx::new(regs, self.globals.base(), self.session.base(), maxaction)
    }

    /// Run probe `i` once; returns the handler's result and its ctx.
    pub fn run_with(&self, i: usize, regs: &mut PtRegs) -> (i64, ProbeCtx) {
        let mut ctx = self.ctx(regs);
        ctx.probe = i as u32;
        let h = self.jit.handler(i).expect("probe exists");
        // SAFETY: ctx points to live regs, globals and session.
        let r = unsafe { h(&mut ctx) };
        (r, ctx)
    }

    pub fn run(&self, i: usize) -> (i64, ProbeCtx) {
        let mut regs = PtRegs::default();
        self.run_with(i, &mut regs)
    }

    /// Everything printed so far, formatted as ptap would.
    pub fn output(&self) -> String {
        let mut out = String::new();
        let meta = &self.jit.compiled.meta;
        let formats = &self.jit.compiled.formats;
        self.session.drain(|kind, p| {
            assert_eq!(kind, REC_FORMAT);
            match render_record(meta, formats, p) {
                Rendered::Out(s) | Rendered::Error(s) | Rendered::Warning(s) => out.push_str(&s),
                Rendered::Raw(b) => out.push_str(&String::from_utf8_lossy(&b)),
            }
        });
        out
    }

    pub fn long(&self, name: &str) -> i64 {
        let g = self
            .jit
            .compiled
            .meta
            .globals
            .iter()
            .find(|g| g.name == name)
            .expect("global exists");
        self.globals
            .long(g.offset)
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `file:line:col` of the ctx's error.
    pub fn error_at(&self, ctx: &ProbeCtx) -> String {
        self.jit
            .compiled
            .meta
            .location(ctx.error_loc)
            .unwrap_or_default()
    }
}

/// Run `probe begin { BODY }` and return its output.
pub fn begin(body: &str) -> String {
    let e = env(&format!("probe begin {{ {body} }}"));
    let (r, ctx) = e.run(0);
    assert_eq!(
        r,
        0,
        "handler failed: error {} at {}",
        ctx.error,
        e.error_at(&ctx)
    );
    e.output()
}

/// Run `GLOBALS probe begin { BODY }` and return its output.
pub fn begin_with_globals(globals: &str, body: &str) -> String {
    let e = env(&format!("{globals}\nprobe begin {{ {body} }}"));
    let (r, ctx) = e.run(0);
    assert_eq!(
        r,
        0,
        "handler failed: error {} at {}",
        ctx.error,
        e.error_at(&ctx)
    );
    e.output()
}
