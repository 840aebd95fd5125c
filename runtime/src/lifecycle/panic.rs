//! The runtime's panic hook: abort, and nothing else.
//!
//! A panic in the runtime is a bug, and it may happen inside a signal
//! handler or a trampoline, on a thread of the target. std's own panic path
//! would then print through std's stderr lock and unwind through the
//! target's frames or across an `extern "C"` boundary. Installed by the
//! shared object's constructor (only in a target: ptap, which links this
//! crate too, keeps std's hook), the hook writes one line with raw write(2) and kills the process
//! with SIGABRT; it allocates nothing and takes no lock.

use crate::base::sys;
use crate::fmt::Buf;
use crate::session::output;

const SIGABRT: i32 = 6;

/// Make every later panic in this process's copy of std (the runtime's own:
/// the cdylib carries its own std, so a Rust target keeps its hook) abort.
pub fn install_abort_hook() {
    std::panic::set_hook(Box::new(abort_on_panic));
}

fn abort_on_panic(info: &std::panic::PanicHookInfo<'_>) {
    let mut data = [0u8; 320];
    let mut b = Buf {
        data: &mut data,
        len: 0,
    };
    b.extend(b"ptap: internal error: the runtime panicked");
    if let Some(at) = info.location() {
        b.extend(b" at ");
        b.extend(at.file().as_bytes());
        b.push(b':');
        output::push_dec(&mut b, at.line() as u64);
    }
    b.extend(b"; aborting\n");
    sys::write_all(2, b.as_bytes());
    die_by_sigabrt();
}

/// SIGABRT with the default action, unblocked, sent to this thread; if the
/// process survives that somehow, exit_group(134).
fn die_by_sigabrt() -> ! {
    let dfl = sys::KSigaction::default();
    let bit = sys::sigbit(SIGABRT);
    // SAFETY: resetting one disposition and unblocking one signal of this
    // thread, on the way out of the process.
    unsafe {
        sys::rt_sigaction(SIGABRT, Some(&dfl), None);
        sys::rt_sigprocmask(1, Some(&bit), None);
    }
    sys::tgkill(sys::getpid(), sys::gettid(), SIGABRT);
    loop {
        // SAFETY: exit_group takes a plain integer and does not return.
        unsafe { sys::syscall3(sys::SYS_EXIT_GROUP, 134, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forked child installs the hook and panics under catch_unwind:
    /// with std's hook the panic would be caught (exit 3); with ours the
    /// child dies of SIGABRT before any unwinding, after one line on stderr.
    #[test]
    fn a_panic_aborts_with_one_line() {
        let mut fds = [0i32; 2];
        // SAFETY: a pipe into a local array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only runs the code below and leaves by _exit or
        // by the signal.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: stderr onto the pipe's write end, in the child.
            unsafe { libc::dup2(fds[1], 2) };
            install_abort_hook();
            let r = std::panic::catch_unwind(|| panic!("on purpose"));
            // SAFETY: leaving the child without running the harness.
            unsafe { libc::_exit(if r.is_err() { 3 } else { 4 }) };
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let mut out = [0u8; 512];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), out.len()) };
        // SAFETY: closing the read end.
        unsafe { libc::close(fds[0]) };
        let text = String::from_utf8_lossy(&out[..n.max(0) as usize]).into_owned();
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == SIGABRT,
            "status {status:#x}, stderr {text:?}"
        );
        assert!(
            text.starts_with(
                "ptap: internal error: the runtime panicked at runtime/src/lifecycle/panic.rs:"
            ) && text.ends_with("; aborting\n")
                && text.lines().count() == 1,
            "{text:?}"
        );
    }
}
