//! The context a compiled handler receives: `extern "C" fn(*mut ProbeCtx) -> i64`.
//!
//! The runtime (or ptap, for begin/end/timer probes, or a unit test) fills a
//! `ProbeCtx` on its own stack before each call. Compiled code reads the
//! fields at the offsets of [`offset`] (the compiler uses the same constants,
//! so the layout has one source of truth).

use core::mem::MaybeUninit;

use crate::abi::PtRegs;

/// No error.
pub const ERR_NONE: u32 = 0;
/// Division or modulo by zero.
pub const ERR_DIV0: u32 = 1;
/// The MAXACTION budget of this hit is exhausted (never catchable).
pub const ERR_MAXACTION: u32 = 2;
/// A read of target memory faulted (`error_arg` holds the address).
pub const ERR_FAULT: u32 = 3;
/// Function calls nested deeper than MAXNESTING.
pub const ERR_NESTING: u32 = 4;
/// `error(msg)` (the message is in `errmsg`).
pub const ERR_USER: u32 = 5;
/// A context value this probe cannot offer at run time (e.g. no registers).
pub const ERR_CONTEXT: u32 = 6;
/// `@min`/`@max`/`@avg` of an aggregate with no value.
pub const ERR_EMPTY_AGG: u32 = 7;
/// An array is full (`error_arg` holds its capacity).
pub const ERR_OVERFLOW: u32 = 8;
/// `next` inside a function: not an error, unwinds to the handler, which returns 0.
pub const ERR_NEXT: u32 = 0x100;

/// What a runtime error code means (ptap's messages and `catch (msg)`).
pub fn error_text(code: u32) -> &'static str {
    match code {
        ERR_DIV0 => "division by 0",
        ERR_MAXACTION => "MAXACTION exceeded",
        ERR_FAULT => "read fault",
        ERR_NESTING => "MAXNESTING exceeded",
        ERR_USER => "error()",
        ERR_CONTEXT => "context unavailable",
        ERR_EMPTY_AGG => "aggregate has no values",
        ERR_OVERFLOW => "Array overflow, check size limit",
        _ => "unknown runtime error",
    }
}

/// `arg1..6` convention (the `abi` field).
pub const ABI_SYSV: u32 = 0;
pub const ABI_SYSCALL: u32 = 1;

/// Size of the `errmsg` buffer.
pub const ERRMSG_MAX: usize = 256;

/// Bytes of the last `=~` match kept for `matched(n)` (longer matches are
/// kept truncated: their subexpressions are cut at this length).
pub const MATCH_TEXT_MAX: usize = 256;
/// `match_state`: no successful `=~` in this hit (or the last one failed).
pub const MATCH_NONE: u32 = 0;
/// `match_state`: the last `=~` matched; `match_*` hold its captures.
pub const MATCH_OK: u32 = 1;
/// `match_state`: the last `=~` matched, but its pattern is too large for
/// capture tracking ([`crate::script::regex::MAX_CAP_INSTR`]).
pub const MATCH_UNTRACKED: u32 = 2;

#[repr(C)]
pub struct ProbeCtx {
    /// The probed thread's registers (NULL in begin/end/timer probes).
    pub regs: *mut PtRegs,
    /// Base of the session's globals area ([`crate::script::globals`]).
    pub globals: *mut u8,
    /// Base of the session mapping (output ring); NULL: output is dropped and counted.
    pub session: *mut u8,
    /// Statements left in this hit's MAXACTION budget.
    pub actions: i64,
    /// `ERR_*`; set by compiled code or by a helper.
    pub error: u32,
    /// Index of the source location of the error (metadata `locations`).
    pub error_loc: u32,
    /// Probe index (metadata `probes`).
    pub probe: u32,
    /// Point index inside the probe.
    pub point: u32,
    /// Current script-function nesting depth.
    pub nesting: u32,
    /// `ABI_SYSV` or `ABI_SYSCALL` (used only by probes whose points mix both).
    pub abi: u32,
    /// `@entry` values saved by the entry handler (kretprobe), or NULL.
    pub entry: *mut i64,
    /// `pp()` text of the point that fired (not NUL-terminated).
    pub pp: *const u8,
    pub pp_len: u64,
    /// `probefunc()`: the probed function's name (not NUL-terminated), or NULL.
    pub func: *const u8,
    pub func_len: u64,
    /// `syscall_name()`: the (number, name) pairs of a system-call point, or NULL.
    pub syscalls: *const SyscallName,
    pub nsyscalls: u64,
    /// Extra value of an error (the faulting address for ERR_FAULT).
    pub error_arg: u64,
    /// Records this hit could not write (ring full or no session).
    pub dropped: u64,
    /// `MATCH_*`: what the last `=~` of this hit left for `matched(n)`.
    pub match_state: u32,
    /// Capturing subexpressions of the last matched pattern.
    pub match_groups: u32,
    /// Bytes of `match_text` in use (written before `MATCH_OK`).
    pub match_len: u32,
    /// System-wide mode: the kernel sample this handler runs over (in ptap),
    /// or NULL when the handler runs in the probed thread itself.
    pub sample: *const Sample,
    // The buffers last, after every scalar: the compiler may merge the
    // zeroing of adjacent scalars with (uninitialised) bytes between them
    // into one large memset, which is what `new` must not pay for.
    /// NUL-terminated message of `error(msg)`. Uninitialised until something
    /// sets `error` to `ERR_USER` (every writer writes the message first): a
    /// hit does not pay for clearing buffers it almost never uses.
    pub errmsg: [MaybeUninit<u8>; ERRMSG_MAX],
    /// Capture slots (`2n`, `2n + 1`) as offsets into `match_text`
    /// ([`crate::script::regex::UNSET`]: the group did not take part).
    /// Written (all of them) before `match_state` becomes `MATCH_OK`.
    pub match_caps: [MaybeUninit<u32>; crate::script::regex::NSLOTS],
    /// The text of the whole match (truncated to MATCH_TEXT_MAX); its first
    /// `match_len` bytes are written before `MATCH_OK`.
    pub match_text: [MaybeUninit<u8>; MATCH_TEXT_MAX],
}

/// A sample of another process: ptap runs handlers over perf samples
/// (system-wide mode), so the context helpers answer from here instead of
/// from the calling thread, and memory reads go to `pid`.
#[repr(C)]
pub struct Sample {
    pub pid: i32,
    pub tid: i32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC time of the event, ns.
    pub time_ns: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC when the session started, ns.
    pub realtime_offset_ns: i64,
    /// The thread's command name (NUL-terminated unless 16 bytes long).
    pub comm: [u8; 16],
    /// `ppid()` / `uid()` of `pid` (ptap reads /proc), or -1.
    pub ppid: i64,
    pub uid: i64,
    /// Reads of the sampled process's memory that failed (it exited, or
    /// the address was not mapped): counted for the end summary.
    pub failed_reads: core::sync::atomic::AtomicU64,
}

/// One system call a point watches (for `syscall_name()`).
#[repr(C)]
pub struct SyscallName {
    pub nr: u64,
    pub name: *const u8,
    pub len: u64,
}

impl ProbeCtx {
    /// A context with no error and a fresh action budget. Writes the scalar
    /// fields only (~150 bytes); the message and match buffers (~1 KiB) stay
    /// uninitialised until used.
    #[inline(always)]
    pub fn new(regs: *mut PtRegs, globals: *mut u8, session: *mut u8, maxaction: i64) -> ProbeCtx {
        ProbeCtx {
            regs,
            globals,
            session,
            actions: maxaction,
            error: ERR_NONE,
            error_loc: 0,
            probe: 0,
            point: 0,
            nesting: 0,
            abi: ABI_SYSV,
            entry: core::ptr::null_mut(),
            pp: core::ptr::null(),
            pp_len: 0,
            func: core::ptr::null(),
            func_len: 0,
            syscalls: core::ptr::null(),
            nsyscalls: 0,
            error_arg: 0,
            dropped: 0,
            errmsg: [MaybeUninit::uninit(); ERRMSG_MAX],
            match_state: MATCH_NONE,
            match_groups: 0,
            match_caps: [MaybeUninit::uninit(); crate::script::regex::NSLOTS],
            match_len: 0,
            match_text: [MaybeUninit::uninit(); MATCH_TEXT_MAX],
            sample: core::ptr::null(),
        }
    }

    /// The `error(msg)` text (empty unless `error` is `ERR_USER`).
    pub fn errmsg(&self) -> &[u8] {
        if self.error != ERR_USER {
            return &[];
        }
        // Every writer of `errmsg` wrote a NUL-terminated message (or a full
        // buffer) before setting ERR_USER: the bytes up to the first NUL
        // are initialised.
        let mut n = 0;
        // SAFETY: see above; reads stop at the first NUL.
        while n < ERRMSG_MAX && unsafe { self.errmsg[n].assume_init() } != 0 {
            n += 1;
        }
        // SAFETY: the first n bytes are initialised (above).
        unsafe { core::slice::from_raw_parts(self.errmsg.as_ptr() as *const u8, n) }
    }

    /// Where to write an `error(msg)` message (NUL-terminated, at most
    /// ERRMSG_MAX bytes); the caller sets `error = ERR_USER` afterwards.
    pub fn errmsg_ptr(&mut self) -> *mut u8 {
        self.errmsg.as_mut_ptr() as *mut u8
    }

    /// The message buffer as bytes, cleared first (for writers that format
    /// into a slice; an error path, so the 256-byte clear does not matter).
    pub fn errmsg_buf(&mut self) -> &mut [u8; ERRMSG_MAX] {
        let p = self.errmsg.as_mut_ptr() as *mut u8;
        // SAFETY: p is this buffer of ERRMSG_MAX bytes, zeroed before the
        // reference is made.
        unsafe {
            core::ptr::write_bytes(p, 0, ERRMSG_MAX);
            &mut *(p as *mut [u8; ERRMSG_MAX])
        }
    }

    /// Capture slot `k` of the last match (only when `match_state` is
    /// `MATCH_OK`, which is set after every slot was written).
    pub fn match_cap(&self, k: usize) -> u32 {
        if self.match_state != MATCH_OK {
            return crate::script::regex::UNSET;
        }
        // SAFETY: MATCH_OK: every slot is written (see the field).
        unsafe { self.match_caps[k].assume_init() }
    }

    /// The text of the last match (empty unless `match_state` is `MATCH_OK`).
    pub fn match_text(&self) -> &[u8] {
        if self.match_state != MATCH_OK {
            return &[];
        }
        let n = (self.match_len as usize).min(MATCH_TEXT_MAX);
        // SAFETY: MATCH_OK: the first match_len bytes are written.
        unsafe { core::slice::from_raw_parts(self.match_text.as_ptr() as *const u8, n) }
    }

    /// Record a successful match: its text (truncated) and capture slots.
    pub fn set_match(&mut self, text: &[u8], caps: &[u32], groups: u32) {
        let n = text.len().min(MATCH_TEXT_MAX);
        for (d, &b) in self.match_text.iter_mut().zip(&text[..n]) {
            *d = MaybeUninit::new(b);
        }
        self.match_len = n as u32;
        for (d, &c) in self.match_caps.iter_mut().zip(caps) {
            *d = MaybeUninit::new(c);
        }
        for d in self.match_caps.iter_mut().skip(caps.len()) {
            *d = MaybeUninit::new(crate::script::regex::UNSET);
        }
        self.match_groups = groups;
        self.match_state = MATCH_OK;
    }
}

/// Field offsets, for the code generator.
pub mod offset {
    use super::ProbeCtx;
    use core::mem::offset_of;
    pub const REGS: i32 = offset_of!(ProbeCtx, regs) as i32;
    pub const GLOBALS: i32 = offset_of!(ProbeCtx, globals) as i32;
    pub const SESSION: i32 = offset_of!(ProbeCtx, session) as i32;
    pub const ACTIONS: i32 = offset_of!(ProbeCtx, actions) as i32;
    pub const ERROR: i32 = offset_of!(ProbeCtx, error) as i32;
    pub const ERROR_LOC: i32 = offset_of!(ProbeCtx, error_loc) as i32;
    pub const NESTING: i32 = offset_of!(ProbeCtx, nesting) as i32;
    pub const ABI: i32 = offset_of!(ProbeCtx, abi) as i32;
    pub const ENTRY: i32 = offset_of!(ProbeCtx, entry) as i32;
}

/// A compiled probe handler (also the entry handler of a kretprobe with `@entry`).
pub type Handler = unsafe extern "C" fn(*mut ProbeCtx) -> i64;
