//! The probed process of a session: the -c command ptap started, or the
//! -x process it attached to.

use std::os::unix::process::ExitStatusExt;

/// The probed process: started by ptap (-c) or attached to (-x).
pub(crate) enum Target {
    Child(std::process::Child),
    Attached(Attached),
}

/// A process ptap attached to (`-x PID`). It is not ptap's child: its
/// exit is seen through a pidfd (or /proc when pidfds are missing), and its
/// exit status only when it is still a zombie at that moment.
pub(crate) struct Attached {
    pub pid: i32,
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Attached {
    pub(crate) fn new(pid: i32) -> Attached {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            use std::os::fd::FromRawFd;
            // SAFETY: a fresh fd we own.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
        });
        Attached { pid, pidfd }
    }

    /// Some(status if known) once the process has exited.
    fn exited(&self) -> Option<Option<std::process::ExitStatus>> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok();
        let zombie_code = stat.as_deref().and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            let mut f = rest.split(' ');
            let state = f.next()?;
            if state != "Z" && state != "X" {
                return None;
            }
            // Field 52 (exit_code): the 50th after the state field.
            f.nth(48)?.trim().parse::<i32>().ok()
        });
        let gone = match &self.pidfd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd, no wait.
                (unsafe { libc::poll(&mut p, 1, 0) }) > 0
            }
            None => stat.is_none() || zombie_code.is_some(),
        };
        gone.then(|| zombie_code.map(std::process::ExitStatus::from_raw))
    }
}

impl Target {
    pub(crate) fn id(&self) -> i32 {
        match self {
            Target::Child(c) => c.id() as i32,
            Target::Attached(a) => a.pid,
        }
    }

    /// Some(status, when known) once the process has exited.
    pub(crate) fn try_wait(&mut self) -> anyhow::Result<Option<Option<std::process::ExitStatus>>> {
        match self {
            Target::Child(c) => Ok(c.try_wait()?.map(Some)),
            Target::Attached(a) => Ok(a.exited()),
        }
    }

    pub(crate) fn is_child(&self) -> bool {
        matches!(self, Target::Child(_))
    }
}

/// "the target (pid N) exited with status C" (or "was killed by signal
/// S"; "exited" when the status is not known).
pub(crate) fn exit_text(pid: i32, st: Option<std::process::ExitStatus>) -> String {
    let how = match (st.and_then(|s| s.code()), st.and_then(|s| s.signal())) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(name) => format!("was killed by signal {sig} ({name})"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        _ => "exited".to_string(),
    };
    format!("the target (pid {pid}) {how}")
}
