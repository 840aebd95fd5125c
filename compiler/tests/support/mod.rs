//! Shared test support: compile tests/targets/*.c (and probe modules) with
//! the system C compiler into target/ptap-tests/, cached by mtime, and run
//! `ptap` with a timeout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where compiled test programs go.
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let d = target.join("ptap-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).ok()?.modified().ok()
}

/// Compile `src` to `out` with `compiler args...` unless `out` is newer than
/// every path in `deps`. Writes to a temporary name then renames, so tests
/// running in parallel never see a half-written file.
///
/// One build at a time, in this process (a mutex) and across processes (an
/// flock on `out_dir()/.lock`), with the freshness check inside the lock:
/// two tests that both found the file missing would otherwise both compile
/// it, and the second rename would replace a binary the first test's target
/// is already running (its /proc/self/exe then reads "... (deleted)").
pub fn build(compiler: &str, src: &Path, out: &Path, args: &[&str], deps: &[&Path]) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let fresh = || {
        let newest_dep = std::iter::once(src)
            .chain(deps.iter().copied())
            .filter_map(mtime)
            .max();
        matches!((mtime(out), newest_dep), (Some(o), Some(d)) if o >= d)
    };
    if fresh() {
        return out.to_path_buf();
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out_dir().join(".lock"))
        .expect("cannot open the build lock");
    // SAFETY: flock on a file descriptor we own; released when `lock` closes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if fresh() {
        return out.to_path_buf();
    }
    let tmp = out.with_extension(
        format!(
            "tmp{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let st = Command::new(compiler)
        .args(args)
        .arg(src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(st.success(), "{compiler} failed on {}", src.display());
    std::fs::rename(&tmp, out).unwrap();
    out.to_path_buf()
}

/// Compile tests/targets/NAME.c (or NAME.cpp with g++, NAME.rs with rustc
/// in release mode) with -O2 -g, returning the binary. `NAME.VARIANT`
/// builds a variant: `.O0` (no optimisation), `.nodebug` (no debug info),
/// `.debuglink` (the debug info moved to NAME.debuglink.debug with
/// `objcopy --only-keep-debug`, the binary stripped and linked to it with
/// `.gnu_debuglink`).
pub fn compile(name: &str) -> PathBuf {
    let (stem, variant) = name.split_once('.').unwrap_or((name, ""));
    assert!(
        matches!(variant, "" | "O0" | "nodebug" | "debuglink"),
        "unknown build variant `{variant}` of tests/targets/{stem}"
    );
    let dir = root().join("tests").join("targets");
    let out = out_dir().join(name);
    let opt = if variant == "O0" { "-O0" } else { "-O2" };
    let mut args: Vec<&str> = vec![opt, "-pthread"];
    if variant != "nodebug" {
        args.push("-g");
    }
    let c = dir.join(format!("{stem}.c"));
    let cpp = dir.join(format!("{stem}.cpp"));
    let rs = dir.join(format!("{stem}.rs"));
    let bin = if c.exists() {
        build("cc", &c, &out, &args, &[])
    } else if cpp.exists() {
        build("g++", &cpp, &out, &args, &[])
    } else {
        assert!(rs.exists(), "no tests/targets/{stem}.c, .cpp or .rs");
        let level = if variant == "O0" {
            "opt-level=0"
        } else {
            "opt-level=3"
        };
        let mut args = vec!["-C", level, "--edition", "2021"];
        if variant != "nodebug" {
            args.push("-g");
        }
        build("rustc", &rs, &out, &args, &[])
    };
    if variant == "debuglink" {
        split_debug_info(&bin);
    }
    bin
}

/// Move the debug info of `bin` to `bin.debug` and link it back with
/// `.gnu_debuglink` (idempotent: a binary already linked is left alone).
fn split_debug_info(bin: &Path) {
    let debug = bin.with_extension(format!(
        "{}.debug",
        bin.extension()
            .map(|e| e.to_string_lossy())
            .unwrap_or_default()
    ));
    let linked = Command::new("objdump")
        .arg("-h")
        .arg(bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(".gnu_debuglink"))
        .unwrap_or(false);
    if linked {
        return;
    }
    let run = |args: &[&std::ffi::OsStr]| {
        let st = Command::new("objcopy").args(args).status().unwrap();
        assert!(st.success(), "objcopy {args:?} failed");
    };
    run(&[
        "--only-keep-debug".as_ref(),
        bin.as_os_str(),
        debug.as_os_str(),
    ]);
    run(&["--strip-debug".as_ref(), bin.as_os_str()]);
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run(&[link.as_ref(), bin.as_os_str()]);
}

/// Compile a C probe module (runtime/tests/modules/NAME.c, or a path) to a .so.
pub fn module(name: &str) -> PathBuf {
    let p = Path::new(name);
    let src = if p.extension().is_some() {
        root().join(p)
    } else {
        root()
            .join("runtime/tests/modules")
            .join(format!("{name}.c"))
    };
    build_module(&src, &["ptap/kprobes.h"])
}

/// Compile the C probe module `src` to target/ptap-tests/mod_STEM.so
/// against runtime/include, rebuilt when `headers` (under runtime/include)
/// change.
pub fn build_module(src: &Path, headers: &[&str]) -> PathBuf {
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let out = out_dir().join(format!("mod_{stem}.so"));
    let inc = root().join("runtime/include");
    let deps: Vec<PathBuf> = headers.iter().map(|h| inc.join(h)).collect();
    let deps: Vec<&Path> = deps.iter().map(PathBuf::as_path).collect();
    build(
        "cc",
        src,
        &out,
        &[
            "-O2",
            "-g",
            "-shared",
            "-fPIC",
            "-pthread",
            "-I",
            inc.to_str().unwrap(),
        ],
        &deps,
    )
}

pub struct Output {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
    /// Value of `key=VALUE` in the last stdout line that has it.
    pub fn value(&self, key: &str) -> Option<i64> {
        let pat = format!("{key}=");
        self.stdout.lines().rev().find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&pat))
                .and_then(|v| v.trim_end_matches(',').parse().ok())
        })
    }
    pub fn get(&self, key: &str) -> i64 {
        self.value(key).unwrap_or_else(|| {
            panic!(
                "no {key}= in output:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "code={:?} signal={:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Run a command with a timeout (the test fails if it expires).
pub fn run_cmd(cmd: Command, timeout: Duration) -> Output {
    run_cmd_with(cmd, timeout, |_, _| {})
}

/// [`run_cmd`], calling `started(pid, stdout)` once the command runs (to
/// signal it, for example) while its output is being collected;
/// `stdout()` is what the command has written to stdout so far.
pub fn run_cmd_with(
    cmd: Command,
    timeout: Duration,
    started: impl FnOnce(u32, &dyn Fn() -> String),
) -> Output {
    run_cmd_io(cmd, timeout, Stdio::null(), started)
}

/// [`run_cmd`] with stdin read from `input` (a file).
#[allow(dead_code)]
pub fn run_cmd_input(cmd: Command, timeout: Duration, input: &Path) -> Output {
    let f = std::fs::File::open(input).expect("the input file");
    run_cmd_io(cmd, timeout, Stdio::from(f), |_, _| {})
}

fn run_cmd_io(
    mut cmd: Command,
    timeout: Duration,
    stdin: Stdio,
    started: impl FnOnce(u32, &dyn Fn() -> String),
) -> Output {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::{Arc, Mutex};
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(stdin);
    let mut child = cmd.spawn().expect("spawn");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let sofar = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = sofar.clone();
    let t1 = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = so.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let stdout_now = || String::from_utf8_lossy(&sofar.lock().unwrap()).into_owned();
    started(child.id(), &stdout_now);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            t1.join().unwrap();
            let err = t2.join().unwrap();
            panic!(
                "timed out after {timeout:?}\n--- stdout\n{}--- stderr\n{err}",
                stdout_now()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    t1.join().unwrap();
    Output {
        code: status.code(),
        signal: status.signal(),
        stdout: stdout_now(),
        stderr: t2.join().unwrap(),
    }
}

pub fn ptap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ptap"))
}

/// `ptap load MODULE -c CMD` with extra environment, bounded by `secs`.
pub fn load(module_name: &str, cmd: &str, env: &[(&str, &str)], secs: u64) -> Output {
    let m = module(module_name);
    let mut c = ptap();
    c.arg("load").arg(&m).arg("-c").arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    run_cmd(c, Duration::from_secs(secs))
}

/// Path of a compiled target as a string, for -c command lines.
pub fn target(name: &str) -> String {
    compile(name).to_string_lossy().into_owned()
}

/// Remove the runtime snapshot a detached `ptap load` (pid `ptap_pid`) left
/// for its still-running target.
pub fn remove_snapshot(ptap_pid: u32) {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let prefix = format!("ptap-{ptap_pid}-");
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix(&prefix)
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Copy an executable that a test then runs. Through `cp`, not
/// `std::fs::copy`: a file this process has open for writing is inherited
/// by any child another test thread forks meanwhile, until that child
/// execs, and running the copy in that window fails with ETXTBSY ("Text
/// file busy").
pub fn copy_executable(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
    assert!(
        st.success(),
        "cp {} {} failed",
        src.display(),
        dst.display()
    );
}
