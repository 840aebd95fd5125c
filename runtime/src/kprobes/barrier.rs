//! The signal barrier before a jump is written: every other thread reports
//! the ip it was interrupted at (see `optimize`). Its handler runs in
//! signal context on the other threads, and only records the ip.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::base::sys;

/// Ranges a barrier asks threads about: [lo, hi) pairs, and a "some thread
/// is inside" flag per pair.
const BAR_CAP: usize = 1 << 15;

static BAR_LO: [AtomicU64; BAR_CAP] = [const { AtomicU64::new(0) }; BAR_CAP];

static BAR_HI: [AtomicU64; BAR_CAP] = [const { AtomicU64::new(0) }; BAR_CAP];

static BAR_HIT: [AtomicBool; BAR_CAP] = [const { AtomicBool::new(false) }; BAR_CAP];

static BAR_N: AtomicUsize = AtomicUsize::new(0);

static BAR_ACKS: AtomicUsize = AtomicUsize::new(0);

/// si_value of barrier signals (with si_code SI_QUEUE and our pid): this
/// tag in the high half, the barrier's round in the low half.
pub const BARRIER_MAGIC: u64 = 0x7074_6170_0000_0000;

/// The current barrier's round: an answer to an earlier round that timed
/// out (a thread that got its CPU back late) must not count as an answer to
/// this one, or the barrier would end with one of this round's signals still
/// pending and restore SIG_DFL under it (the process would die of it).
static BAR_ROUND: AtomicU64 = AtomicU64::new(0);

const SI_QUEUE: i32 = -1;

/// The barrier's signal handler: record where this thread was interrupted.
/// Async-signal-safe: atomics only.
unsafe extern "C" fn barrier_handler(_sig: i32, info: *mut libc::siginfo_t, ucv: *mut c_void) {
    let uc = ucv as *mut libc::ucontext_t;
    // SAFETY: kernel-provided siginfo; for SI_QUEUE the pid is at +16 and
    // the value at +24.
    unsafe {
        if (*info).si_code != SI_QUEUE {
            return;
        }
        let base = info as *const u8;
        let pid = core::ptr::read(base.add(16) as *const i32);
        let val = core::ptr::read(base.add(24) as *const u64);
        let round = BAR_ROUND.load(Ordering::Acquire) & 0xffff_ffff;
        if val != BARRIER_MAGIC | round || pid != sys::getpid() {
            return;
        }
        let rip = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        note_ip(rip);
    }
    BAR_ACKS.fetch_add(1, Ordering::AcqRel);
}

fn note_ip(rip: u64) {
    let n = BAR_N.load(Ordering::Acquire).min(BAR_CAP);
    for k in 0..n {
        if rip >= BAR_LO[k].load(Ordering::Relaxed) && rip < BAR_HI[k].load(Ordering::Relaxed) {
            BAR_HIT[k].store(true, Ordering::Relaxed);
        }
    }
}

fn other_threads() -> Vec<i32> {
    let me = sys::gettid();
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&t| t != me)
                .collect()
        })
        .unwrap_or_default()
}

/// Is `sig` blocked in thread `tid` (SigBlk in /proc)?
fn blocked_in(tid: i32, sig: i32) -> bool {
    let Ok(st) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    st.lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & sys::sigbit(sig) != 0)
}

/// The user-mode ip of a thread that is not running (from
/// /proc/self/task/TID/syscall: "nr args… sp pc" or "-1 sp pc"); None
/// while it runs.
fn stopped_ip(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let last = s.split_whitespace().last()?;
    u64::from_str_radix(last.trim_start_matches("0x"), 16).ok()
}

/// A real-time signal nobody uses (SIG_DFL), with our handler installed for
/// the barrier; SIGTRAP cannot serve: a pending queued SIGTRAP would make
/// the kernel drop the SIGTRAP of an int3 executed meanwhile.
fn claim_signal() -> Option<i32> {
    for sig in (40..=63).rev() {
        let mut old = sys::KSigaction::default();
        // SAFETY: query only.
        unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) };
        if old.handler != 0 && old.handler != barrier_handler as *const () as usize {
            continue;
        }
        let act = sys::KSigaction {
            handler: barrier_handler as *const () as usize,
            flags: sys::SA_SIGINFO | sys::SA_RESTART,
            restorer: 0,
            mask: !0,
        };
        // SAFETY: installing our handler on an unused signal.
        unsafe { sys::rt_sigaction(sig, Some(&act), None) };
        return Some(sig);
    }
    None
}

/// Ask every other thread where it is; returns which ranges some thread was
/// inside. A thread that cannot tell (blocks the signal while running, or
/// does not answer in time) blocks every range.
pub(crate) fn barrier(ranges: &[(u64, u64)]) -> Vec<bool> {
    let all = vec![true; ranges.len()];
    let n = ranges.len().min(BAR_CAP);
    for (k, &(lo, hi)) in ranges.iter().take(n).enumerate() {
        BAR_LO[k].store(lo, Ordering::Relaxed);
        BAR_HI[k].store(hi, Ordering::Relaxed);
        BAR_HIT[k].store(false, Ordering::Relaxed);
    }
    let round = (BAR_ROUND.fetch_add(1, Ordering::AcqRel) + 1) & 0xffff_ffff;
    BAR_N.store(n, Ordering::Release);
    BAR_ACKS.store(0, Ordering::Release);
    let threads = other_threads();
    if threads.is_empty() {
        BAR_N.store(0, Ordering::Release);
        return vec![false; ranges.len()];
    }
    let Some(sig) = claim_signal() else {
        BAR_N.store(0, Ordering::Release);
        return all;
    };
    let pid = sys::getpid();
    let mut sent = Vec::with_capacity(threads.len());
    for tid in threads {
        let mut info = [0u8; 128];
        info[0..4].copy_from_slice(&sig.to_le_bytes());
        info[8..12].copy_from_slice(&SI_QUEUE.to_le_bytes());
        info[16..20].copy_from_slice(&pid.to_le_bytes());
        info[24..32].copy_from_slice(&(BARRIER_MAGIC | round).to_le_bytes());
        // SAFETY: rt_tgsigqueueinfo(tgid, tid, sig, &info) to our own threads.
        let r = unsafe {
            sys::syscall6(
                297,
                pid as usize,
                tid as usize,
                sig as usize,
                info.as_ptr() as usize,
                0,
                0,
            )
        };
        if r == 0 {
            sent.push(tid);
        }
    }
    // A thread inside a runtime signal handler has the signal blocked until
    // it returns (microseconds); one that blocks it for good (sigwait) does
    // not answer: after the timeout its ip is read from /proc if it is not
    // running, else every range counts as blocked.
    // 250 ms of wall time: on a loaded machine a runnable thread can wait
    // tens of milliseconds for a CPU before it runs its handler.
    let t0 = sys::monotonic_ns();
    let mut spins = 0u32;
    let mut timed_out = false;
    while BAR_ACKS.load(Ordering::Acquire) < sent.len() {
        if sys::monotonic_ns().saturating_sub(t0) > 250_000_000 {
            timed_out = true;
            break;
        }
        if spins < 200 {
            sys::sched_yield();
            spins += 1;
        } else {
            sys::sleep_us(50);
        }
    }
    let mut unknown = false;
    if timed_out {
        for &tid in &sent {
            if blocked_in(tid, sig) {
                match stopped_ip(tid) {
                    Some(ip) => note_ip(ip),
                    None => unknown |= sys::thread_alive(tid),
                }
            }
        }
        unknown |= BAR_ACKS.load(Ordering::Acquire)
            + sent.iter().filter(|&&t| blocked_in(t, sig)).count()
            < sent.len();
    }
    let out = if unknown {
        all
    } else {
        (0..ranges.len())
            .map(|k| k >= n || BAR_HIT[k].load(Ordering::Relaxed))
            .collect()
    };
    BAR_N.store(0, Ordering::Release);
    // Late answers find BAR_N = 0 and record nothing. The handler stays
    // installed if some are still due (SIG_DFL would kill the process).
    if !timed_out {
        let dfl = sys::KSigaction::default();
        // SAFETY: restoring the unused signal's default action.
        unsafe { sys::rt_sigaction(sig, Some(&dfl), None) };
    }
    out
}
