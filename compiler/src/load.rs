//! `ptap load MODULE.so -c CMD`: run a C probe module inside a target.
use std::process::ExitCode;

use crate::LoadOpts;

pub fn run(_opts: &LoadOpts) -> ExitCode {
    eprintln!("ptap: `load` is not built yet");
    ExitCode::from(1)
}
