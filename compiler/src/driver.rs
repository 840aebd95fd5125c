//! The script pipeline: source -> parse -> check -> (compile -> run).
use std::process::ExitCode;

use crate::ScriptOpts;

pub fn run(_opts: &ScriptOpts) -> ExitCode {
    eprintln!("ptap: the script front end is not built yet");
    ExitCode::from(1)
}
