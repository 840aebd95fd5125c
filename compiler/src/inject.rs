//! `ptap -x PID`: load the runtime into a process that is already running.
//!
//! ptap traces one thread of the target with ptrace (PTRACE_SEIZE +
//! PTRACE_INTERRUPT: the other threads keep running), saves its registers
//! (general purpose and the whole XSAVE area), and makes it call
//! `dlopen(path, mode)` in the target, then the library's init function
//! (`ptap_rt_attach`): the path is written below the thread's red zone,
//! each call starts with the stack aligned as the ABI wants,
//! `orig_rax = -1` so that a system call the thread was stopped in is not
//! restarted into the injected call, and the return address is 0: when
//! the function returns, the thread faults at address 0 and ptap, which
//! sees the SIGSEGV before the target does, takes it away. Then every
//! register goes back exactly (a system call that was interrupted is then
//! restarted by the kernel, as after any ptrace stop) and ptap detaches.
//! The init call only starts a thread of the runtime's own, which maps the
//! session and registers the probes while the process's threads run (live
//! patching): the interrupted thread is stopped about a millisecond. Its parameters come from a file ptap writes beside the
//! runtime snapshot (see `ptap_rt_core::lifecycle::attach_params_name`).
//!
//! `dlopen` is found in the target's own libc (glibc >= 2.34 exports it),
//! or libdl.so.2, or glibc's private `__libc_dlopen_mode` (older glibc).
//!
//! ptap only injects where the thread is outside libc and the dynamic
//! loader, or blocked in a system call other than the memory calls malloc
//! makes (a thread stopped inside malloc would enter it again from dlopen:
//! a deadlock on its arena lock, or heap corruption when single-threaded);
//! it lets the thread run a little and stops it again until it finds such
//! a spot, or gives up with an error. Known limit: a lock of the program's
//! own that dlopen needs is not detected: the injected call then waits
//! for it forever (ptap says so after 5 seconds and keeps waiting:
//! abandoning the call would crash the target).

mod masks;

use anyhow::{anyhow, Context};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use object::{Object, ObjectSegment, ObjectSymbol};

/// One line of /proc/PID/maps.
pub use ptap_rt_core::proc::maps::Mapping;

/// The file-backed mappings of `pid`, in address order.
pub fn mappings(pid: i32) -> anyhow::Result<Vec<Mapping>> {
    let text = ptap_rt_core::proc::maps::read(format!("{}/maps", proc_of(pid)))
        .with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    Ok(ptap_rt_core::proc::maps::parse(&text)
        .filter(|m| m.is_file())
        .map(|m| m.to_owned())
        .collect())
}

/// The distinct mapped files of `pid`, in the order they appear, each with
/// the address where its loaded copy starts (see [`load_base`]).
pub fn mapped_files(maps: &[Mapping]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for m in maps {
        if !out.iter().any(|(p, _)| *p == m.path) {
            out.push((m.path.clone(), load_base(maps, &m.path)));
        }
    }
    out
}

/// Where the loaded copy of `path` starts. A program may map a file again
/// itself (a backtrace symbolizer reads its executable and libraries that
/// way): one read-only mapping from offset 0, often below the loaded copy.
/// The loaded copy is the run of mappings from an offset-0 mapping up to the
/// next one that holds executable code; a file without code anywhere
/// (locale archives, ...) gives its lowest mapping.
fn load_base(maps: &[Mapping], path: &str) -> u64 {
    let of: Vec<&Mapping> = maps.iter().filter(|m| m.path == path).collect();
    let base = |m: &Mapping| m.start - m.offset.min(m.start);
    let loaded = of.iter().enumerate().find(|(i, m)| {
        m.offset == 0
            && std::iter::once(**m)
                .chain(of[i + 1..].iter().copied().take_while(|n| n.offset != 0))
                .any(|n| n.exec())
    });
    match (loaded, of.first()) {
        (Some((_, m)), _) => base(m),
        (None, Some(m)) => base(m),
        (None, None) => 0,
    }
}

/// A path of the target's file as ptap can open it: through
/// /proc/PID/root (the target may live in another mount namespace).
pub fn target_file(pid: i32, path: &str) -> PathBuf {
    let via_root = PathBuf::from(format!("{}/root{path}", proc_of(pid)));
    if via_root.exists() {
        via_root
    } else {
        PathBuf::from(path)
    }
}

/// Why ptap may not trace `pid`, for the EPERM message.
fn eperm_hint(pid: i32) -> String {
    let tracer = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .map(|v| v.trim().to_string())
        })
        .filter(|v| v != "0");
    if let Some(t) = tracer {
        let comm = std::fs::read_to_string(format!("/proc/{t}/comm")).unwrap_or_default();
        if comm.trim_end() == "ptap" {
            return format!("another ptap session (pid {t}) is attaching to pid {pid}");
        }
        return format!("it is already traced by pid {t} (a debugger or strace?)");
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .ok();
    let mut hint = String::from(
        "ptrace needs the same user as the target (or root / CAP_SYS_PTRACE), and a target that is not setuid",
    );
    if let Some(s) = scope {
        if s != "0" {
            hint.push_str(&format!(
                "; /proc/sys/kernel/yama/ptrace_scope is {s}: only root may attach to a process that is not its child (or set it to 0)"
            ));
        }
    }
    hint
}

/// Check that `pid` is a process ptap can attach to (exists, not ptap).
pub fn check_pid(pid: i32) -> anyhow::Result<()> {
    if pid <= 0 {
        return Err(anyhow!("-x {pid}: not a process id"));
    }
    if pid == std::process::id() as i32 {
        return Err(anyhow!("-x: ptap cannot attach to itself"));
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| anyhow!("-x {pid}: no such process"))?;
    // The main thread may have ended (pthread_exit) while others run.
    match pick_thread(pid) {
        None => return Err(anyhow!("-x {pid}: the process has exited (zombie)")),
        Some(t) if t != pid => {
            // Its /proc/self (maps, mem, exe) is gone, and the runtime
            // reads it to find symbols and patch code.
            return Err(anyhow!(
                "-x {pid}: the main thread of the process has exited (pthread_exit) while thread {t} runs: not supported (the runtime needs the process's /proc/self)"
            ));
        }
        Some(_) => {}
    }
    // A thread id that is not a process: /proc/TID exists but Tgid differs.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if let Some(tgid) = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
    {
        if tgid != pid {
            return Err(anyhow!(
                "-x {pid}: that is a thread of process {tgid}; give the process id"
            ));
        }
    }
    if std::fs::read_to_string(format!("{}/maps", proc_of(pid))).is_ok_and(|m| m.is_empty()) {
        return Err(anyhow!(
            "-x {pid}: the process has no user-space memory (a kernel thread?)"
        ));
    }
    // Reading the maps needs the same permission as ptrace's read access.
    if let Err(e) = std::fs::File::open(format!("{}/maps", proc_of(pid))) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(anyhow!(
                "not permitted to trace pid {pid} ({e}): {}",
                eperm_hint(pid)
            ));
        }
    }
    Ok(())
}

/// Where the target's `dlopen` (and `dlerror`) are.
pub struct DlFns {
    pub dlopen: u64,
    pub dlerror: Option<u64>,
    /// Where it was found, for -v.
    pub from: String,
}

/// Offsets of the dynamic symbols `names` of an ELF file from where its
/// lowest segment is mapped (add the lowest mapped address of the file).
pub fn symbol_offsets(data: &[u8], names: &[&str]) -> Option<Vec<Option<u64>>> {
    let file = object::File::parse(data).ok()?;
    let first = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let found = names
        .iter()
        .map(|n| {
            file.dynamic_symbols()
                .find(|s| !s.is_undefined() && s.address() != 0 && s.name() == Ok(n))
                .map(|s| s.address().wrapping_sub(first))
        })
        .collect();
    Some(found)
}

/// Address of the dynamic symbols `names` of the mapped file `path`
/// (lowest mapped address `low`), in the target.
fn symbol_in(pid: i32, path: &str, low: u64, names: &[&str]) -> Option<Vec<Option<u64>>> {
    let data = std::fs::read(target_file(pid, path)).ok()?;
    let offs = symbol_offsets(&data, names)?;
    Some(
        offs.into_iter()
            .map(|o| o.map(|o| low.wrapping_add(o)))
            .collect(),
    )
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Find dlopen in the target: libc's (glibc >= 2.34), libdl's, or glibc's
/// private `__libc_dlopen_mode` (older glibc; same arguments).
pub fn find_dlopen(pid: i32, maps: &[Mapping]) -> anyhow::Result<DlFns> {
    let files = mapped_files(maps);
    let exe = std::fs::read_link(format!("{}/exe", proc_of(pid)))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("pid {pid}"));
    let libc = files
        .iter()
        .find(|(p, _)| file_name(p).starts_with("libc.so") || file_name(p).starts_with("libc-"));
    let libdl = files
        .iter()
        .find(|(p, _)| file_name(p).starts_with("libdl.so") || file_name(p).starts_with("libdl-"));
    let interp = files
        .iter()
        .any(|(p, _)| file_name(p).starts_with("ld-linux") || file_name(p).starts_with("ld-"));
    if !interp || libc.is_none() {
        return Err(anyhow!(
            "pid {pid} ({exe}) has no dynamic loader or no glibc mapped (statically linked, or not a glibc program): ptap cannot load its runtime there"
        ));
    }
    let (lpath, llow) = libc.expect("checked above");
    if let Some(v) = symbol_in(pid, lpath, *llow, &["dlopen", "dlerror"]) {
        if let Some(dlopen) = v[0] {
            return Ok(DlFns {
                dlopen,
                dlerror: v[1],
                from: lpath.clone(),
            });
        }
    }
    if let Some((dpath, dlow)) = libdl {
        if let Some(v) = symbol_in(pid, dpath, *dlow, &["dlopen", "dlerror"]) {
            if let Some(dlopen) = v[0] {
                return Ok(DlFns {
                    dlopen,
                    dlerror: v[1],
                    from: dpath.clone(),
                });
            }
        }
    }
    if let Some(v) = symbol_in(pid, lpath, *llow, &["__libc_dlopen_mode"]) {
        if let Some(dlopen) = v[0] {
            return Ok(DlFns {
                dlopen,
                dlerror: None,
                from: format!("{lpath} (__libc_dlopen_mode)"),
            });
        }
    }
    Err(anyhow!(
        "pid {pid} ({exe}): no dlopen found in {lpath} (nor libdl): ptap cannot load its runtime there"
    ))
}

/// What [`inject`] measured.
#[derive(Debug, Default)]
pub struct InjectTimes {
    /// From PTRACE_SEIZE to the thread stopped where ptap injects.
    pub to_stop: Duration,
    /// The injected call (dlopen, the runtime's constructor: probes armed).
    pub call: Duration,
    /// The part of `call` spent in the library's init function.
    pub init: Duration,
    /// How long the chosen thread was kept from its own work (stop to detach).
    pub paused: Duration,
    /// Times the thread was let go and stopped again to find a safe spot.
    pub retries: u32,
}

const NT_X86_XSTATE: libc::c_int = 0x202;
const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;
/// dlopen modes: the first copy of the runtime in a process is global (a C
/// module links against it); a second copy (a later session) is local and
/// binds its own symbols first, or its calls to its exported functions
/// would reach the inert copy of the earlier session.
pub const DLOPEN_FIRST: u64 = 2 | 0x100; // RTLD_NOW | RTLD_GLOBAL
pub const DLOPEN_SECOND: u64 = 2 | 0x8; // RTLD_NOW | RTLD_DEEPBIND (local)
/// How many times ptap stops the thread looking for a safe spot.
const SAFE_SPOT_TRIES: u32 = 1000;
/// Memory calls glibc's malloc makes while it holds an arena lock.
const MALLOC_SYSCALLS: [i64; 6] = [
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_brk,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
];

/// A traced thread; detaches (with its registers as they were) on drop.
struct Traced {
    tid: Pid,
    saved: Option<Saved>,
    /// Still traced (not detached, not gone).
    live: bool,
}

struct Saved {
    regs: libc::user_regs_struct,
    xstate: Vec<u8>,
}

fn wait_stop(tid: Pid, deadline: Option<Instant>, what: &str) -> anyhow::Result<WaitStatus> {
    let mut warned = false;
    let t0 = Instant::now();
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => return Ok(st),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("waitpid({tid}): {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(anyhow!("thread {tid} did not stop for ptrace ({what})"));
        }
        if !warned && t0.elapsed() > Duration::from_secs(5) {
            warned = true;
            eprintln!(
                "ptap: still waiting for thread {tid} of the target ({what}); it may be blocked on a lock it held when it was interrupted"
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Traced {
    fn seize(tid: i32) -> anyhow::Result<Traced> {
        let t = Pid::from_raw(tid);
        match ptrace::seize(t, ptrace::Options::empty()) {
            Ok(()) => Ok(Traced {
                tid: t,
                saved: None,
                live: true,
            }),
            Err(Errno::EPERM) => Err(anyhow!(
                "not permitted to trace pid {tid} (ptrace: EPERM): {}",
                eperm_hint(tid)
            )),
            Err(Errno::ESRCH) => Err(anyhow!("no such process: {tid}")),
            Err(e) => Err(anyhow!("cannot trace pid {tid}: ptrace(PTRACE_SEIZE): {e}")),
        }
    }

    /// Stop the thread (PTRACE_INTERRUPT) and wait for the stop; pending
    /// signals are passed through on the way.
    fn stop(&mut self) -> anyhow::Result<()> {
        ptrace::interrupt(self.tid).context("PTRACE_INTERRUPT")?;
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        loop {
            match wait_stop(self.tid, deadline, "interrupt")? {
                WaitStatus::PtraceEvent(_, Signal::SIGTRAP, libc::PTRACE_EVENT_STOP) => {
                    return Ok(())
                }
                WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
                    return Err(anyhow!(
                        "the process is stopped ({sig}, job control): continue it first (kill -CONT)"
                    ));
                }
                WaitStatus::Stopped(_, sig) => {
                    // A signal on its way to the thread: deliver it, the
                    // interrupt stop comes next.
                    ptrace::cont(self.tid, sig).context("PTRACE_CONT")?;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    self.live = false;
                    return Err(anyhow!("the process exited"));
                }
                _ => {
                    ptrace::cont(self.tid, None).context("PTRACE_CONT")?;
                }
            }
        }
    }

    fn save(&mut self) -> anyhow::Result<&Saved> {
        let regs = ptrace::getregs(self.tid).context("PTRACE_GETREGS")?;
        let mut xstate = vec![0u8; 64 * 1024];
        let mut iov = libc::iovec {
            iov_base: xstate.as_mut_ptr() as *mut libc::c_void,
            iov_len: xstate.len(),
        };
        // SAFETY: PTRACE_GETREGSET writes at most iov_len bytes into `xstate`.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGSET,
                self.tid.as_raw(),
                NT_X86_XSTATE as usize as *mut libc::c_void,
                &mut iov as *mut libc::iovec,
            )
        };
        if r != 0 {
            return Err(anyhow!(
                "PTRACE_GETREGSET(NT_X86_XSTATE): {}",
                std::io::Error::last_os_error()
            ));
        }
        xstate.truncate(iov.iov_len);
        Ok(self.saved.insert(Saved { regs, xstate }))
    }

    /// Put the saved registers back (the thread must be stopped).
    fn restore(&mut self) -> anyhow::Result<()> {
        let Some(s) = self.saved.as_mut() else {
            return Ok(());
        };
        ptrace::setregs(self.tid, s.regs).context("PTRACE_SETREGS")?;
        let mut iov = libc::iovec {
            iov_base: s.xstate.as_mut_ptr() as *mut libc::c_void,
            iov_len: s.xstate.len(),
        };
        // SAFETY: PTRACE_SETREGSET reads iov_len bytes from `xstate`.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGSET,
                self.tid.as_raw(),
                NT_X86_XSTATE as usize as *mut libc::c_void,
                &mut iov as *mut libc::iovec,
            )
        };
        if r != 0 {
            return Err(anyhow!(
                "PTRACE_SETREGSET(NT_X86_XSTATE): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Call `func(args...)` on the stopped thread; returns rax. Signals
    /// that arrive meanwhile are delivered to the target as usual.
    fn call(&mut self, func: u64, args: &[u64], data: &[u8]) -> anyhow::Result<u64> {
        let saved = self.saved.as_ref().context("registers not saved")?.regs;
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", self.tid))
            .with_context(|| format!("cannot open /proc/{}/mem", self.tid))?;
        // Below the red zone: the data, then the return address (0).
        let data_at = (saved.rsp - 128 - data.len() as u64) & !15;
        let sp = ((data_at - 64) & !15) - 8; // rsp+8 16-byte aligned at entry
        mem.write_all_at(data, data_at)
            .context("cannot write the target's stack")?;
        mem.write_all_at(&0u64.to_le_bytes(), sp)
            .context("cannot write the target's stack")?;
        let mut r = saved;
        r.rip = func;
        r.rsp = sp;
        r.rax = 0;
        r.orig_rax = u64::MAX; // -1: no system call restart into the call
        r.eflags &= !(EFLAGS_TF | EFLAGS_DF);
        let mut a = args
            .iter()
            .map(|&v| if v == u64::MAX { data_at } else { v });
        r.rdi = a.next().unwrap_or(0);
        r.rsi = a.next().unwrap_or(0);
        r.rdx = a.next().unwrap_or(0);
        ptrace::setregs(self.tid, r).context("PTRACE_SETREGS")?;
        ptrace::cont(self.tid, None).context("PTRACE_CONT")?;
        loop {
            match wait_stop(self.tid, None, "the injected dlopen")? {
                WaitStatus::Stopped(_, Signal::SIGSEGV) => {
                    let now = ptrace::getregs(self.tid).context("PTRACE_GETREGS")?;
                    if now.rip == 0 && now.rsp == sp + 8 {
                        return Ok(now.rax);
                    }
                    // A fault of the target's own (or a probe handler's
                    // guarded read): its handlers decide.
                    ptrace::cont(self.tid, Signal::SIGSEGV).context("PTRACE_CONT")?;
                }
                WaitStatus::Stopped(_, sig) => {
                    ptrace::cont(self.tid, sig).context("PTRACE_CONT")?;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    self.live = false;
                    return Err(anyhow!("the process exited during the injected call"));
                }
                _ => {
                    // Job-control stop (PTRACE_EVENT_STOP): finish the call first.
                    ptrace::cont(self.tid, None).context("PTRACE_CONT")?;
                }
            }
        }
    }

    /// Read a NUL-terminated string of the target (at most 4 KiB).
    fn read_cstr(&self, addr: u64) -> Option<String> {
        let mem = File::open(format!("/proc/{}/mem", self.tid)).ok()?;
        let mut buf = vec![0u8; 4096];
        let n = mem.read_at(&mut buf, addr).ok()?;
        buf.truncate(n);
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        let r = self.restore();
        self.saved = None;
        if self.live {
            self.live = false;
            ptrace::detach(self.tid, None).context("PTRACE_DETACH")?;
        }
        r
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.live {
            if let Err(e) = self.detach() {
                eprintln!("ptap: while detaching from thread {}: {e:#}", self.tid);
            }
        }
    }
}

/// Is the stopped thread at a place where calling dlopen is unlikely to
/// deadlock? Not in the dynamic loader, not in libc unless blocked in a
/// system call that is not one of malloc's.
fn safe_spot(regs: &libc::user_regs_struct, maps: &[Mapping]) -> bool {
    let in_syscall = regs.orig_rax as i64 >= 0;
    if in_syscall {
        return !MALLOC_SYSCALLS.contains(&(regs.orig_rax as i64));
    }
    let ip = regs.rip;
    !maps.iter().any(|m| {
        m.exec() && ip >= m.start && ip < m.end && {
            let n = file_name(&m.path);
            n.starts_with("libc.so")
                || n.starts_with("libc-")
                || n.starts_with("ld-")
                || n.starts_with("libdl")
                || n.starts_with("libpthread")
        }
    })
}

/// Is a SIGSEGV of thread `tid` neither blocked nor ignored (so that the
/// kernel leaves its disposition alone when the injected call returns to
/// address 0)?
fn segv_deliverable(pid: i32, tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let bit = 1u64 << (libc::SIGSEGV - 1);
    matches!((mask("SigBlk:"), mask("SigIgn:")), (Some(b), Some(i)) if (b | i) & bit == 0)
}

/// The /proc directory of process `pid` as seen by a live thread of it
/// (`/proc/PID`, or `/proc/TID` when the main thread has exited with
/// pthread_exit while others run: its maps and exe are gone).
pub fn proc_of(pid: i32) -> String {
    format!("/proc/{}", pick_thread(pid).unwrap_or(pid))
}

/// The thread to use: the main thread unless it has exited (then the
/// first live one); None when no thread lives.
fn pick_thread(pid: i32) -> Option<i32> {
    let live = |tid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
            .is_some_and(|st| st != 'Z' && st != 'X')
    };
    if live(&pid.to_string()) {
        return Some(pid);
    }
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            live(&n).then(|| n.parse::<i32>().ok()).flatten()
        })
}

/// Make `pid` dlopen `lib`, then call its exported `int init(void)`.
/// Ok: init's return value. The thread used is left exactly as it was, on
/// every path.
pub fn inject(
    pid: i32,
    lib: &Path,
    mode: u64,
    fns: &DlFns,
    init: &str,
    verbose: u8,
) -> anyhow::Result<(InjectTimes, i32)> {
    // Before stopping anything: where `init` is in the library.
    let data = std::fs::read(lib).with_context(|| format!("cannot read {}", lib.display()))?;
    let init_off = symbol_offsets(&data, &[init])
        .and_then(|v| v[0])
        .with_context(|| format!("{} does not export {init}", lib.display()))?;
    drop(data);
    let mut times = InjectTimes::default();
    // No thread may keep SIGTRAP & co. blocked once probes go in.
    let (changed, failed) = masks::unblock_managed(pid, verbose);
    if verbose > 0 && changed > 0 {
        eprintln!("ptap: {changed} thread(s) of pid {pid} blocked SIGTRAP or another signal the runtime handles: unblocked");
    }
    if !failed.is_empty() {
        eprintln!(
            "ptap: warning: thread(s) {failed:?} of pid {pid} keep SIGTRAP or another signal the runtime handles blocked: a trap-path probe hit there would kill the process"
        );
    }
    let maps = mappings(pid)?;
    let tid = pick_thread(pid).with_context(|| format!("pid {pid} has exited"))?;
    let t0 = Instant::now();
    let mut t = Traced::seize(tid)?;
    t.stop()?;
    let mut paused_at = Instant::now();
    let mut paused_before = Duration::ZERO;
    // Look for a safe spot: let the thread run a little and stop it again.
    // Never inject at an unsafe spot: a thread stopped inside malloc (even
    // without a lock: a single-threaded process takes none) would enter
    // malloc again from dlopen and corrupt its heap. Up to SAFE_SPOT_TRIES
    // short runs of the thread; then give up with an error.
    let (mut segv_ok, mut safe) = (false, false);
    for _ in 0..SAFE_SPOT_TRIES {
        let regs = ptrace::getregs(t.tid).context("PTRACE_GETREGS")?;
        segv_ok = segv_deliverable(pid, tid);
        safe = safe_spot(&regs, &maps);
        if segv_ok && safe {
            break;
        }
        times.retries += 1;
        paused_before += paused_at.elapsed();
        ptrace::cont(t.tid, None).context("PTRACE_CONT")?;
        std::thread::sleep(Duration::from_micros(200));
        t.stop()?;
        paused_at = Instant::now();
    }
    if !segv_ok {
        // The return to address 0 must raise a SIGSEGV ptap can take
        // away: the kernel would reset a blocked or ignored SIGSEGV's
        // handler to the default before ptap sees it.
        return Err(anyhow!(
            "thread {tid} of pid {pid} keeps SIGSEGV blocked or ignored (in a SIGSEGV handler?): ptap cannot call into it safely; try again"
        ));
    }
    if !safe {
        return Err(anyhow!(
            "thread {tid} of pid {pid} was inside libc or the dynamic loader each of the {SAFE_SPOT_TRIES} times ptap stopped it (calling dlopen there could re-enter malloc): try again"
        ));
    }
    times.to_stop = t0.elapsed();
    if verbose > 1 {
        eprintln!(
            "ptap: thread {tid} of pid {pid} stopped after {:.2?} ({} retries for a safe spot)",
            times.to_stop, times.retries
        );
    }
    t.save()?;
    let mut path = lib.as_os_str().as_encoded_bytes().to_vec();
    path.push(0);
    let tc = Instant::now();
    // u64::MAX stands for "the address of the data".
    let handle = t.call(fns.dlopen, &[u64::MAX, mode], &path)?;
    times.call = tc.elapsed();
    let mut err = None;
    let mut ret = 0;
    if handle != 0 {
        // The library's init function, in its fresh mapping.
        let lib_str = lib.to_string_lossy();
        let addr = mappings(pid).ok().and_then(|m| {
            let low = mapped_files(&m).into_iter().find(|(p, _)| *p == lib_str)?.1;
            Some(low + init_off)
        });
        match addr {
            Some(a) => {
                let tc = Instant::now();
                ret = t.call(a, &[], &[])? as u32 as i32;
                times.init = tc.elapsed();
                times.call += times.init;
            }
            None => {
                // dlopen returned a runtime that was already there: another
                // session loaded one since ptap looked.
                let other = mappings(pid).ok().is_some_and(|m| {
                    mapped_files(&m)
                        .iter()
                        .any(|(p, _)| p.contains("libptap_rt.so") && *p != lib_str)
                });
                err = Some(if other {
                    format!("another ptap session is attaching to pid {pid}")
                } else {
                    format!(
                        "{init} not found in {} as mapped in pid {pid}",
                        lib.display()
                    )
                })
            }
        }
    } else {
        let why = fns
            .dlerror
            .and_then(|f| t.call(f, &[], &[]).ok())
            .filter(|&p| p != 0)
            .and_then(|p| t.read_cstr(p))
            .unwrap_or_else(|| "no reason given".into());
        err = Some(format!(
            "dlopen({}) failed in pid {pid}: {why}",
            lib.display()
        ));
    }
    t.detach()?;
    times.paused = paused_before + paused_at.elapsed();
    match err {
        Some(e) => Err(anyhow!(e)),
        None => Ok((times, ret)),
    }
}
