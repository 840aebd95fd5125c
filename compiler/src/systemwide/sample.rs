//! From a perf record to a handler run: decode the sample (who, where,
//! when, the tracepoint record or the user registers), keep the side-band
//! state (thread names from COMM records, parents from FORK, the arguments
//! of system calls in flight for kretprobes that read `argN`), fill a
//! `ProbeCtx` whose `sample` tells the context helpers to answer from the
//! sample, and run the compiled handler in ptap.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use ptap_rt_core::abi::PtRegs;
use ptap_rt_core::script::ctx::{Handler, ProbeCtx, Sample, SyscallName};
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::session::Session;

/// What a sample of an event carries and how to read it.
pub enum Decode {
    /// `sys_enter_*`: the arguments at these offsets of the raw record.
    Enter(Vec<usize>),
    /// `sys_exit_*`: `ret` at this offset of the raw record.
    Exit(usize),
    /// A uprobe: `PERF_SAMPLE_REGS_USER`.
    Regs,
}

/// One armed point.
pub struct Point {
    pub handler: Option<Handler>,
    pub probe: u32,
    pub point: u32,
    pub abi: u32,
    pub pp: String,
    pub func: String,
    pub syscall_nr: u64,
    pub syscalls: Vec<SyscallName>,
    /// Owns the names `syscalls` points into.
    pub _names: Vec<String>,
    pub decode: Decode,
}

// PERF_RECORD_* types.
const LOST: u32 = 2;
const COMM: u32 = 3;
const EXIT: u32 = 4;
const FORK: u32 = 7;
const SAMPLE: u32 = 9;

/// The `perf_regs` order of the registers a uprobe sample carries
/// (`sample_regs_user`): AX BX CX DX SI DI BP SP IP FLAGS CS SS, R8..R15
/// (DS ES FS GS are not available on x86-64).
pub const REGS_MASK: u64 = 0xfff | (0xff << 16);

/// Bytes of the `sample_id` trailer of side-band records
/// (TID, TIME, CPU, IDENTIFIER).
const TRAILER: usize = 32;

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// The record's type.
pub fn kind(rec: &[u8]) -> u32 {
    u32_at(rec, 0)
}

/// The time of a record (samples: their TIME; side-band records: their
/// trailer), for ordering the records of all CPUs.
pub fn time(rec: &[u8]) -> u64 {
    match kind(rec) {
        SAMPLE => u64_at(rec, 24),
        _ if rec.len() >= 8 + TRAILER => u64_at(rec, rec.len() - 24),
        _ => 0,
    }
}

/// What the handlers run against.
pub struct Runner<'a> {
    pub points: Vec<Point>,
    /// Event id -> index in `points`.
    pub by_id: HashMap<u64, usize>,
    pub globals: &'a Globals,
    pub session: &'a Session,
    pub maxaction: i64,
    pub maxerrors: u64,
    /// Look up `ppid()`/`uid()` (only when the module uses them).
    pub wants_ids: bool,
    /// ptap's own pid: its own events are not traced.
    pub me: i32,
    pub sample: Sample,
    comm: HashMap<i32, [u8; 16]>,
    ids: HashMap<i32, (i64, i64)>,
    pub lost: u64,
    pub samples: u64,
}

impl<'a> Runner<'a> {
    pub fn new(
        points: Vec<Point>,
        by_id: HashMap<u64, usize>,
        globals: &'a Globals,
        session: &'a Session,
        meta: &ptap_rt_core::script::meta::Meta,
        wants_ids: bool,
    ) -> Runner<'a> {
        let now = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: ts is a valid timespec.
            unsafe { libc::clock_gettime(id, &mut ts) };
            ts.tv_sec * 1_000_000_000 + ts.tv_nsec
        };
        Runner {
            points,
            by_id,
            globals,
            session,
            maxaction: i64::try_from(meta.limits.maxaction).unwrap_or(i64::MAX),
            maxerrors: meta.limits.maxerrors,
            wants_ids,
            me: std::process::id() as i32,
            sample: Sample {
                pid: 0,
                tid: 0,
                cpu: 0,
                time_ns: 0,
                realtime_offset_ns: now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC),
                comm: [0; 16],
                ppid: -1,
                uid: -1,
                failed_reads: Default::default(),
            },
            comm: HashMap::new(),
            ids: HashMap::new(),
            lost: 0,
            samples: 0,
        }
    }

    /// Handle one record.
    pub fn record(&mut self, rec: &[u8]) {
        match kind(rec) {
            SAMPLE => self.on_sample(rec),
            LOST => self.lost += u64_at(rec, 16),
            COMM => {
                let (pid, tid) = (u32_at(rec, 8) as i32, u32_at(rec, 12) as i32);
                let end = rec.len().saturating_sub(TRAILER);
                let mut c = [0u8; 16];
                let name = rec.get(16..end).unwrap_or(&[]);
                let n = name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name.len())
                    .min(16);
                c[..n].copy_from_slice(&name[..n]);
                self.comm.insert(tid, c);
                if pid == tid {
                    // exec: the process may have changed identity.
                    self.ids.remove(&pid);
                }
            }
            FORK => {
                let (pid, ppid, tid, ptid) = (
                    u32_at(rec, 8) as i32,
                    u32_at(rec, 12) as i32,
                    u32_at(rec, 16) as i32,
                    u32_at(rec, 20) as i32,
                );
                if let Some(c) = self.comm.get(&ptid).copied() {
                    self.comm.insert(tid, c);
                }
                if pid != ppid {
                    self.ids.remove(&pid);
                }
            }
            EXIT => {
                let (pid, tid) = (u32_at(rec, 8) as i32, u32_at(rec, 16) as i32);
                self.comm.remove(&tid);
                if pid == tid {
                    self.ids.remove(&pid);
                }
            }
            _ => {}
        }
    }

    fn comm_of(&mut self, pid: i32, tid: i32) -> [u8; 16] {
        if let Some(c) = self.comm.get(&tid) {
            return *c;
        }
        // A thread that started before ptap: its name from /proc.
        let text = std::fs::read(format!("/proc/{pid}/task/{tid}/comm"))
            .or_else(|_| std::fs::read(format!("/proc/{pid}/comm")))
            .unwrap_or_default();
        let mut c = [0u8; 16];
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        let n = text.len().min(16);
        c[..n].copy_from_slice(&text[..n]);
        self.comm.insert(tid, c);
        c
    }

    fn ids_of(&mut self, pid: i32) -> (i64, i64) {
        if let Some(v) = self.ids.get(&pid) {
            return *v;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(-1)
        };
        let v = (field("PPid:"), field("Uid:"));
        self.ids.insert(pid, v);
        v
    }

    fn on_sample(&mut self, rec: &[u8]) {
        // IDENTIFIER, TID, TIME, CPU, then RAW or REGS_USER.
        let id = u64_at(rec, 8);
        let Some(&pi) = self.by_id.get(&id) else {
            return;
        };
        let (pid, tid) = (u32_at(rec, 16) as i32, u32_at(rec, 20) as i32);
        if pid == self.me {
            return;
        }
        self.samples += 1;
        let time = u64_at(rec, 24);
        let cpu = u32_at(rec, 32);
        let body = rec.get(40..).unwrap_or(&[]);
        let mut regs = PtRegs::default();
        let p = &self.points[pi];
        match &p.decode {
            Decode::Enter(offs) => {
                let raw = body.get(4..4 + u32_at(body, 0) as usize).unwrap_or(&[]);
                let mut a = [0u64; 6];
                for (i, off) in offs.iter().take(6).enumerate() {
                    a[i] = u64_at(raw, *off);
                }
                set_syscall_args(&mut regs, &a);
                regs.orig_ax = p.syscall_nr;
            }
            Decode::Exit(off) => {
                let raw = body.get(4..4 + u32_at(body, 0) as usize).unwrap_or(&[]);
                regs.ax = u64_at(raw, *off);
                regs.orig_ax = p.syscall_nr;
            }
            Decode::Regs => {
                if u64_at(body, 0) != 0 {
                    let r = |i: usize| u64_at(body, 8 + 8 * i);
                    // In REGS_MASK order: AX BX CX DX SI DI BP SP IP FLAGS CS SS R8..R15.
                    regs.ax = r(0);
                    regs.bx = r(1);
                    regs.cx = r(2);
                    regs.dx = r(3);
                    regs.si = r(4);
                    regs.di = r(5);
                    regs.bp = r(6);
                    regs.sp = r(7);
                    regs.ip = r(8);
                    regs.flags = r(9);
                    regs.cs = r(10);
                    regs.ss = r(11);
                    regs.r8 = r(12);
                    regs.r9 = r(13);
                    regs.r10 = r(14);
                    regs.r11 = r(15);
                    regs.r12 = r(16);
                    regs.r13 = r(17);
                    regs.r14 = r(18);
                    regs.r15 = r(19);
                }
            }
        }
        if self.globals.header().errors.load(Ordering::Relaxed) > self.maxerrors {
            return;
        }
        let comm = self.comm_of(pid, tid);
        let (ppid, uid) = if self.wants_ids {
            self.ids_of(pid)
        } else {
            (-1, -1)
        };
        let s = &mut self.sample;
        s.pid = pid;
        s.tid = tid;
        s.cpu = cpu;
        s.time_ns = time;
        s.comm = comm;
        s.ppid = ppid;
        s.uid = uid;
        let p = &self.points[pi];
        let Some(h) = p.handler else { return };
        let mut ctx = ProbeCtx::new(
            &mut regs,
            self.globals.base(),
            self.session.base(),
            self.maxaction,
        );
        ctx.probe = p.probe;
        ctx.point = p.point;
        ctx.abi = p.abi;
        ctx.pp = p.pp.as_ptr();
        ctx.pp_len = p.pp.len() as u64;
        ctx.func = p.func.as_ptr();
        ctx.func_len = p.func.len() as u64;
        if !p.syscalls.is_empty() {
            ctx.syscalls = p.syscalls.as_ptr();
            ctx.nsyscalls = p.syscalls.len() as u64;
        }
        ctx.sample = &self.sample;
        // SAFETY: a handler of the module loaded into ptap; ctx points to
        // live registers, globals, session and sample for the call.
        unsafe { ptap_rt_core::script::run_handler(h, &mut ctx) };
    }

    pub fn failed_reads(&self) -> u64 {
        self.sample.failed_reads.load(Ordering::Relaxed)
    }
}

/// A system call's arguments in the registers the syscall ABI uses.
fn set_syscall_args(regs: &mut PtRegs, a: &[u64; 6]) {
    regs.di = a[0];
    regs.si = a[1];
    regs.dx = a[2];
    regs.r10 = a[3];
    regs.r8 = a[4];
    regs.r9 = a[5];
}
