//! The `ptap` command-line driver.
//!
//! `ptap [OPTIONS] (SCRIPT.pt | -e TEXT | -) [ARGS]...` runs a script;
//! `ptap load MODULE.so [-c CMD]` runs a C probe module in a target.
//! The script pipeline lives in `driver.rs`, module loading in `load.rs`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod checks;
mod driver;
mod event_loop;
mod inject;
mod json;
mod listing;
mod load;
mod points;
mod private;
mod repl;
mod run;
mod serve;
mod systemwide;
mod target;

const EXAMPLES: &str = "\
Examples:
  ptap -e 'probe kretprobe(sys_open) < if ret<0 print(ret) >' -c 'cat /nonexistent'
  ptap examples/opensnoop.pt -c 'ls /etc'                 a tool from examples/
  ptap -p2 examples/malloc_sizes.pt                      print the elaborated script
  ptap -p1 -e 'probe kprobe(work) { print(arg1) }'       print the parse tree
  ptap -p4 -m counts -e 'global n probe kprobe(work) { n++ }'   write counts.o
  ptap run counts.o -c 'tests/targets/hot 10'            run it without compiling
  ptap load examples/modules/kprobe_example.so -c 'tests/targets/hot 10'
  ptap -x 1234 -e 'global n probe kprobe(work) { n++ }'  attach to running pid 1234 (Ctrl-C detaches)
  ptap completions bash > ~/.local/share/bash-completion/completions/ptap
  ptap -i -c 'tests/targets/spin 1 60000'                 the REPL: add and delete probes while it runs
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
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell
    /// (for example `ptap completions bash > /etc/bash_completion.d/ptap`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print ptap's manual page in roff (for example `ptap man > ptap.1; man ./ptap.1`).
    Man,
}

/// What a session probes and where its output goes: the options a script,
/// `ptap run` and `ptap load` share (one definition, so that none lacks one
/// another has).
#[derive(Args, Debug, Default)]
pub struct TargetArgs {
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

    /// Stop after SECS seconds (a -c or -x target is detached and goes on).
    #[arg(short = 'T', value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,

    /// Probe only the -c process itself: the programs it execs do not load
    /// the probes, and its forked children drop them.
    #[arg(long = "no-follow")]
    pub no_follow: bool,

    /// Verbose: time each pass and the arming, and explain probe placement.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Options for `ptap run`.
#[derive(Args, Debug)]
pub struct RunModuleOpts {
    /// The probe module (NAME.o) written by `ptap -p4 -m NAME`.
    pub module: std::path::PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Output format: `text` (the default) or `json` (see docs/output.md).
    #[arg(
        short = 'f',
        long = "format",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub format: OutputFormat,
}

/// Options for running a script.
#[derive(Args, Debug, Default)]
pub struct ScriptOpts {
    /// Script text to run (instead of a script file).
    #[arg(short = 'e', value_name = "TEXT")]
    pub expr: Option<String>,

    /// Interactive: the REPL (also plain `ptap` with a terminal and no script).
    #[arg(short = 'i')]
    pub interactive: bool,

    /// Stop after pass N: 1 = parse (print the tree), 2 = elaborate (print types),
    /// 3 = print Cranelift IR, 4 = write the probe module.
    #[arg(short = 'p', value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub pass: Option<u8>,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Set a limit or macro: MAXACTION, MAXSTRINGLEN, MAXMAPENTRIES, MAXERRORS, ...
    #[arg(short = 'D', value_name = "NAME=VAL")]
    pub defines: Vec<String>,

    /// Guru mode: allow writing registers and target memory.
    #[arg(short = 'g')]
    pub guru: bool,

    /// Output format: `text` (the default) or `json` (one JSON object per
    /// line for every record, error and summary; see docs/output.md).
    #[arg(
        short = 'f',
        long = "format",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub format: OutputFormat,

    /// Serve the script's globals to Prometheus at http://ADDR/metrics while
    /// the session runs (ADDR is HOST:PORT, e.g. 127.0.0.1:9464; see docs/fleet.md).
    #[arg(long = "serve", value_name = "ADDR")]
    pub serve: Option<String>,
    /// List the functions POINT selects (`kprobe(f*)`, `"ns::*"`, `sys_*`) in
    /// the program of -c CMD, -x PID, or the path given as the first argument.
    #[arg(short = 'l', value_name = "POINT", conflicts_with = "list_vars")]
    pub list: Option<String>,

    /// As -l, with each function's variables and their types (from its debug information).
    #[arg(short = 'L', value_name = "POINT")]
    pub list_vars: Option<String>,

    /// Module name for -p4.
    #[arg(short = 'm', value_name = "NAME")]
    pub module: Option<String>,

    /// The script file (`-` for stdin) followed by script arguments ($1, @1, ...).
    /// With -e, every positional is a script argument. Options may follow the
    /// script (as with GNU getopt); put script arguments that start with `-`
    /// after `--` (negative numbers need not).
    #[arg(value_name = "SCRIPT_AND_ARGS", allow_negative_numbers = true)]
    pub rest: Vec<String>,
}

/// How a session prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Options for `ptap load`.
#[derive(Args, Debug)]
pub struct LoadOpts {
    /// The probe module: a shared object built against runtime/include/ptap/kprobes.h.
    pub module: std::path::PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,
}

/// `-T SECS`: a number of seconds, 0 or more, that a `Duration` holds
/// (checked here once, so that no session loop can panic on `inf` or `-1`).
fn parse_secs(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if t >= 0.0 && std::time::Duration::try_from_secs_f64(t).is_ok() {
        Ok(t)
    } else {
        Err(format!("`{s}`: give a number of seconds, 0 or more"))
    }
}

/// When ptap started (for -v: time to armed probes with -x).
pub static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    START.get_or_init(std::time::Instant::now);
    ptap_compiler::codegen::tvars::set_library_finder(points::library_file);
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Load(opts)) => load::run(opts),
        Some(Command::Run(opts)) => driver::run_module(opts),
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "ptap", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            let mut out = std::io::stdout().lock();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ptap: cannot write the manual page: {e}");
                    ExitCode::from(1)
                }
            }
        }
        None if cli.script.list.is_some() || cli.script.list_vars.is_some() => {
            listing::run(&cli.script)
        }
        None if repl::wanted(&cli.script) => repl::run(&cli.script),
        None => driver::run(&cli.script),
    }
}
