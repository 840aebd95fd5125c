//! The runtime's own file descriptors stay out of the target's way: a
//! program expects its first open() to return 3, and may close every
//! descriptor above 2 (close_range, closefrom, daemons, spawners) and then
//! reuse the numbers. So the descriptors the runtime keeps are moved to high
//! numbers (close-on-exec), and checked before each use: one the target
//! closed, or closed and reused for a file of its own, is opened afresh,
//! never written to.

/// The lowest number for the runtime's descriptors (and ptap's session
/// descriptor in a `-c` command): 64 below the soft RLIMIT_NOFILE, capped
/// at 1024 (select()'s FD_SETSIZE; a larger limit would only grow the
/// process's descriptor table).
pub fn high_floor() -> i32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes `r`.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur.min(1024) as i32
    } else {
        1024
    };
    (soft - 64).max(3)
}

/// `fd` moved to a close-on-exec descriptor at or above [`high_floor`]
/// (the original is closed), or `fd` itself if that is not possible.
pub fn move_high(fd: i32) -> i32 {
    if fd < 0 {
        return fd;
    }
    // SAFETY: duplicating and closing our own descriptor.
    unsafe {
        let hi = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_floor());
        if hi < 0 {
            return fd;
        }
        libc::close(fd);
        hi
    }
}

/// What a kept descriptor was opened on: (device, inode, process).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ident {
    dev: u64,
    ino: u64,
    pid: i32,
}

fn ident_of(fd: i32) -> Option<(u64, u64)> {
    crate::base::sys::fstat(fd).map(|st| (st.st_dev, st.st_ino))
}

/// This process's `/proc/self/mem`, kept open at a high number: `fd` if it
/// still is the one opened (by this process) as `id`, else a new one
/// (`id` updated). An inherited one (after fork it names the parent's
/// memory) is closed; one the target closed, or reused, is left alone.
/// -1 if it cannot be opened.
pub fn proc_self_mem(fd: i32, id: &mut Ident) -> i32 {
    let pid = crate::base::sys::getpid();
    let same_file = fd >= 0 && ident_of(fd).is_some_and(|(d, i)| d == id.dev && i == id.ino);
    if same_file && id.pid == pid {
        return fd;
    }
    if same_file {
        // Ours, inherited across fork: the parent's memory.
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fd) };
    }
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    let fd = move_high(fd);
    *id = match ident_of(fd) {
        Some((dev, ino)) => Ident { dev, ino, pid },
        None => Ident::default(),
    };
    fd
}
