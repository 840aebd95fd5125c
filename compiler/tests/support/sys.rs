//! Support for the syscall-probe tests: build the test module against
//! ptap/syscalls.h (support::module only tracks kprobes.h), run `ptap load`
//! with it, and interrupt ptap the way Ctrl-C does.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::{ptap, root, run_cmd, Output};

/// Compile a C module that uses ptap/syscalls.h (path relative to the repo root).
pub fn sys_module(rel: &str) -> PathBuf {
    crate::support::build_module(&root().join(rel), &["ptap/kprobes.h", "ptap/syscalls.h"])
}

fn load_cmd(module: &str, cmd: &str, env: &[(&str, &str)]) -> Command {
    let m = sys_module(module);
    let mut c = ptap();
    c.arg("load").arg(&m).arg("-c").arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `ptap load MODULE -c CMD` (MODULE uses ptap/syscalls.h).
pub fn sys_load(module: &str, cmd: &str, env: &[(&str, &str)], secs: u64) -> Output {
    run_cmd(load_cmd(module, cmd, env), Duration::from_secs(secs))
}

/// Run ptap load, send it SIGINT (Ctrl-C: detach) once the command's stdout
/// shows `ready` (the target flushes it when it is where the test wants
/// it), and collect its output.
pub fn sys_load_interrupt(module: &str, cmd: &str, ready: &str, secs: u64) -> Output {
    let c = load_cmd(module, cmd, &[]);
    let limit = Duration::from_secs(secs);
    crate::support::run_cmd_with(c, limit, |pid, stdout| {
        let t0 = std::time::Instant::now();
        while !stdout().contains(ready) && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    })
}

/// Lines of the test module reporting an open: (nr, pid, comm, path, ret).
pub fn opens(out: &Output) -> Vec<(u32, i32, String, String, i64)> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("open nr=")?;
            let mut nr = 0;
            let mut pid = 0;
            let mut comm = String::new();
            let mut path = String::new();
            let mut ret = 0;
            for (i, w) in rest.split_whitespace().enumerate() {
                if i == 0 {
                    nr = w.parse().ok()?;
                } else if let Some(v) = w.strip_prefix("pid=") {
                    pid = v.parse().ok()?;
                } else if let Some(v) = w.strip_prefix("comm=") {
                    comm = v.to_string();
                } else if let Some(v) = w.strip_prefix("path=") {
                    path = v.to_string();
                } else if let Some(v) = w.strip_prefix("ret=") {
                    ret = v.parse().ok()?;
                }
            }
            Some((nr, pid, comm, path, ret))
        })
        .collect()
}
