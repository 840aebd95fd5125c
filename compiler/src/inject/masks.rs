//! Before the runtime goes into a running process (`-x`): no thread of it
//! may keep SIGTRAP (or another signal the runtime handles: SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE, SIGSYS) blocked, or a probe hit there (an int3,
//! also the one a jump-optimized probe has while it is being patched)
//! would kill the process. Servers commonly block every signal before
//! starting their workers (and sigwait in one thread): each such thread is
//! stopped briefly (PTRACE_SEIZE + PTRACE_INTERRUPT) and those signals are
//! taken out of its mask (PTRACE_SETSIGMASK). Under `-c` the runtime's
//! interposed sigprocmask does this as the target sets its masks.

use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// The signals the runtime handles itself (runtime/src/base/signo.rs MANAGED).
fn managed_mask() -> u64 {
    ptap_rt_core::base::signo::managed_mask()
}

/// The blocked mask of thread `tid` of `pid` from /proc.
fn blocked(pid: i32, tid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// Take the managed signals out of the mask of every thread of `pid` that
/// blocks one. Returns the number of threads changed, and the threads that
/// could not be (gone meanwhile, stopped by job control, ...).
pub fn unblock_managed(pid: i32, verbose: u8) -> (usize, Vec<i32>) {
    let mut changed = 0;
    let mut failed = Vec::new();
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    for tid in tids {
        if blocked(pid, tid).is_none_or(|m| m & managed_mask() == 0) {
            continue;
        }
        if in_sigtimedwait(pid, tid) {
            // Interrupted, sigwaitinfo/sigtimedwait would return EINTR to
            // the program, and the kernel puts the mask back when the call
            // ends anyway: left as it is (reported).
            failed.push(tid);
            continue;
        }
        match unblock_one(tid) {
            Ok(true) => changed += 1,
            Ok(false) => {}
            Err(e) => {
                if verbose > 0 {
                    eprintln!("ptap: thread {tid} of pid {pid}: {e:#}");
                }
                failed.push(tid);
            }
        }
    }
    (changed, failed)
}

/// Is thread `tid` waiting in rt_sigtimedwait (sigwait & co.)?
fn in_sigtimedwait(pid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some("128"))
}

fn unblock_one(tid: i32) -> anyhow::Result<bool> {
    let t = Pid::from_raw(tid);
    ptrace::seize(t, ptrace::Options::empty()).context("PTRACE_SEIZE")?;
    let r = stopped(t).and_then(|()| {
        let mut mask = 0u64;
        // SAFETY: PTRACE_GETSIGMASK writes 8 bytes (the size given) to `mask`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_GETSIGMASK,
                tid,
                8usize as *mut libc::c_void,
                &mut mask as *mut u64 as *mut libc::c_void,
            )
        };
        if r != 0 {
            return Err(anyhow!("PTRACE_GETSIGMASK: {}", Errno::last()));
        }
        if mask & managed_mask() == 0 {
            return Ok(false);
        }
        let new = mask & !managed_mask();
        // SAFETY: PTRACE_SETSIGMASK reads 8 bytes from `new`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SETSIGMASK,
                tid,
                8usize as *mut libc::c_void,
                &new as *const u64 as *mut libc::c_void,
            )
        };
        if r != 0 {
            return Err(anyhow!("PTRACE_SETSIGMASK: {}", Errno::last()));
        }
        Ok(true)
    });
    let _ = ptrace::detach(t, None);
    r
}

/// PTRACE_INTERRUPT and wait for the stop (signals on their way are
/// delivered), at most 2 s.
fn stopped(t: Pid) -> anyhow::Result<()> {
    ptrace::interrupt(t).context("PTRACE_INTERRUPT")?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(WaitStatus::PtraceEvent(_, Signal::SIGTRAP, libc::PTRACE_EVENT_STOP)) => {
                return Ok(())
            }
            Ok(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)) => {
                return Err(anyhow!("stopped by job control"))
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                ptrace::cont(t, sig).context("PTRACE_CONT")?;
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Err(anyhow!("exited")),
            Ok(_) => {
                ptrace::cont(t, None).context("PTRACE_CONT")?;
            }
            Err(e) => return Err(anyhow!("waitpid: {e}")),
        }
        if Instant::now() > deadline {
            return Err(anyhow!("did not stop for ptrace"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
