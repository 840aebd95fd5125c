//! The terminal side of the REPL, on rustyline: history in the user's state
//! directory, Ctrl-R search (rustyline's own), multi-line entries until the
//! brackets balance (a validator), Tab completion of commands, keywords,
//! builtins, globals, functions and the target's function names, and
//! probe output printed above the line being edited (rustyline's external
//! printer).

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, ExternalPrinter, Helper};

use super::{Flow, Repl, Words};

const KEYWORDS: &[&str] = &[
    "global",
    "probe",
    "function",
    "if",
    "else",
    "while",
    "for",
    "foreach",
    "in",
    "limit",
    "break",
    "continue",
    "next",
    "return",
    "delete",
    "try",
    "catch",
    "kprobe",
    "kretprobe",
    "jprobe",
    "begin",
    "end",
    "timer",
    "string",
    "long",
];

/// The prompt, and the continuation prompt of a multi-line entry.
const PROMPT: &str = "ptap> ";

struct PtapHelper {
    words: Arc<Mutex<Words>>,
}

/// The history file: `$XDG_STATE_HOME/ptap/history`, else
/// `~/.local/state/ptap/history`.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("ptap").join("history"))
}

/// The word being completed: its start, and whether it is inside a
/// probe point's parentheses (`kprobe(wo`, `kretprobe(libc:mal`).
fn word_at(line: &str, pos: usize) -> (usize, bool) {
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '.' || c == '@'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let head = before[..start].trim_end();
    let in_point = ["kprobe(", "kretprobe(", "jprobe("]
        .iter()
        .any(|p| head.ends_with(p));
    (start, in_point)
}

/// Candidates for `word` (pure: the completion logic, tested below).
pub fn candidates(words: &Words, line: &str, pos: usize) -> (usize, Vec<String>) {
    let (start, in_point) = word_at(line, pos);
    let word = &line[start..pos];
    let mut out: Vec<String> = Vec::new();
    if line.trim_start().starts_with(':') && !line[..pos].contains(char::is_whitespace) {
        let colon = line.find(':').unwrap_or(0);
        let w = &line[colon + 1..pos];
        for (name, _, _, _) in super::commands::COMMANDS {
            if name.starts_with(w) {
                out.push(format!(":{name}"));
            }
        }
        return (colon, out);
    }
    if in_point {
        // `lib:prefix`: the functions of the objects `lib` names.
        if let Some((lib, pre)) = word.split_once(':') {
            let spec = Some(ptap_rt_core::script::meta::ModuleSpec::Name(
                lib.to_string(),
            ));
            for (label, names) in &words.symbols {
                if ptap_rt_core::script::attach::module_matches(label, &spec) {
                    out.extend(
                        names
                            .iter()
                            .filter(|n| n.starts_with(pre))
                            .map(|n| format!("{lib}:{n}")),
                    );
                }
            }
        } else if let Some((_, names)) = words.symbols.first() {
            out.extend(names.iter().filter(|n| n.starts_with(word)).cloned());
            if out.is_empty() {
                for (_, names) in &words.symbols[1..] {
                    out.extend(names.iter().filter(|n| n.starts_with(word)).cloned());
                }
            }
        }
        if let Some(pre) = word.strip_prefix("sys_") {
            out.extend(
                (0..1024)
                    .filter_map(ptap_lang::syscalls::name)
                    .filter(|n| n.starts_with(pre))
                    .map(|n| format!("sys_{n}")),
            );
        }
    } else if let Some(at) = word.strip_prefix('@') {
        out.extend(
            ptap_lang::builtins::AT_FUNCTIONS
                .iter()
                .filter(|n| n.starts_with(at))
                .map(|n| format!("@{n}")),
        );
    } else if !word.is_empty() {
        let all = KEYWORDS
            .iter()
            .map(|s| s.to_string())
            .chain(
                ptap_lang::builtins::BUILTINS
                    .iter()
                    .map(|b| b.name.to_string()),
            )
            .chain(words.globals.iter().cloned())
            .chain(words.functions.iter().cloned());
        out.extend(all.filter(|n| n.starts_with(word)));
    }
    out.sort();
    out.dedup();
    out.truncate(500);
    (start, out)
}

impl Completer for PtapHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let Ok(w) = self.words.lock() else {
            return Ok((pos, Vec::new()));
        };
        let (start, c) = candidates(&w, line, pos);
        Ok((
            start,
            c.into_iter()
                .map(|s| Pair {
                    display: s.clone(),
                    replacement: s,
                })
                .collect(),
        ))
    }
}

impl Hinter for PtapHelper {
    type Hint = String;
}

impl Highlighter for PtapHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for PtapHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if !input.trim_start().starts_with(':') && super::book::needs_more(input) {
            return Ok(ValidationResult::Incomplete);
        }
        Ok(ValidationResult::Valid(None))
    }
}

impl Helper for PtapHelper {}

/// The terminal without echo between two prompts, its own settings back
/// when dropped. Keys typed ahead while ptap runs a line stay in the
/// terminal's input queue (rustyline's `buffer-redux` feature keeps what it
/// read past a line for the next one); without echo the kernel does not
/// print them at the output's place, and the editor shows them at the
/// prompt when it reads them.
pub struct QuietBetweenPrompts {
    saved: Option<nix::sys::termios::Termios>,
}

impl QuietBetweenPrompts {
    /// Quiet from now on (keys typed while ptap starts its target too).
    pub fn new() -> QuietBetweenPrompts {
        let q = QuietBetweenPrompts {
            saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        };
        q.quiet();
        q
    }

    /// Stop echoing, and keep keys as typed (no line discipline: a line
    /// typed ahead is not held back by the kernel as an unfinished
    /// canonical line); signals (Ctrl-C) stay on. The line editor turns
    /// its raw mode on and off over this.
    fn quiet(&self) {
        use nix::sys::termios::{
            tcsetattr, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices,
        };
        if let Some(t) = &self.saved {
            let mut t = t.clone();
            t.local_flags.remove(LocalFlags::ECHO | LocalFlags::ICANON);
            t.input_flags.remove(InputFlags::ICRNL);
            t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
            t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
        }
    }
}

impl Drop for QuietBetweenPrompts {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// The terminal loop. Ctrl-C clears the line, Ctrl-D (on an empty line)
/// or `:quit` ends the session.
pub fn run(repl: &mut Repl, echo: QuietBetweenPrompts) -> ExitCode {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .max_history_size(10_000)
        .map(|b| b.build())
        .unwrap_or_default();
    let mut rl: Editor<PtapHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            repl.say(&format!("ptap: cannot start the line editor: {e}\n"));
            return repl.plain_loop();
        }
    };
    rl.set_helper(Some(PtapHelper {
        words: repl.words.clone(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    if let Ok(mut p) = rl.create_external_printer() {
        // Used only while a line is edited (else output is written
        // directly, in order with the prompt). rustyline's printer can
        // still block (its queue holds one message, read while a line is
        // edited): a thread of its own forwards to it, so that whoever
        // prints never waits with the printer's lock held (the main thread
        // would wait for that lock before editing again).
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let forward = std::thread::Builder::new()
            .name("ptap-repl-print".into())
            .spawn(move || {
                for s in rx {
                    let _ = p.print(s);
                }
            });
        if forward.is_ok() {
            if let Ok(mut pr) = repl.printer.lock() {
                pr.ext = Some(Box::new(move |s: String| {
                    let _ = tx.send(s);
                }));
            }
        }
    }
    repl.say("ptap REPL: type :help for the commands, :quit or Ctrl-D to end\n");
    let editing = repl
        .printer
        .lock()
        .map(|p| p.editing.clone())
        .unwrap_or_default();
    loop {
        editing.store(true, std::sync::atomic::Ordering::SeqCst);
        let read = rl.readline(PROMPT);
        editing.store(false, std::sync::atomic::Ordering::SeqCst);
        echo.quiet();
        match read {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                }
                if repl.line(&line) == Flow::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                repl.say(&format!("ptap: {e}\n"));
                break;
            }
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.save_history(h);
    }
    // From here on, print directly (the editor is gone).
    if let Ok(mut pr) = repl.printer.lock() {
        pr.ext = None;
    }
    drop(echo);
    repl.quit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> Words {
        Words {
            globals: vec!["count".into(), "hits".into()],
            functions: vec!["double".into()],
            symbols: vec![
                (
                    "/t/hot".into(),
                    vec!["work".into(), "bump".into(), "main".into()],
                ),
                (
                    "libc.so.6".into(),
                    vec!["malloc".into(), "malloc_trim".into(), "free".into()],
                ),
            ],
        }
    }

    #[test]
    fn completes_points_keywords_globals_and_commands() {
        let w = words();
        let l = "probe kprobe(wo";
        assert_eq!(candidates(&w, l, l.len()), (13, vec!["work".to_string()]));
        let l = "probe kretprobe(libc:mal";
        assert_eq!(
            candidates(&w, l, l.len()).1,
            vec!["libc:malloc".to_string(), "libc:malloc_trim".to_string()]
        );
        let l = "print(cou";
        assert_eq!(candidates(&w, l, l.len()).1, vec!["count".to_string()]);
        let l = "glo";
        assert_eq!(candidates(&w, l, l.len()).1, vec!["global".to_string()]);
        let l = ":de";
        assert_eq!(
            candidates(&w, l, l.len()),
            (0, vec![":delete".to_string(), ":detach".to_string()])
        );
        let l = "@cou";
        assert_eq!(candidates(&w, l, l.len()).1, vec!["@count".to_string()]);
    }
}
