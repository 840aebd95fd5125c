//! End to end with a real target process, the way ptap's driver runs a
//! script: compile to a probe module, create the session (ring + globals),
//! run `begin` in ptap, start the target with the runtime preloaded, let
//! the runtime load the module and register its probes, drain and render
//! the records, run `end` in ptap after the target exits.
//!
//! Until the runtime's constructor loads `.o` modules itself, the module
//! is handed over by a tiny C probe module (codegen_support/script_shim.c)
//! that calls `ptap_script_attach`.
#[path = "support/mod.rs"]
mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ptap_compiler::codegen::host::{self, Program, Which};
use ptap_compiler::output::Rendered;
use ptap_rt_core::session::{self, Session, REC_DIAG, REC_FORMAT, REC_TEXT};

fn runtime_so() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_ptap"));
    let dir = exe.parent().unwrap().to_path_buf();
    [
        dir.join("libptap_rt.so"),
        dir.join("deps").join("libptap_rt.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|x| x.1)
    .expect("libptap_rt.so is built with the tests")
}

fn shim() -> PathBuf {
    let src = support::root().join("compiler/tests/codegen_support/script_shim.c");
    let out = support::out_dir().join("codegen_script_shim.so");
    support::build("cc", &src, &out, &["-O2", "-shared", "-fPIC"], &[])
}

struct Run {
    stdout: String,
    stderr: String,
    target_stdout: String,
    code: Option<i32>,
    errors: u64,
}

/// Run `script` against `cmd` like `ptap -e SCRIPT -c CMD`.
fn run(script: &str, cmd: &[&str]) -> Run {
    run_opts(script, cmd, false)
}

/// [`run`], optionally in guru mode (`-g`).
fn run_opts(script: &str, cmd: &[&str], guru: bool) -> Run {
    let opts = ptap_lang::Options {
        guru,
        ..ptap_lang::Options::default()
    };
    let checked = ptap_lang::frontend("<command line>", script, &opts)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let prog = Program::compile_for(&checked, Some(std::path::Path::new(cmd[0]))).unwrap();
    let obj = support::out_dir().join(
        format!(
            "codegen_e2e_{}_{:?}.o",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::write(&obj, &prog.object).unwrap();

    // The session: control block, ring, then the globals area.
    let ring = 1 << 16;
    let len = host::session_size(ring, prog.meta());
    // SAFETY: memfd + ftruncate + shared mapping of our own fd.
    let (fd, base) = unsafe {
        let fd = libc::memfd_create(c"ptap-test-session".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        (fd, p as *mut u8)
    };
    // SAFETY: the mapping is len bytes and outlives this function's use.
    let s = unsafe { Session::create(base, ring) };
    // SAFETY: the mapping has room for the globals (session_size).
    let g = unsafe { host::globals_of(&s) };
    host::init_globals(&g, prog.meta(), 0);

    let mut stdout = String::new();
    let mut stderr = String::new();
    let drain = |stdout: &mut String, stderr: &mut String| {
        s.drain(|kind, payload| match kind {
            REC_FORMAT => match prog.render(payload) {
                Rendered::Out(t) => stdout.push_str(&t),
                Rendered::Raw(b) => stdout.push_str(&String::from_utf8_lossy(&b)),
                Rendered::Error(t) | Rendered::Warning(t) => stderr.push_str(&t),
            },
            REC_TEXT => stdout.push_str(&String::from_utf8_lossy(payload)),
            REC_DIAG => stderr.push_str(&String::from_utf8_lossy(payload)),
            _ => {}
        })
    };

    prog.run(Which::Begin, &s, &g);
    drain(&mut stdout, &mut stderr);
    let mut c = Command::new(cmd[0]);
    c.args(&cmd[1..])
        .env("LD_PRELOAD", runtime_so())
        .env(session::ENV_FD, fd.to_string())
        .env(
            session::ENV_PATH,
            format!("/proc/{}/fd/{fd}", std::process::id()),
        )
        .env(session::ENV_MODULE, shim())
        .env("PTAP_SCRIPT", &obj)
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    // SAFETY: setpgid is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    host::set_target(&g, child.id() as i32);
    let t0 = Instant::now();
    let status = loop {
        drain(&mut stdout, &mut stderr);
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "target timed out");
        std::thread::sleep(Duration::from_millis(1));
    };
    drain(&mut stdout, &mut stderr);
    prog.run(Which::End, &s, &g);
    drain(&mut stdout, &mut stderr);
    stdout.push_str(&host::unread_globals(prog.meta(), &g));
    let mut target_stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut target_stdout)
        .unwrap();
    let errors = host::errors(&g);
    // SAFETY: unmapping/closing what we made.
    unsafe {
        libc::munmap(base.cast(), len);
        libc::close(fd);
    }
    let _ = std::fs::remove_file(&obj);
    Run {
        stdout,
        stderr,
        target_stdout,
        code: status.code(),
        errors,
    }
}

fn hot() -> String {
    support::compile("hot").to_string_lossy().into_owned()
}

#[test]
fn kprobe_counts_every_call() {
    let r = run(
        "global n probe kprobe(work) { n++ } probe end { print(n) }",
        &[&hot(), "1000"],
    );
    assert_eq!(r.stdout, "1000\n", "stderr: {}", r.stderr);
    assert_eq!(r.target_stdout, "sum=1000000 counter=499500\n");
    assert_eq!((r.code, r.errors), (Some(0), 0));
}

#[test]
fn jprobe_arguments_and_kretprobe_returns() {
    let r = run(
        "probe jprobe(work) { if (arg1 < 3) printf(\"work(%d)\\n\", arg1) }\n\
         probe kretprobe(work) { if (@entry(arg1) < 3) printf(\"= %d\\n\", ret) }",
        &[&hot(), "5"],
    );
    assert_eq!(
        r.stdout, "work(0)\n= 1\nwork(1)\n= 3\nwork(2)\n= 5\n",
        "stderr: {}",
        r.stderr
    );
    assert_eq!(r.target_stdout, "sum=25 counter=10\n");
}

#[test]
fn runtime_error_reports_location_and_target_is_unharmed() {
    let r = run(
        "global z\nprobe kprobe(work) {\n  x = arg1 / z\n}",
        &[&hot(), "3"],
    );
    assert_eq!(r.target_stdout, "sum=9 counter=3\n");
    assert_eq!(r.code, Some(0));
    assert!(r.errors >= 1);
    assert!(
        r.stderr.starts_with(
            "ERROR: division by 0 near `arg1 / z` at <command line>:3:7 in probe kprobe(work)\n"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_pointer_read_is_an_error_not_a_crash() {
    let r = run(
        "probe kprobe(work) { if (arg1 == 2) print(user_long(arg1)) }",
        &[&hot(), "4"],
    );
    assert_eq!(
        (r.code, r.target_stdout.as_str()),
        (Some(0), "sum=16 counter=6\n")
    );
    assert_eq!(r.errors, 1);
    assert!(
        r.stderr
            .contains("ERROR: user memory read fault at 0x2 near `user_long(arg1)`"),
        "{}",
        r.stderr
    );
}

#[test]
fn recursive_fib_kretprobe_maxactive() {
    let fib = support::compile("fib").to_string_lossy().into_owned();
    let r = run(
        "global n probe kretprobe(fib).maxactive(64) { n++ } probe end { print(n) }",
        &[&fib, "20"],
    );
    assert_eq!(r.stdout, "21891\n", "stderr: {}", r.stderr);
}

#[test]
fn eight_threads_times_a_million_count_exactly() {
    let threads = support::compile("threads").to_string_lossy().into_owned();
    let t0 = Instant::now();
    let r = run(
        "global n probe kprobe(work) { n++ } probe end { print(n) }",
        &[&threads, "8", "1000000"],
    );
    eprintln!("8 x 1,000,000 hits: {:?}", t0.elapsed());
    assert_eq!(r.stdout, "8000000\n", "stderr: {}", r.stderr);
    assert_eq!(r.code, Some(0));
}

#[test]
fn syscall_return_probe_sees_raw_errno() {
    let opens = support::compile("opens").to_string_lossy().into_owned();
    let r = run(
        "probe kretprobe(sys_open) < if ret<0 printf(\"%s %s %d\\n\", execname(), syscall_name(), ret) >",
        &[&opens],
    );
    assert_eq!(
        r.stdout, "opens openat -2\nopens openat -2\n",
        "stderr: {}",
        r.stderr
    );
    assert_eq!(r.target_stdout, "opened 2 of 4\n");
}

#[test]
fn syscall_entry_probe_reads_the_path() {
    let opens = support::compile("opens").to_string_lossy().into_owned();
    let r = run(
        "probe kprobe(sys_open) { if (syscall_name() == \"openat\") { p = user_string(arg2); if (isinstr(p, \"nonexistent\")) print(p) } }",
        &[&opens],
    );
    assert_eq!(
        r.stdout, "/nonexistent/a\n/nonexistent/b\n",
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn arrays_shared_between_target_and_end_probe() {
    let threads = support::compile("threads").to_string_lossy().into_owned();
    let r = run(
        "global calls, tids\n\
         probe kprobe(work) { calls[arg1 % 3]++; tids[tid()]++ }\n\
         probe end { foreach (k+ in calls) printf(\"%d %d\\n\", k, calls[k]); foreach (t in tids) n++; print(n) }",
        &[&threads, "4", "3000"],
    );
    assert_eq!(
        r.stdout, "0 4000\n1 4000\n2 4000\n4\n",
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn print_ubacktrace_shows_the_probed_stack() {
    let r = run(
        "probe kprobe(work) { if (arg1 == 1) print_ubacktrace() }",
        &[&hot(), "3"],
    );
    // SystemTap's layout: ` 0x<16 hex digits> : func+0xoff/0xsize [path]`.
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines.len() >= 2
            && lines[0].starts_with(" 0x")
            && lines[0].contains(" : work+0x0/0x")
            && lines[1].contains(" : main+0x")
            && lines[0].ends_with(&format!("[{}]", hot())),
        "{}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn ubacktrace_gives_return_addresses() {
    let r = run(
        "probe kprobe(work) { if (arg1 == 1) { b = ubacktrace(); print(b); print(usymname(strtol(substr(b, 0, 18), 16))) } }",
        &[&hot(), "3"],
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}\nstderr: {}", r.stdout, r.stderr);
    let addrs: Vec<&str> = lines[0].split(' ').collect();
    assert!(
        addrs.len() >= 2 && addrs.iter().all(|a| a.starts_with("0x")),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "work");
}

#[test]
fn latency_pattern_reuses_deleted_entries() {
    let threads = support::compile("threads").to_string_lossy().into_owned();
    let r = run(
        "global start[8], lat\n\
         probe kprobe(work) { start[tid()] = nsecs() }\n\
         probe kretprobe(work) { lat <<< nsecs() - start[tid()]; delete start[tid()] }\n\
         probe end { print(@count(lat), @min(lat) >= 0) }",
        &[&threads, "4", "3000"],
    );
    assert_eq!(r.stdout, "12000 1\n", "stderr: {}", r.stderr);
    assert_eq!(r.errors, 0);
}

#[test]
fn target_variables_from_dwarf() {
    let r = run(
        "probe kprobe(work) { if ($x < 3) printf(\"x=%d\\n\", $x) }\n\
         probe kretprobe(work) { if (@entry($x) == 2) printf(\"work(2)=%d\\n\", ret) }",
        &[&hot(), "4"],
    );
    assert_eq!(
        r.stdout, "x=0\nx=1\nx=2\nwork(2)=5\n",
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn target_variable_errors_name_the_problem() {
    let exe = support::compile("hot");
    let check = |src: &str| {
        let c = ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default()).unwrap();
        Program::compile_for(&c, Some(&exe))
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        check("probe kprobe(work) { print($nope) }"),
        "cannot compile `$nope`: `work` has no parameter or variable `nope` in the debug information"
    );
    assert_eq!(
        check("probe kretprobe(work) { print($nope$) }"),
        "cannot compile `$nope$`: `work` has no parameter or variable `nope` in the debug information"
    );
    let c = ptap_lang::frontend(
        "t.pt",
        "probe kprobe(work) { print($x) }",
        &ptap_lang::Options::default(),
    )
    .unwrap();
    assert_eq!(
        Program::compile(&c).err().unwrap().to_string(),
        "cannot compile `$x`: target variables need the target executable (-c CMD) with debug information"
    );
}

#[test]
fn guru_mode_changes_a_parameter() {
    let r = run_opts(
        "probe kprobe(work) { if ($x == 1) $x = 100 }",
        &[&hot(), "3"],
        true,
    );
    assert_eq!(
        r.target_stdout, "sum=207 counter=3\n",
        "stderr: {}",
        r.stderr
    );
}
