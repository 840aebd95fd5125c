//! Spec files in the bpftrace style: tests/spec/*.spec, each holding one or
//! more cases (script, target program, expected output), run through the
//! real `ptap` binary against tiny C targets from tests/targets/. The
//! format is described in tests/spec/README.md. Adding a case means adding
//! text to a .spec file.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Clone)]
struct Case {
    file: String,
    line: usize,
    name: String,
    prog: String,
    /// `SCRIPT path [args]`: run a script file (relative to the repository)
    /// instead of `-e PROG`.
    script: Option<Vec<String>>,
    /// A REPL session (`ptap -i`, this text on stdin) instead of PROG.
    stdin: Option<String>,
    args: Vec<String>,
    cmd: Option<String>,
    env: Vec<(String, String)>,
    expect: Option<String>,
    expect_target: Option<String>,
    /// Regular expressions the output must match (multi-line mode: `^`/`$`
    /// are line ends).
    matches: Vec<String>,
    stderr: Vec<String>,
    exit: i32,
    timeout: u64,
    /// What the machine must offer, else the case is ignored (and listed
    /// as such): `kcmp` (the kcmp system call, which some container
    /// profiles refuse).
    requires: Vec<String>,
}

/// Parse a spec file: `KEY value` lines; a value continues on the lines
/// after it that start with two spaces (which are removed). Cases start at
/// `NAME`. `#` starts a comment line.
fn parse(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut cases: Vec<Case> = Vec::new();
    let mut fields: Vec<(usize, String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(cont) = line.strip_prefix("  ") {
            let Some(last) = fields.last_mut() else {
                return Err(format!("{file}:{}: continuation before any field", i + 1));
            };
            if !last.2.is_empty()
                || last.1 == "EXPECT"
                || last.1 == "EXPECT_TARGET"
                || last.1 == "PROG"
                || last.1 == "STDIN"
            {
                last.2.push('\n');
            }
            last.2.push_str(cont);
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        fields.push((i + 1, k.to_string(), v.to_string()));
    }
    for (line, k, v) in fields {
        if k == "NAME" {
            cases.push(Case {
                file: file.clone(),
                line,
                name: v,
                timeout: 120,
                ..Case::default()
            });
            continue;
        }
        let Some(c) = cases.last_mut() else {
            return Err(format!("{file}:{line}: {k} before the first NAME"));
        };
        // Multi-line values start on the line after the key.
        let v = v.strip_prefix('\n').map(str::to_string).unwrap_or(v);
        match k.as_str() {
            "PROG" => c.prog = v,
            "STDIN" => c.stdin = Some(with_newline(v)),
            "ARGS" => c.args = shlex::split(&v).ok_or(format!("{file}:{line}: bad ARGS"))?,
            "CMD" => c.cmd = Some(v),
            "SCRIPT" => {
                let words = shlex::split(&v).unwrap_or_default();
                if words.is_empty() {
                    return Err(format!("{file}:{line}: SCRIPT wants a path"));
                }
                c.script = Some(words)
            }
            "MATCH" => {
                regex::Regex::new(&v).map_err(|e| format!("{file}:{line}: bad MATCH: {e}"))?;
                c.matches.push(v)
            }
            "ENV" => {
                let (a, b) = v
                    .split_once('=')
                    .ok_or(format!("{file}:{line}: ENV wants K=V"))?;
                c.env.push((a.into(), b.into()));
            }
            "EXPECT" => c.expect = Some(with_newline(v)),
            "EXPECT_TARGET" => c.expect_target = Some(with_newline(v)),
            "STDERR" => c.stderr.push(v),
            "EXIT" => {
                c.exit = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{file}:{line}: bad EXIT"))?
            }
            "REQUIRES" => {
                if v.trim() != "kcmp" {
                    return Err(format!("{file}:{line}: REQUIRES knows only kcmp"));
                }
                c.requires.push(v.trim().to_string())
            }
            "TIMEOUT" => {
                c.timeout = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{file}:{line}: bad TIMEOUT"))?
            }
            _ => return Err(format!("{file}:{line}: unknown field {k}")),
        }
    }
    Ok(cases)
}

/// Does this machine offer what `REQUIRES` names?
fn available(what: &str) -> bool {
    match what {
        // kcmp(self, self, KCMP_VM): 0 where the call is allowed.
        "kcmp" => {
            let me = std::process::id() as libc::c_long;
            // SAFETY: kcmp takes plain integers.
            unsafe {
                libc::syscall(
                    libc::SYS_kcmp,
                    me,
                    me,
                    1 as libc::c_long,
                    0 as libc::c_long,
                    0 as libc::c_long,
                ) == 0
            }
        }
        _ => false,
    }
}

fn with_newline(mut v: String) -> String {
    if !v.is_empty() && !v.ends_with('\n') {
        v.push('\n');
    }
    v
}

/// `@name` words of a command are tests/targets programs, compiled on demand.
fn command_line(cmd: &str) -> String {
    cmd.split(' ')
        .map(|w| match w.strip_prefix('@') {
            Some(name) if !name.is_empty() => support::target(name),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_case(c: &Case, scratch: &Path) -> Result<(), String> {
    let out_file = scratch.join(format!(
        "{}-{}.out",
        c.file.trim_end_matches(".spec"),
        c.line
    ));
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = support::ptap();
    cmd.arg("-o").arg(&out_file).args(&c.args);
    match (&c.stdin, &c.script) {
        (Some(_), _) => {
            cmd.arg("-i");
        }
        (None, Some(words)) => {
            cmd.arg(support::root().join(&words[0]));
            cmd.args(&words[1..]);
        }
        (None, None) => {
            cmd.arg("-e").arg(&c.prog);
        }
    }
    if let Some(line) = &c.cmd {
        cmd.arg("-c").arg(command_line(line));
    }
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let out = match &c.stdin {
        Some(text) => {
            // `:run @NAME ...` lines name tests/targets programs too.
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix(":run ") {
                    Some(rest) => format!(":run {}\n", command_line(rest)),
                    None => format!("{l}\n"),
                })
                .collect();
            let input = out_file.with_extension("in");
            std::fs::write(&input, text).expect("the session file");
            support::run_cmd_input(cmd, Duration::from_secs(c.timeout), &input)
        }
        None => support::run_cmd(cmd, Duration::from_secs(c.timeout)),
    };
    let got = std::fs::read_to_string(&out_file).unwrap_or_default();
    let mut problems = Vec::new();
    if out.code != Some(c.exit) {
        problems.push(format!("exit status {:?}, expected {}", out.code, c.exit));
    }
    if let Some(e) = &c.expect {
        if &got != e {
            problems.push(format!("output differs\n--- expected\n{e}--- got\n{got}"));
        }
    }
    for m in &c.matches {
        let re = regex::RegexBuilder::new(m)
            .multi_line(true)
            .build()
            .map_err(|e| e.to_string())?;
        if !re.is_match(&got) {
            problems.push(format!("output does not match /{m}/\n--- got\n{got}"));
        }
    }
    if let Some(e) = &c.expect_target {
        if &out.stdout != e {
            problems.push(format!(
                "target output differs\n--- expected\n{e}--- got\n{}",
                out.stdout
            ));
        }
    }
    for s in &c.stderr {
        if !out.stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks `{s}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}:{}: {}\n{}\n--- ptap stderr\n{}",
            c.file,
            c.line,
            c.name,
            problems.join("\n"),
            out.stderr
        ))
    }
}

fn spec_files() -> Vec<PathBuf> {
    let dir = support::root().join("tests").join("spec");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spec"))
        .collect();
    v.sort();
    v
}

/// One test per case, named `FILE:LINE: NAME`, run in parallel by
/// libtest-mimic (`--test-threads`, default: the available parallelism).
/// `cargo test --test spec -- lang_arrays` runs the cases of one file.
fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let scratch = support::out_dir().join("spec");
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let mut cases = Vec::new();
    for f in spec_files() {
        match parse(&f) {
            Ok(c) => cases.extend(c),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(101);
            }
        }
    }
    if cases.is_empty() {
        eprintln!("no spec cases found");
        std::process::exit(101);
    }
    let trials = cases
        .into_iter()
        .map(|c| {
            let missing: Vec<String> = c
                .requires
                .iter()
                .filter(|r| !available(r))
                .cloned()
                .collect();
            let mut name = format!("{}:{}: {}", c.file, c.line, c.name);
            if !missing.is_empty() {
                name.push_str(&format!(
                    " (ignored: no {} on this machine)",
                    missing.join(", ")
                ));
            }
            let scratch = scratch.clone();
            libtest_mimic::Trial::test(name, move || run_case(&c, &scratch).map_err(Into::into))
                .with_ignored_flag(!missing.is_empty())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
