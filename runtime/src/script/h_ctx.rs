//! Context helpers: pid/tid/..., clocks, execname, pp, probefunc,
//! syscall_name, usymname, backtraces. Raw system calls only.

use core::sync::atomic::Ordering;

use super::ctx::{ProbeCtx, Sample, ERR_CONTEXT};
use super::globals::copy_str;
use super::h_args::{cap_of, globals_of, put};
use crate::base::sys;

/// The sample a handler runs over in system-wide mode (None in a target).
///
/// # Safety
/// `ctx` live; its `sample` NULL or live for the handler's run.
pub(super) unsafe fn sample<'a>(ctx: *mut ProbeCtx) -> Option<&'a Sample> {
    // SAFETY: caller contract.
    unsafe { ctx.as_ref().and_then(|c| c.sample.as_ref()) }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn pid(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    match unsafe { sample(ctx) } {
        Some(s) => i64::from(s.pid),
        None => i64::from(sys::getpid()),
    }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn tid(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    match unsafe { sample(ctx) } {
        Some(s) => i64::from(s.tid),
        None => i64::from(sys::gettid()),
    }
}

pub(super) const SYS_GETUID: usize = 102;
pub(super) const SYS_GETPPID: usize = 110;
pub(super) const SYS_PRCTL: usize = 157;
pub(super) const SYS_CLOCK_GETTIME: usize = 228;
pub(super) const SYS_GETCPU: usize = 309;
pub(super) const PR_GET_NAME: usize = 16;

pub(super) fn raw0(n: usize) -> i64 {
    // SAFETY: syscalls without pointer arguments.
    unsafe { sys::syscall3(n, 0, 0, 0) as i64 }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn ppid(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    match unsafe { sample(ctx) } {
        Some(s) => s.ppid,
        None => raw0(SYS_GETPPID),
    }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn uid(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    match unsafe { sample(ctx) } {
        Some(s) => s.uid,
        None => raw0(SYS_GETUID),
    }
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn cpu(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    if let Some(s) = unsafe { sample(ctx) } {
        return i64::from(s.cpu);
    }
    let mut c: u32 = 0;
    // SAFETY: getcpu writes one u32; node and cache may be NULL.
    let r = unsafe { sys::syscall3(SYS_GETCPU, &mut c as *mut u32 as usize, 0, 0) };
    if r < 0 {
        r as i64
    } else {
        i64::from(c)
    }
}

/// The main executable's load bias in this process, set when a module is
/// attached ([`note_exe_bias`]); 0 in ptap itself.
static EXE_BIAS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Remember the main executable's load bias (registration time: the
/// loader's object list is walked, which the hit path must not do).
pub fn note_exe_bias() {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut core::ffi::c_void,
    ) -> core::ffi::c_int {
        // SAFETY: dl_iterate_phdr hands a valid info; data is our u64. The
        // first object is the main executable.
        unsafe { *(data as *mut u64) = (*info).dlpi_addr };
        1
    }
    let mut bias = 0u64;
    // SAFETY: the callback only writes `bias`.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut bias as *mut u64 as *mut core::ffi::c_void) };
    EXE_BIAS.store(bias, Ordering::Relaxed);
}

/// # Safety
/// `ctx` live (unused).
pub(super) unsafe extern "C" fn exe_bias(_ctx: *mut ProbeCtx) -> i64 {
    EXE_BIAS.load(Ordering::Relaxed) as i64
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn target(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    globals_of(unsafe { &*ctx }).map_or(0, |g| {
        i64::from(g.header().target_pid.load(Ordering::Relaxed))
    })
}

pub(super) fn clock(id: usize) -> (i64, i64) {
    let mut ts = [0i64; 2];
    // SAFETY: ts is a valid timespec.
    unsafe { sys::syscall3(SYS_CLOCK_GETTIME, id, ts.as_mut_ptr() as usize, 0) };
    (ts[0], ts[1])
}

/// Monotonic nanoseconds (for measuring latencies); a sample's own time.
///
/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn nsecs(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    if let Some(s) = unsafe { sample(ctx) } {
        return s.time_ns as i64;
    }
    let (s, ns) = clock(1); // CLOCK_MONOTONIC
    s.wrapping_mul(1_000_000_000).wrapping_add(ns)
}

/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn gettimeofday_us(ctx: *mut ProbeCtx) -> i64 {
    // SAFETY: caller contract.
    if let Some(s) = unsafe { sample(ctx) } {
        return (s.time_ns as i64).wrapping_add(s.realtime_offset_ns) / 1000;
    }
    let (s, ns) = clock(0); // CLOCK_REALTIME
    s.wrapping_mul(1_000_000).wrapping_add(ns / 1000)
}

/// The current thread's command name (prctl PR_GET_NAME, 16 bytes).
///
/// # Safety
/// `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn execname(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let mut name = [0u8; 17];
    // SAFETY: caller contract.
    if let Some(s) = unsafe { sample(ctx) } {
        name[..16].copy_from_slice(&s.comm);
        // SAFETY: name is NUL-terminated (17th byte); dst per contract.
        unsafe { copy_str(dst, name.as_ptr(), cap_of(cap)) };
        return;
    }
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { sys::syscall3(SYS_PRCTL, PR_GET_NAME, name.as_mut_ptr() as usize, 0) };
    // SAFETY: name is NUL-terminated (17th byte); dst per contract.
    unsafe { copy_str(dst, name.as_ptr(), cap_of(cap)) };
}

/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn pp(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    let cap = cap_of(cap);
    if cap == 0 {
        return;
    }
    // SAFETY: caller contract; pp/pp_len describe a live byte string (or NULL).
    unsafe {
        let c = &*ctx;
        let n = if c.pp.is_null() {
            0
        } else {
            (c.pp_len as usize).min(cap - 1)
        };
        if n > 0 {
            core::ptr::copy_nonoverlapping(c.pp, dst, n);
        }
        *dst.add(n) = 0;
    }
}

/// `probefunc()`: the probed function's name ("" when unknown).
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn probefunc(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract; func/func_len describe a live string (or NULL).
    unsafe {
        let c = &*ctx;
        let name: &[u8] = if c.func.is_null() {
            &[]
        } else {
            core::slice::from_raw_parts(c.func, c.func_len as usize)
        };
        put(dst, cap, name);
    }
}

/// `syscall_name()`: the name of the call in `regs.orig_ax` among the point's calls.
///
/// # Safety
/// `ctx` live (regs non-NULL in a system-call probe); `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn syscall_name(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract; the table is live for the registration's life.
    unsafe {
        let c = &*ctx;
        let nr = if c.regs.is_null() {
            u64::MAX
        } else {
            (*c.regs).orig_ax
        };
        let mut name: &[u8] = &[];
        if !c.syscalls.is_null() {
            for s in core::slice::from_raw_parts(c.syscalls, c.nsyscalls as usize) {
                if s.nr == nr {
                    name = core::slice::from_raw_parts(s.name, s.len as usize);
                }
            }
        }
        put(dst, cap, name);
    }
}

/// `usymname(addr)`: the function containing `addr` in this process, or
/// `0x...` when no symbol is known. Reads the runtime's published symbol
/// index (no allocation, no lock).
///
/// # Safety
/// `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn usymname(ctx: *mut ProbeCtx, addr: i64, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract.
    if unsafe { no_symbols_here(ctx) } {
        return;
    }
    let found = crate::proc::symbols::current()
        .and_then(|idx| crate::proc::symbols::containing_at(idx, addr as u64));
    match found {
        // SAFETY: caller contract.
        Some((o, i)) => unsafe { put(dst, cap, o.display_name(i).as_bytes()) },
        None => {
            let mut tmp = [0u8; 18];
            let mut b = crate::fmt::Buf {
                data: &mut tmp,
                len: 0,
            };
            crate::session::output::push_hex(&mut b, addr as u64);
            let n = b.len;
            // SAFETY: caller contract.
            unsafe { put(dst, cap, &tmp[..n]) };
        }
    }
}

/// `ubacktrace()`: the return addresses of the probed context, hex,
/// separated by spaces (CFI unwinding; stops where the CFI ends; a
/// kretprobe's hijacked return address is replaced by the real one, as in
/// `dump_stack`), truncated to the buffer: `ucallers(-1)`.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn ubacktrace(ctx: *mut ProbeCtx, dst: *mut u8, cap: i64) {
    // SAFETY: caller contract.
    unsafe { super::h_stack::ucallers(ctx, -1, dst, cap) }
}

/// Symbols, unwinding and the ids read this process's own state: over a sample of
/// another process (system-wide mode) they are unavailable (an
/// ERR_CONTEXT error), never answered from ptap's own address space.
///
/// # Safety
/// `ctx` live.
pub(super) unsafe fn no_symbols_here(ctx: *mut ProbeCtx) -> bool {
    // SAFETY: caller contract.
    if unsafe { sample(ctx) }.is_none() {
        return false;
    }
    // SAFETY: caller contract.
    unsafe { (*ctx).error = ERR_CONTEXT };
    true
}

/// `gid()` (0), `euid()` (1), `egid()` (2) of the current process. Over a
/// sample of another process (system-wide mode) they are unavailable (an
/// ERR_CONTEXT error): the sample does not carry them.
///
/// # Safety
/// `ctx` live.
pub(super) unsafe extern "C" fn ids(ctx: *mut ProbeCtx, which: i64) -> i64 {
    // SAFETY: caller contract.
    if unsafe { no_symbols_here(ctx) } {
        return 0;
    }
    // getgid, geteuid, getegid.
    const NR: [usize; 3] = [104, 107, 108];
    raw0(NR[(which as usize).min(2)])
}

/// Reads `path` (NUL-terminated) into `buf` with raw system calls; the
/// number of bytes read, or None.
fn read_small_file(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    const SYS_READ: usize = 0;
    const SYS_CLOSE: usize = 3;
    const SYS_OPENAT: usize = 257;
    const AT_FDCWD: isize = -100;
    const O_RDONLY_CLOEXEC: usize = 0o2000000;
    // SAFETY: path is NUL-terminated (callers build it so).
    let fd = unsafe {
        sys::syscall3(
            SYS_OPENAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            O_RDONLY_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: the rest of buf is writable.
        let r = unsafe {
            sys::syscall3(
                SYS_READ,
                fd as usize,
                buf[n..].as_mut_ptr() as usize,
                buf.len() - n,
            )
        };
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { sys::syscall3(SYS_CLOSE, fd as usize, 0, 0) };
    Some(n)
}

/// `cmdline_str()` (which 0: the arguments separated by spaces),
/// `cmdline_arg(n)` (which 1: argument n, 0 the program; "" past the last)
/// and `pexecname()` (which 2: the parent's command name), from /proc with
/// raw system calls (at most 4 KiB of the command line). Over a sample of
/// another process (system-wide mode), or when /proc cannot be read:
/// ERR_CONTEXT.
///
/// # Safety
/// `ctx` live; `dst` valid for `cap` bytes.
pub(super) unsafe extern "C" fn proc_text(
    ctx: *mut ProbeCtx,
    which: i64,
    n: i64,
    dst: *mut u8,
    cap: i64,
) {
    // SAFETY: caller contract.
    unsafe { put(dst, cap, b"") };
    // SAFETY: caller contract.
    if unsafe { no_symbols_here(ctx) } {
        return;
    }
    let mut buf = [0u8; 4096];
    let got = if which == 2 {
        // "/proc/<ppid>/comm"
        let mut path = [0u8; 40];
        let mut len = 0;
        for &b in b"/proc/" {
            path[len] = b;
            len += 1;
        }
        let mut digits = [0u8; 20];
        let mut d = 0;
        let mut v = raw0(SYS_GETPPID).max(0) as u64;
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while d > 0 {
            d -= 1;
            path[len] = digits[d];
            len += 1;
        }
        for &b in b"/comm\0" {
            path[len] = b;
            len += 1;
        }
        read_small_file(&path[..len], &mut buf)
    } else {
        read_small_file(b"/proc/self/cmdline\0", &mut buf)
    };
    let Some(len) = got else {
        // SAFETY: caller contract.
        unsafe { (*ctx).error = ERR_CONTEXT };
        return;
    };
    let text = &mut buf[..len];
    let text: &[u8] = match which {
        2 => {
            let t = text.strip_suffix(b"\n").unwrap_or(text);
            t
        }
        1 => {
            let data = text.strip_suffix(b"\0").unwrap_or(text);
            match usize::try_from(n)
                .ok()
                .and_then(|i| data.split(|&c| c == 0).nth(i))
            {
                Some(a) => a,
                None => &[],
            }
        }
        _ => {
            let end = text.len() - usize::from(text.last() == Some(&0));
            for c in &mut text[..end] {
                if *c == 0 {
                    *c = b' ';
                }
            }
            &text[..end]
        }
    };
    // SAFETY: caller contract.
    unsafe { put(dst, cap, text) };
}
