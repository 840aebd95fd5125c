//! The `ptap` command-line driver.
//!
//! `ptap [OPTIONS] (SCRIPT.pt | -e TEXT | -) [ARGS]...` runs a script;
//! `ptap load MODULE.so [-c CMD]` runs a C probe module in a target.
//! The script pipeline lives in `driver.rs`, module loading in `load.rs`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod checks;
mod driver;
mod inject;
mod load;
mod points;
mod private;
mod run;

const EXAMPLES: &str = "\
Examples:
  ptap -p1 -e 'probe kprobe(work) { print(arg1) }'       print the parse tree
  ptap -p2 examples/opens.pt                             print the elaborated script
  ptap -e 'probe kretprobe(sys_open) < if ret<0 print(ret) >' -c 'cat /nonexistent'
  ptap -p4 -m counts -e 'global n probe kprobe(work) { n++ }'   write counts.o
  ptap run counts.o -c 'tests/targets/hot 10'            run it without compiling
  ptap load examples/modules/kprobe_example.so -c 'tests/targets/hot 10'
  ptap -x 1234 -e 'global n probe kprobe(work) { n++ }'  attach to running pid 1234 (Ctrl-C detaches)
";

#[derive(Parser, Debug)]
#[command(
    name = "ptap",
    version,
    about = "Dynamic instrumentation for Linux x86-64 user-space processes",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub script: ScriptOpts,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a C probe module (a shared object with init_module/cleanup_module) inside CMD.
    Load(LoadOpts),
    /// Run a probe module written by `ptap -p4 -m NAME` without compiling again.
    Run(RunModuleOpts),
}

/// Options for `ptap run`.
#[derive(Args, Debug)]
pub struct RunModuleOpts {
    /// The probe module (NAME.o) written by `ptap -p4 -m NAME`.
    pub module: std::path::PathBuf,

    /// Run CMD (split like a shell would, without a shell) and probe it.
    #[arg(short = 'c', value_name = "CMD")]
    pub cmd: Option<String>,

    /// Attach to the running process PID instead of starting one (the runtime
    /// is loaded into it with ptrace + dlopen; see docs/usage.md).
    #[arg(short = 'x', value_name = "PID", conflicts_with = "cmd")]
    pub pid: Option<i32>,

    /// Write output to FILE instead of stdout.
    #[arg(short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Stop after SECS seconds.
    #[arg(short = 'T', value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Probe only the -c process itself (see `ptap --help`).
    #[arg(long = "no-follow")]
    pub no_follow: bool,

    /// Verbose: time the run and explain probe placement.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Options for running a script.
#[derive(Args, Debug, Default)]
pub struct ScriptOpts {
    /// Script text to run (instead of a script file).
    #[arg(short = 'e', value_name = "TEXT")]
    pub expr: Option<String>,

    /// Stop after pass N: 1 = parse (print the tree), 2 = elaborate (print types),
    /// 3 = print Cranelift IR, 4 = write the probe module.
    #[arg(short = 'p', value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub pass: Option<u8>,

    /// Run CMD (split like a shell would, without a shell) and probe it.
    #[arg(short = 'c', value_name = "CMD")]
    pub cmd: Option<String>,

    /// Attach to the running process PID instead of starting one (the runtime
    /// is loaded into it with ptrace + dlopen; see docs/usage.md).
    #[arg(short = 'x', value_name = "PID", conflicts_with = "cmd")]
    pub pid: Option<i32>,

    /// Set a limit or macro: MAXACTION, MAXSTRINGLEN, MAXMAPENTRIES, MAXERRORS, ...
    #[arg(short = 'D', value_name = "NAME=VAL")]
    pub defines: Vec<String>,

    /// Guru mode: allow writing registers and target memory.
    #[arg(short = 'g')]
    pub guru: bool,

    /// Verbose: time each pass and explain probe placement.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Write output to FILE instead of stdout.
    #[arg(short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Module name for -p4.
    #[arg(short = 'm', value_name = "NAME")]
    pub module: Option<String>,

    /// Stop after SECS seconds.
    #[arg(short = 'T', value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Probe only the -c process itself: the programs it execs do not load
    /// the probes, and its forked children drop them.
    #[arg(long = "no-follow")]
    pub no_follow: bool,

    /// The script file (`-` for stdin) followed by script arguments ($1, @1, ...).
    /// With -e, every positional is a script argument. Options may follow the
    /// script (as with GNU getopt); put script arguments that start with `-`
    /// after `--` (negative numbers need not).
    #[arg(value_name = "SCRIPT_AND_ARGS", allow_negative_numbers = true)]
    pub rest: Vec<String>,
}

/// Options for `ptap load`.
#[derive(Args, Debug)]
pub struct LoadOpts {
    /// The probe module: a shared object built against runtime/include/ptap/kprobes.h.
    pub module: std::path::PathBuf,

    /// Run CMD (split like a shell would, without a shell) with the module loaded.
    #[arg(short = 'c', value_name = "CMD")]
    pub cmd: Option<String>,

    /// Attach to the running process PID instead of starting one (the runtime
    /// is loaded into it with ptrace + dlopen; see docs/usage.md).
    #[arg(short = 'x', value_name = "PID", conflicts_with = "cmd")]
    pub pid: Option<i32>,

    /// Write output to FILE instead of stdout.
    #[arg(short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Verbose.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// When ptap started (for -v: time to armed probes with -x).
pub static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    START.get_or_init(std::time::Instant::now);
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Load(opts)) => load::run(opts),
        Some(Command::Run(opts)) => driver::run_module(opts),
        None => driver::run(&cli.script),
    }
}
