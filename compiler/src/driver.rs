//! The script pipeline: source -> parse (-p1) -> check (-p2) -> (compile -> run).
//!
//! Every bad input ends with diagnostics on stderr and exit status 1.
use std::io::Read;
use std::process::ExitCode;

use ptap_lang::Options;

use crate::ScriptOpts;

/// The script text, how diagnostics name it, and the script arguments.
struct Input {
    name: String,
    text: String,
    args: Vec<String>,
}

fn input(opts: &ScriptOpts) -> Result<Input, String> {
    if let Some(text) = &opts.expr {
        return Ok(Input {
            name: "<command line>".into(),
            text: text.clone(),
            args: opts.rest.clone(),
        });
    }
    let Some((path, args)) = opts.rest.split_first() else {
        return Err("no script: give SCRIPT.pt, `-e TEXT` or `-` (stdin); see --help".into());
    };
    let args = args.to_vec();
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(Input {
            name: "<stdin>".into(),
            text,
            args,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8 text"))?;
    Ok(Input {
        name: path.clone(),
        text,
        args,
    })
}

pub fn run(opts: &ScriptOpts) -> ExitCode {
    let input = match input(opts) {
        Ok(i) => i,
        Err(msg) => {
            eprintln!("ptap: {msg}");
            return ExitCode::from(1);
        }
    };
    let lang_opts = Options {
        guru: opts.guru,
        args: input.args.clone(),
        defines: opts.defines.clone(),
    };
    let result = match opts.pass {
        Some(1) => ptap_lang::render_p1(&input.name, &input.text),
        Some(2) => ptap_lang::render_p2(&input.name, &input.text, &lang_opts),
        _ => match ptap_lang::frontend(&input.name, &input.text, &lang_opts) {
            Ok(_checked) => {
                eprintln!("ptap: code generation is not implemented yet (pass 3)");
                return ExitCode::from(1);
            }
            Err(f) => Err(f.render()),
        },
    };
    match result {
        Ok(text) => {
            if let Err(e) = write_output(opts, &text) {
                eprintln!("ptap: {e}");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            ExitCode::from(1)
        }
    }
}

fn write_output(opts: &ScriptOpts, text: &str) -> Result<(), String> {
    use std::io::Write;
    match &opts.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (ptap -p2 x | head) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}
