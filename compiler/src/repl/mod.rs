//! `ptap -i`: the REPL. A session whose module set changes while its
//! processes run: each typed entry is compiled to a module of its own and
//! loaded into ptap (begin/end/timer probes) and into every process of the
//! session (through the module table of `ptap_rt_core::script::control`);
//! deleting a probe takes it out of every process with live unpatching.
//!
//! Files: `book.rs` (the session's text and the compilation of an entry),
//! `live.rs` (the session mapping, target and modules), `commands.rs`
//! (`:list`, `:delete`, ...), `editor.rs` (the terminal line editor).
//!
//! With stdin not a terminal, lines are read in order without a prompt
//! (scriptable: `ptap -i -c CMD < session.txt`).

mod book;
mod commands;
mod editor;
mod live;

use anyhow::{anyhow, Context};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use book::Book;
use live::Live;

use crate::ScriptOpts;

/// Where output goes: probe and command output to stdout (or -o FILE),
/// messages to stderr; in the terminal both through the line editor's
/// printer, so that they appear above the line being edited.
pub struct Printer {
    file: Option<Box<dyn Write + Send>>,
    ext: Option<Box<dyn FnMut(String) + Send>>,
    /// A line is being edited: print through `ext` (above it); else
    /// directly, in order with the prompt.
    editing: Arc<std::sync::atomic::AtomicBool>,
}

impl Printer {
    /// The editor's printer, while a line is being edited.
    fn ext(&mut self) -> Option<&mut Box<dyn FnMut(String) + Send>> {
        if self.editing.load(std::sync::atomic::Ordering::SeqCst) {
            self.ext.as_mut()
        } else {
            None
        }
    }

    fn out(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(s.as_bytes());
            let _ = f.flush();
        } else if let Some(e) = self.ext() {
            e(s.to_string());
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }

    fn err(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(e) = self.ext() {
            e(s.to_string());
        } else {
            let _ = std::io::stderr().write_all(s.as_bytes());
        }
    }
}

/// Words Tab completes (shared with the editor).
#[derive(Default)]
pub struct Words {
    pub globals: Vec<String>,
    pub functions: Vec<String>,
    /// (object label, function names) of the target's objects, the
    /// executable first.
    pub symbols: Vec<(String, Vec<String>)>,
}

/// What to do after a line.
#[derive(PartialEq)]
enum Flow {
    Go,
    Quit,
}

pub struct Repl {
    live: Arc<Mutex<Live>>,
    book: Book,
    printer: Arc<Mutex<Printer>>,
    words: Arc<Mutex<Words>>,
    images: Option<crate::points::Images>,
    exe: Option<PathBuf>,
    verbose: u8,
    no_follow: bool,
    timeout: Option<f64>,
    /// `-f json`: tables of commands (`:list`, `:help`) go to stderr, so
    /// that stdout holds only JSON lines.
    json: bool,
    /// `--serve`: what a scrape reads, updated as the session changes.
    serve: Option<Arc<RwLock<crate::serve::View>>>,
    /// The session has had a target (-c, -x, :run, :attach): probes typed
    /// from then on go to processes, not system-wide.
    had_target: bool,
}

/// Can a module with these points be armed system-wide now? (no, why not):
/// a function point must name its file, and perf events need privileges.
fn wide_choice(meta: &ptap_rt_core::script::meta::Meta) -> (bool, Option<String>) {
    use ptap_rt_core::script::meta::TargetSpec;
    let no_file = meta.probes.iter().flat_map(|p| &p.points).find(|q| {
        matches!(
            q.target,
            TargetSpec::Symbol { module: None, .. }
                | TargetSpec::Pattern { module: None, .. }
                | TargetSpec::Address(_)
        )
    });
    if let Some(q) = no_file {
        return (
            false,
            Some(format!(
                "{} names no file, so it is not armed system-wide (name it: \"/path/prog\":name, libc:name)",
                q.text
            )),
        );
    }
    if !crate::systemwide::privileged() {
        return (
            false,
            Some("system-wide probes need root or CAP_PERFMON".to_string()),
        );
    }
    (true, None)
}

/// The `script` label of a REPL session's metrics.
const SCRIPT_LABEL: &str = "repl";

fn fail(msg: &str) -> ExitCode {
    eprintln!("ptap: {msg}");
    ExitCode::from(1)
}

/// Is this `ptap` with no script and a terminal on stdin (the REPL)?
pub fn wanted(opts: &ScriptOpts) -> bool {
    opts.interactive
        || (opts.expr.is_none()
            && opts.rest.is_empty()
            && opts.pass.is_none()
            && std::io::stdin().is_terminal())
}

pub fn run(opts: &ScriptOpts) -> ExitCode {
    if opts.expr.is_some() || opts.pass.is_some() || opts.module.is_some() {
        return fail("-i does not take -e, -p or -m: type the script at the prompt, or give a file to start from (ptap -i FILE)");
    }
    match run_inner(opts) {
        Ok(c) => c,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn run_inner(opts: &ScriptOpts) -> anyhow::Result<ExitCode> {
    let mb = match std::env::var("PTAP_REPL_GLOBALS_MB") {
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|&n| (1..=65536).contains(&n))
            .with_context(|| {
                format!("PTAP_REPL_GLOBALS_MB={v}: give a number of MiB between 1 and 65536")
            })?,
        Err(_) => live::DEFAULT_GLOBALS_MB,
    };
    if let Some(addr) = &opts.serve {
        crate::serve::check_addr(addr)?;
    }
    if let Some(pid) = opts.target.pid {
        crate::inject::check_pid(pid)?;
    }
    let json = opts.format == crate::OutputFormat::Json;
    let live = Live::new(mb, opts.target.pid, json)?;
    let lang = ptap_lang::Options {
        guru: opts.guru,
        args: Vec::new(),
        defines: opts.defines.clone(),
    };
    let book = Book::new(lang, live.area_size(), live.globals_start());
    let file: Option<Box<dyn Write + Send>> = match &opts.target.output {
        Some(p) => Some(Box::new(
            std::fs::File::create(p).with_context(|| format!("{}", p.display()))?,
        )),
        None => None,
    };
    let mut repl = Repl {
        live: Arc::new(Mutex::new(live)),
        book,
        printer: Arc::new(Mutex::new(Printer {
            file,
            ext: None,
            editing: Arc::default(),
        })),
        words: Arc::new(Mutex::new(Words::default())),
        images: None,
        exe: None,
        verbose: opts.target.verbose,
        no_follow: opts.target.no_follow,
        timeout: opts.target.timeout,
        json,
        serve: None,
        had_target: false,
    };
    // Declared after `repl`: stopped before the session is unmapped.
    let _server = match &opts.serve {
        Some(addr) => {
            let view = Arc::new(RwLock::new(crate::serve::View {
                plan: ptap_compiler::metrics::Plan {
                    metrics: Vec::new(),
                    script: SCRIPT_LABEL.into(),
                },
                meta: repl.book.known.clone(),
                // Until -c / -x / :run / :attach give one, probes go to
                // every process.
                target: "system-wide".into(),
            }));
            let g = repl
                .live
                .lock()
                .map_err(|_| anyhow!("the session is broken"))?
                .g;
            let server = crate::serve::start_shared(addr, view.clone(), g)?;
            repl.say(&format!(
                "ptap: serving metrics at http://{}/metrics\n",
                server.addr
            ));
            repl.serve = Some(view);
            Some(server)
        }
        None => None,
    };
    crate::event_loop::install_interrupt_handlers();
    let terminal = std::io::stdin().is_terminal();
    let echo = terminal.then(editor::QuietBetweenPrompts::new);
    if let Some(cmd) = &opts.target.cmd {
        repl.start_cmd(cmd)?;
    }
    if let Some(pid) = opts.target.pid {
        repl.attach(pid)?;
    }
    repl.flush();
    if let Some(f) = opts.rest.first() {
        if repl.command(&format!(":load {f}")) == Flow::Quit {
            return Ok(repl.quit());
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pumped, pump_done) = std::sync::mpsc::channel::<()>();
    {
        let live = repl.live.clone();
        let printer = repl.printer.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("ptap-repl-pump".into())
            .spawn(move || {
                pump_loop(&live, &printer, &stop, !terminal);
                let _ = pumped.send(());
            })
            .context("cannot start a thread")?;
    }
    let code = if let Some(echo) = echo {
        editor::run(&mut repl, echo)
    } else {
        repl.plain_loop()
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    // The session has ended and printed its report: wait for the pump a
    // bounded time only, so that a pump stuck in a read can never keep the
    // process from exiting (it ends with the process).
    let _ = pump_done.recv_timeout(Duration::from_secs(2));
    Ok(code)
}

/// The background side: the session loop's rounds ([`Live::pump`]). In
/// the non-terminal mode, Ctrl-C or exit() ends the session from here (the
/// main thread may be blocked reading stdin).
fn pump_loop(
    live: &Arc<Mutex<Live>>,
    printer: &Arc<Mutex<Printer>>,
    stop: &std::sync::atomic::AtomicBool,
    plain: bool,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let (out, err, end) = {
            let Ok(mut l) = live.lock() else { return };
            if l.finished.is_some() {
                return; // the session ended (:quit): nothing more to drain
            }
            l.pump();
            let (o, e) = l.take_output();
            (o, e, plain && l.stop.is_some())
        };
        if let Ok(mut p) = printer.lock() {
            p.out(&out);
            p.err(&err);
        }
        if end {
            // Ends the process: the same steps as :quit.
            let code = finish(live, printer);
            std::process::exit(code);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Detach a running target, run the end probes, print the globals written
/// but never read and the summary. Returns the exit status.
fn finish(live: &Arc<Mutex<Live>>, printer: &Arc<Mutex<Printer>>) -> i32 {
    let Ok(mut l) = live.lock() else { return 1 };
    if let Some(code) = l.finished {
        return code; // ended already (exit(), Ctrl-C)
    }
    let mut still = None;
    if let Some(t) = l.target.as_mut() {
        if matches!(t.try_wait(), Ok(None)) {
            still = Some(t.id());
        }
    }
    if still.is_some() || !l.pids().is_empty() {
        l.detach();
    }
    l.finish();
    l.report_end();
    if let Some(pid) = still {
        l.say(&format!(
            "ptap: detached from pid {pid}; it keeps running\n"
        ));
    }
    let code = i32::from(l.errors() > 0);
    l.finished = Some(code);
    let (o, e) = l.take_output();
    drop(l);
    if let Ok(mut p) = printer.lock() {
        p.out(&o);
        p.err(&e);
    }
    code
}

impl Repl {
    /// Print what the session collected.
    fn flush(&self) {
        let (o, e) = match self.live.lock() {
            Ok(mut l) => {
                l.drain();
                l.take_output()
            }
            Err(_) => return,
        };
        if let Ok(mut p) = self.printer.lock() {
            p.out(&o);
            p.err(&e);
        }
    }

    fn say(&self, s: &str) {
        if let Ok(mut p) = self.printer.lock() {
            p.err(s);
        }
    }

    fn print(&self, s: &str) {
        if let Ok(mut p) = self.printer.lock() {
            p.out(s);
        }
    }

    /// Lines from stdin, in order, with no prompt: an entry continues over
    /// lines until its brackets balance.
    fn plain_loop(&mut self) -> ExitCode {
        let stdin = std::io::stdin();
        let mut pending = String::new();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if pending.is_empty() && line.trim().is_empty() {
                continue;
            }
            pending.push_str(&line);
            pending.push('\n');
            if !pending.trim_start().starts_with(':') && book::needs_more(&pending) {
                continue;
            }
            let text = std::mem::take(&mut pending);
            if self.line(&text) == Flow::Quit {
                break;
            }
        }
        if !pending.trim().is_empty() {
            self.say("ptap: the input ended inside an unfinished entry; it was not run\n");
        }
        self.quit()
    }

    /// End the session (`:quit`, end of input).
    fn quit(&mut self) -> ExitCode {
        let code = finish(&self.live, &self.printer);
        ExitCode::from(code as u8)
    }

    /// One entry: a command or language.
    fn line(&mut self, text: &str) -> Flow {
        let t = text.trim();
        if t.is_empty() {
            return Flow::Go;
        }
        let flow = if t.starts_with(':') {
            self.command(t)
        } else {
            self.submit(text, None);
            Flow::Go
        };
        self.flush();
        let exit = self.live.lock().map(|l| l.stop.is_some()).unwrap_or(false);
        if exit || crate::event_loop::interrupted() {
            return Flow::Quit;
        }
        flow
    }

    /// Compile and run or arm `text`. `name`: how diagnostics name it (a
    /// loaded file's path), else `<input N>`. Returns whether it was accepted.
    fn submit(&mut self, text: &str, name: Option<&str>) -> bool {
        let t0 = Instant::now();
        // A bare array or statistics global: its entries, as `:globals` shows them.
        let word = text.trim();
        if let Some(g) = self.book.known.globals.iter().find(|g| g.name == word) {
            use ptap_rt_core::script::meta::GlobalKind;
            if matches!(g.kind, GlobalKind::Array | GlobalKind::Stats) {
                let mut m = self.book.known.clone();
                m.globals.retain(|x| x.name == word);
                let text = self
                    .live
                    .lock()
                    .map(|l| l.globals_text(&m))
                    .unwrap_or_default();
                self.print(&text);
                return true;
            }
        }
        let name = name.map_or_else(|| self.book.next_name(), str::to_string);
        let unit = match self.book.compile(&name, text, self.exe.as_deref()) {
            Ok(book::Compiled::Unit(u)) => u,
            Ok(book::Compiled::Pending) => {
                self.book.entries.push(book::Entry {
                    name,
                    text: text.to_string(),
                    module: None,
                    ghost: false,
                });
                self.update_words();
                return true;
            }
            Err(diags) => {
                self.say(&diags.0);
                return false;
            }
        };
        let compiled = t0.elapsed();
        if unit.in_target() {
            if let Some(images) = &self.images {
                if let Err(e) = images.resolve(&unit.meta) {
                    self.say(&format!("ptap: {e:#}\n"));
                    return false;
                }
            }
        }
        let Ok(mut l) = self.live.lock() else {
            return false;
        };
        for &i in &unit.new_globals {
            ptap_compiler::codegen::host::init_global(&l.g, &unit.meta, &unit.meta.globals[i]);
        }
        let base = self.book.commit(&unit);
        l.set_render(self.book.render_meta(), self.book.base.formats.clone());
        if unit.eval {
            if let Err(e) = l.eval(&unit.object, base) {
                l.say(&format!("ptap: {e:#}\n"));
            }
            drop(l);
            self.book.add_ghost(&name, &unit.source);
            self.refresh_metrics();
            return true;
        }
        if !unit.has_probes() {
            drop(l);
            self.book.entries.push(book::Entry {
                name,
                text: unit.text.clone(),
                module: None,
                ghost: false,
            });
            self.update_words();
            return true;
        }
        let in_target = unit.in_target();
        // No target yet (`ptap -i` alone): system-wide, where it can be.
        let (wide, not_wide) = if in_target && !self.had_target {
            wide_choice(&unit.meta)
        } else {
            (false, None)
        };
        let id = match l.add_module(&unit.object, &unit.meta, base, in_target, wide) {
            Ok(id) => id,
            Err(e) => {
                l.say(&format!("ptap: {e:#}\n"));
                return false;
            }
        };
        let armed = t0.elapsed();
        l.run_in_ptap(id, ptap_compiler::codegen::host::Which::Begin);
        let pids = l.pids();
        let rows = l.rows();
        drop(l);
        self.book.entries.push(book::Entry {
            name,
            text: unit.text.clone(),
            module: Some(id),
            ghost: false,
        });
        self.update_words();
        if let Some(r) = rows.iter().find(|r| r.id == id) {
            let wher = if !in_target {
                "runs in ptap".to_string()
            } else if wide {
                format!("armed system-wide (every process): {}", r.placement)
            } else if pids.is_empty() {
                let why = not_wide.map(|w| format!("; {w}")).unwrap_or_default();
                format!("armed when a process joins (:run CMD, :attach PID){why}")
            } else {
                format!("armed in pid {pids:?}: {}", r.placement)
            };
            self.say(&format!("probe {id}: {} {wher}\n", r.points));
        }
        if self.verbose > 0 {
            self.say(&format!(
                "ptap: probe {id}: compiled in {:.2?}, armed {:.2?} after the entry was submitted\n",
                compiled, armed
            ));
        }
        true
    }

    fn update_words(&self) {
        if let Ok(mut w) = self.words.lock() {
            w.globals = self.book.global_names();
            w.functions = self.book.function_names();
        }
        self.refresh_report();
    }

    /// The globals the end of the session prints are those the session,
    /// run as a script (`:save`), would print: written and never read there.
    fn refresh_report(&self) {
        let Ok(mut l) = self.live.lock() else { return };
        let off: Vec<u32> = l.modules.iter().filter(|m| !m.on).map(|m| m.id).collect();
        let text = self.book.script(|id| off.contains(&id));
        let flags = ptap_lang::frontend("<session>", &text, &self.book.opts)
            .map(|c| c.globals)
            .unwrap_or_default();
        let mut m = self.book.known.clone();
        for g in m.globals.iter_mut() {
            let f = flags.iter().find(|f| f.name == g.name);
            g.written = f.is_some_and(|f| f.written);
            g.read = f.is_some_and(|f| f.read);
        }
        l.globals_meta = m;
        drop(l);
        self.refresh_metrics();
    }

    /// `--serve`: the metrics of the session's globals as they are now
    /// (counter or gauge from everything typed, the evaluated statements
    /// included: `n = 0` typed once makes `n` a gauge).
    fn refresh_metrics(&self) {
        let Some(view) = &self.serve else { return };
        let Some(checked) = self.book.checked() else {
            return;
        };
        let plan = ptap_compiler::metrics::Plan::new(&checked, &self.book.known, SCRIPT_LABEL);
        if let Ok(mut v) = view.write() {
            v.plan = plan;
            v.meta = self.book.known.clone();
        }
    }

    /// `--serve`: the `target` label of `ptap_session_info`.
    fn serve_target(&self, target: String) {
        if let Some(view) = &self.serve {
            if let Ok(mut v) = view.write() {
                v.target = target;
            }
        }
    }

    /// A command's table (`:list`, `:help`): stdout, or stderr with `-f
    /// json` (stdout then holds only JSON lines).
    fn table(&self, s: &str) {
        if self.json {
            self.say(s);
        } else {
            self.print(s);
        }
    }

    /// Start CMD with the runtime preloaded: it applies the session's
    /// modules before `main`.
    fn start_cmd(&mut self, cmd: &str) -> anyhow::Result<()> {
        if let Some(pid) = self.target_pid() {
            return Err(anyhow!(
                "pid {pid} is the target already: :detach first (or wait for it to exit)"
            ));
        }
        let argv = crate::load::split_command(cmd)?;
        let exe = crate::run::resolve_exe(&argv[0])
            .with_context(|| format!("cannot find `{}` (searched PATH)", argv[0]))?;
        let images = crate::points::Images::load(&exe)?;
        self.set_images(images, exe);
        let mut l = self
            .live
            .lock()
            .map_err(|_| anyhow!("the session is broken"))?;
        let mut env = vec![(
            ptap_rt_core::script::attach::ENV_TARGET,
            std::ffi::OsStr::new("1"),
        )];
        if self.no_follow {
            env.push((
                ptap_rt_core::lifecycle::ENV_NO_FOLLOW,
                std::ffi::OsStr::new("1"),
            ));
            env.push((ptap_rt_core::syscall::ENV_FOLLOW, std::ffi::OsStr::new("0")));
        }
        self.had_target = true;
        let runtime = l.runtime();
        let child = crate::load::spawn_with(&argv, &runtime, &l.owned, &env, self.verbose, true)?;
        let pid = child.id() as i32;
        ptap_compiler::codegen::host::set_target(&l.g, pid);
        l.target = Some(crate::target::Target::Child(child));
        l.say(&format!("ptap: started {cmd} (pid {pid})\n"));
        l.wait_joined(pid);
        drop(l);
        self.serve_target(cmd.to_string());
        Ok(())
    }

    /// Load the runtime into the running process `pid`.
    fn attach(&mut self, pid: i32) -> anyhow::Result<()> {
        if let Some(p) = self.target_pid() {
            return Err(anyhow!("pid {p} is the target already: :detach first"));
        }
        crate::inject::check_pid(pid)?;
        let images = crate::points::Images::from_pid(pid)?;
        let exe = std::fs::read_link(format!("{}/exe", crate::inject::proc_of(pid)))
            .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
        self.set_images(images, exe);
        // The runtime starts with a module that probes nothing in the
        // process (an end probe is ptap's); the table brings the rest.
        let empty = ptap_lang::frontend("<empty>", "probe end {}", &self.book.opts)
            .map_err(|f| anyhow!(f.render()))
            .and_then(|c| ptap_compiler::emit_object(&c).map_err(|e| anyhow!(e.to_string())))?;
        let mut l = self
            .live
            .lock()
            .map_err(|_| anyhow!("the session is broken"))?;
        self.had_target = true;
        let path = l.write_module("repl-0.o", &empty)?;
        ptap_compiler::codegen::host::set_target(&l.g, pid);
        let snap = l
            .snapshot()
            .context("the session has no runtime snapshot")?;
        let a = crate::load::attach_to(
            pid,
            snap,
            &l.owned,
            &path,
            &[(ptap_rt_core::script::attach::ENV_TARGET, "1")],
            Err("the REPL does not load a second copy of the runtime"),
            self.verbose,
        )?;
        l.target = Some(crate::target::Target::Attached(a));
        l.say(&format!("ptap: attached to pid {pid}\n"));
        l.wait_joined(pid);
        drop(l);
        self.serve_target(format!("pid {pid}"));
        Ok(())
    }

    fn set_images(&mut self, images: crate::points::Images, exe: PathBuf) {
        if let Ok(mut w) = self.words.lock() {
            w.symbols = images.function_names();
        }
        self.images = Some(images);
        self.exe = Some(exe);
    }

    fn target_pid(&self) -> Option<i32> {
        let mut l = self.live.lock().ok()?;
        l.pump();
        l.target.as_ref().map(|t| t.id())
    }
}
