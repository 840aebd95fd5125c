//! The script pipeline: source -> parse (-p1) -> check (-p2) -> (compile -> run).
//!
//! Every bad input ends with diagnostics on stderr and exit status 1.
use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use ptap_compiler::codegen::host::Program;
use ptap_lang::diag::ToDiagnostic;
use ptap_lang::{Options, Sources};

use crate::ScriptOpts;

/// The script text, how diagnostics name it, and the script arguments.
struct Input {
    name: String,
    text: String,
    args: Vec<String>,
}

fn input(opts: &ScriptOpts) -> anyhow::Result<Input> {
    if let Some(text) = &opts.expr {
        return Ok(Input {
            name: "<command line>".into(),
            text: text.clone(),
            args: opts.rest.clone(),
        });
    }
    let Some((path, args)) = opts.rest.split_first() else {
        bail!("no script: give SCRIPT.pt, `-e TEXT` or `-` (stdin); see --help");
    };
    let args = args.to_vec();
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok(Input {
            name: "<stdin>".into(),
            text,
            args,
        });
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{path}`"))?;
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("`{path}` is not UTF-8 text");
    };
    Ok(Input {
        name: path.clone(),
        text,
        args,
    })
}

pub fn run(opts: &ScriptOpts) -> ExitCode {
    if let (Some(_), Some(p)) = (&opts.serve, opts.pass) {
        return fail(&format!(
            "--serve serves a running session's globals; it cannot be combined with -p{p}"
        ));
    }
    if let Some(addr) = &opts.serve {
        if let Err(e) = crate::serve::check_addr(addr) {
            return failed(&e);
        }
    }
    let input = match input(opts) {
        Ok(i) => i,
        Err(e) => return failed(&e),
    };
    let lang_opts = Options {
        guru: opts.guru,
        args: input.args.clone(),
        defines: opts.defines.clone(),
    };
    let mut sources = Sources::new();
    let file = sources.add(input.name.as_str(), input.text.as_str());

    let t = Instant::now();
    let script = match ptap_lang::parse_with(&sources, file, &lang_opts) {
        Ok(s) => s,
        Err(d) => return diagnostics(&ptap_lang::diag::render(&sources, &d)),
    };
    if opts.target.verbose > 0 {
        eprintln!(
            "Pass 1: parsed {} ({} items) in {:.2?}",
            input.name,
            script.items.len(),
            t.elapsed()
        );
    }
    if opts.pass == Some(1) {
        return output(opts, &ptap_lang::print::p1::script(&script, &sources));
    }

    let t = Instant::now();
    let checked = match ptap_lang::check(sources, script, &lang_opts) {
        Ok(c) => c,
        Err(f) => return diagnostics(&f.render()),
    };
    if !checked.warnings.is_empty() {
        eprint!(
            "{}",
            ptap_lang::diag::render(&checked.sources, &checked.warnings)
        );
    }
    if opts.target.verbose > 0 {
        eprintln!(
            "Pass 2: analyzed: {} probe(s), {} function(s), {} global(s) in {:.2?}",
            checked.probes.len(),
            checked.functions.len(),
            checked.globals.len(),
            t.elapsed()
        );
    }
    if opts.pass == Some(2) {
        return output(opts, &ptap_lang::print::p2::script(&checked));
    }

    // The -c command: its executable gives `$name` their debug info.
    let argv = match command_argv(opts.target.cmd.as_deref()) {
        Ok(a) => a,
        Err(e) => return failed(&e),
    };
    // With -x, the running process's executable.
    let exe = match opts.target.pid {
        Some(pid) => std::fs::read_link(format!("{}/exe", crate::inject::proc_of(pid))).ok(),
        None => argv.as_ref().and_then(|a| crate::run::resolve_exe(&a[0])),
    };
    let codegen_failed = |e: ptap_compiler::CodegenError| {
        diagnostics(&ptap_lang::diag::render(
            &checked.sources,
            &[e.to_diagnostic()],
        ))
    };
    ptap_compiler::codegen::dwarf_lines::set_verbose(opts.target.verbose > 0);
    let t = Instant::now();
    if opts.pass == Some(3) {
        return match ptap_compiler::codegen::ir_text_for(&checked, exe.as_deref()) {
            Ok(ir) => output(opts, &ir),
            Err(e) => codegen_failed(e),
        };
    }
    if opts.pass == Some(4) {
        let object = match ptap_compiler::codegen::emit_object_for(&checked, exe.as_deref()) {
            Ok(o) => o,
            Err(e) => return codegen_failed(e),
        };
        let name = opts.module.as_deref().unwrap_or("ptap_module");
        let path = if name.ends_with(".o") {
            name.to_string()
        } else {
            format!("{name}.o")
        };
        if let Err(e) =
            std::fs::write(&path, object).with_context(|| format!("cannot write `{path}`"))
        {
            return failed(&e);
        }
        return output(opts, &format!("{path}\n"));
    }
    let prog = match Program::compile_for(&checked, exe.as_deref()) {
        Ok(p) => p,
        Err(e) => return codegen_failed(e),
    };
    if opts.target.verbose > 0 {
        eprintln!(
            "Pass 3-4: compiled {} handler(s) to a {}-byte probe module in {:.2?}",
            prog.meta().probes.len(),
            prog.object.len(),
            t.elapsed()
        );
    }
    let serve = opts.serve.as_ref().map(|addr| crate::serve::ServeSpec {
        addr: addr.clone(),
        plan: ptap_compiler::metrics::Plan::new(&checked, prog.meta(), &input.name),
    });
    crate::systemwide::filter::remember(&checked);
    let json = opts.format == crate::OutputFormat::Json;
    run_program(
        &prog,
        &crate::run::RunOpts::new(&opts.target, argv, serve.as_ref(), json),
    )
}

/// Pass 5: run a compiled program (shared by scripts and `ptap run NAME.o`).
pub fn run_program(prog: &Program, opts: &crate::run::RunOpts) -> ExitCode {
    match crate::run::run(prog, opts) {
        Ok(code) => code,
        Err(e) => failed(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("ptap: {msg}");
    ExitCode::from(1)
}

/// An error and its causes on one line ("what: why"), exit status 1.
fn failed(e: &anyhow::Error) -> ExitCode {
    fail(&format!("{e:#}"))
}

fn diagnostics(rendered: &str) -> ExitCode {
    eprint!("{rendered}");
    ExitCode::from(1)
}

fn output(opts: &ScriptOpts, text: &str) -> ExitCode {
    match write_output(opts, text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

fn write_output(opts: &ScriptOpts, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match &opts.target.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (ptap -p2 x | head) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}

/// `ptap run NAME.o [-c CMD]`.
pub fn run_module(opts: &crate::RunModuleOpts) -> ExitCode {
    match module_program(opts) {
        Ok((prog, argv)) => {
            let json = opts.format == crate::OutputFormat::Json;
            run_program(
                &prog,
                &crate::run::RunOpts::new(&opts.target, argv, None, json),
            )
        }
        Err(e) => failed(&e),
    }
}

/// The program of `ptap run NAME.o`, and the -c command.
fn module_program(opts: &crate::RunModuleOpts) -> anyhow::Result<(Program, Option<Vec<String>>)> {
    let module = opts.module.display();
    let object = std::fs::read(&opts.module).with_context(|| format!("cannot read `{module}`"))?;
    let prog = Program::from_object(object)
        .with_context(|| format!("`{module}` is not a ptap probe module"))?;
    Ok((prog, command_argv(opts.target.cmd.as_deref())?))
}

/// The -c command split into words, if there is one.
fn command_argv(cmd: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    cmd.map(crate::load::split_command).transpose()
}
