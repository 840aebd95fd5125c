//! The REPL's commands: a line that starts with `:`.

use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};

use super::{Flow, Repl};

/// (name, short form, arguments, what it does)
pub const COMMANDS: &[(&str, &str, &str, &str)] = &[
    (
        "list",
        "l",
        "",
        "list the probes: id, points, placement (jump/trap/syscall), hits",
    ),
    (
        "delete",
        "d",
        "ID",
        "delete a probe: taken out of every process, code restored",
    ),
    (
        "disable",
        "",
        "ID",
        "take a probe out of the processes, keep it for :enable",
    ),
    ("enable", "", "ID", "arm a disabled probe again"),
    ("globals", "g", "", "show every global and its value"),
    (
        "run",
        "",
        "CMD",
        "start CMD (split like a shell would) with the session's probes",
    ),
    (
        "attach",
        "",
        "PID",
        "load the runtime into the running process PID",
    ),
    (
        "detach",
        "",
        "",
        "take the probes out of the target; it goes on",
    ),
    (
        "wait",
        "",
        "",
        "wait until the target exits (-T bounds the wait)",
    ),
    (
        "save",
        "",
        "FILE",
        "write the session's globals, functions and enabled probes as a script",
    ),
    (
        "load",
        "",
        "FILE",
        "run a script file's declarations and probes in the session",
    ),
    ("help", "h", "", "this list"),
    (
        "quit",
        "q",
        "",
        "end: run the end probes, print the globals and the summary",
    ),
];

pub fn help_text() -> String {
    let mut s = String::from(
        "Type declarations (global, probe, function) to add them to the session, or an\n\
         expression or statement to run it at once. An entry continues over lines until\n\
         its brackets balance. Commands:\n",
    );
    for (name, short, args, what) in COMMANDS {
        let head = if short.is_empty() {
            format!(":{name} {args}")
        } else {
            format!(":{name} {args} (:{short})")
        };
        s.push_str(&format!("  {head:<22} {what}\n"));
    }
    s
}

fn find(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(n, s, _, _)| *n == word || (!s.is_empty() && *s == word))
        .map(|c| c.0)
}

fn id_arg(arg: &str, what: &str) -> anyhow::Result<u32> {
    arg.trim().parse::<u32>().map_err(|_| {
        anyhow!(
            "`:{what}` wants a probe id (see :list), got `{}`",
            arg.trim()
        )
    })
}

impl Repl {
    /// Run command `t` (starting with `:`).
    pub(super) fn command(&mut self, t: &str) -> Flow {
        let body = t.trim().trim_start_matches(':');
        let (word, arg) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let arg = arg.trim();
        let Some(name) = find(word) else {
            self.say(&format!(
                "ptap: unknown command `:{word}` (type :help for the list)\n"
            ));
            return Flow::Go;
        };
        let r = match name {
            "quit" => return Flow::Quit,
            "help" => {
                self.table(&help_text());
                Ok(())
            }
            "list" => {
                self.list();
                Ok(())
            }
            "delete" => id_arg(arg, name).and_then(|id| self.delete(id)),
            "disable" => id_arg(arg, name).and_then(|id| self.set_on(id, false)),
            "enable" => id_arg(arg, name).and_then(|id| self.set_on(id, true)),
            "globals" => {
                let known = self.book.known.clone();
                let text = self
                    .live
                    .lock()
                    .map(|l| l.globals_text(&known))
                    .unwrap_or_default();
                self.print(&text);
                Ok(())
            }
            "run" if arg.is_empty() => Err(anyhow!("`:run` wants a command line")),
            "run" => self.start_cmd(arg),
            "attach" => arg
                .parse::<i32>()
                .map_err(|_| anyhow!("`:attach` wants a pid, got `{arg}`"))
                .and_then(|pid| self.attach(pid)),
            "detach" => self.detach(),
            "wait" => {
                self.wait();
                Ok(())
            }
            "save" if arg.is_empty() => Err(anyhow!("`:save` wants a file name")),
            "save" => self.save(arg),
            "load" if arg.is_empty() => Err(anyhow!("`:load` wants a file name")),
            "load" => self.load(arg),
            _ => Ok(()),
        };
        if let Err(e) = r {
            self.say(&format!("ptap: {e:#}\n"));
        }
        Flow::Go
    }

    fn list(&self) {
        let rows = match self.live.lock() {
            Ok(l) => l.rows(),
            Err(_) => return,
        };
        if rows.is_empty() {
            self.table("no probes\n");
            return;
        }
        let mut s = format!(
            "{:>3}  {:<32} {:<24} {:>10}\n",
            "id", "point", "placement", "hits"
        );
        for r in rows {
            let _ = r.on;
            s.push_str(&format!(
                "{:>3}  {:<32} {:<24} {:>10}\n",
                r.id, r.points, r.placement, r.hits
            ));
        }
        self.table(&s);
    }

    fn delete(&mut self, id: u32) -> anyhow::Result<()> {
        let t0 = Instant::now();
        self.live
            .lock()
            .map_err(|_| anyhow!("the session is broken"))?
            .delete(id)?;
        let took = t0.elapsed();
        self.book.drop_probes(id);
        self.update_words();
        self.say(&format!("probe {id} deleted\n"));
        if self.verbose > 0 {
            self.say(&format!(
                "ptap: probe {id}: deleted from every process in {took:.2?}\n"
            ));
        }
        Ok(())
    }

    fn set_on(&mut self, id: u32, on: bool) -> anyhow::Result<()> {
        self.live
            .lock()
            .map_err(|_| anyhow!("the session is broken"))?
            .set_on(id, on)?;
        self.refresh_report();
        self.say(&format!(
            "probe {id} {}\n",
            if on { "enabled" } else { "disabled" }
        ));
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        let mut l = self
            .live
            .lock()
            .map_err(|_| anyhow!("the session is broken"))?;
        let Some(pid) = l.target.as_ref().map(|t| t.id()) else {
            return Err(anyhow!("no target to detach from"));
        };
        l.detach();
        drop(l);
        self.serve_target("none".into());
        self.say(&format!(
            "ptap: detached from pid {pid}; it keeps running without probes\n"
        ));
        Ok(())
    }

    fn wait(&mut self) {
        let deadline = crate::event_loop::deadline(Instant::now(), self.timeout);
        loop {
            if self.target_pid().is_none() {
                return;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || crate::event_loop::interrupted() {
                self.say("ptap: the target still runs\n");
                return;
            }
            self.flush();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn save(&mut self, path: &str) -> anyhow::Result<()> {
        let off: Vec<u32> = match self.live.lock() {
            Ok(l) => l.modules.iter().filter(|m| !m.on).map(|m| m.id).collect(),
            Err(_) => Vec::new(),
        };
        let text = self.book.script(|id| off.contains(&id));
        std::fs::write(path, &text).with_context(|| format!("cannot write `{path}`"))?;
        self.say(&format!("ptap: saved the session to {path}\n"));
        Ok(())
    }

    fn load(&mut self, path: &str) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read `{path}`"))?;
        if self.submit(&text, Some(path)) {
            Ok(())
        } else {
            Err(anyhow!("`{path}` was not loaded"))
        }
    }
}
