//! A C module's init_module() and cleanup_module() run under the same fault
//! guard as probe handlers: a fault aborts the call (the module is then
//! taken out: everything it registered is unregistered) instead of killing
//! the process. init_module() also has a time limit (`PTAP_INIT_TIMEOUT`
//! seconds, default 10): a watchdog thread then abandons the call (a
//! queued SIGSEGV whose handler resumes the thread at the guard's recovery
//! point, as after a fault), and the process runs on unprobed.

use core::sync::atomic::Ordering;
use std::time::Duration;

use crate::base::sys;
use crate::hit::abandon::{ABANDON_MAGIC, INIT_TID};
use crate::hit::threads;
use crate::session::output;

/// How a module function call ended.
pub enum Outcome {
    Returned(i32),
    /// Aborted by a fault: the guard's description of it.
    Faulted(String),
    /// Abandoned after the time limit.
    TimedOut(u64),
}

/// The time limit of init_module() from `PTAP_INIT_TIMEOUT` (seconds).
pub fn init_timeout(v: Option<String>) -> u64 {
    v.and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(10)
}

/// Call the module function `f` (`int f(void)` or `void f(void)`) under
/// the fault guard, abandoned after `limit_s` seconds when given.
pub fn call(f: usize, limit_s: Option<u64>) -> Outcome {
    let Some(ts) = threads::current() else {
        // No thread slot (table full): unguarded, as before.
        // SAFETY: f is the module's function of that signature.
        let r = unsafe { core::mem::transmute::<usize, extern "C" fn() -> i32>(f)() };
        return Outcome::Returned(r);
    };
    let tid = sys::gettid();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = limit_s.map(|secs| {
        INIT_TID.store(tid, Ordering::Release);
        let _untraced = crate::hit::sigsys::probes::Untraced::new();
        let _quiet = crate::lifecycle::quiet::Quiet::new(); // the target's signals are not for it
        std::thread::Builder::new()
            .name("ptap-init-wd".into())
            .spawn(move || {
                if done_rx.recv_timeout(Duration::from_secs(secs)).is_ok() {
                    return false;
                }
                // Ask until the call is abandoned (not while a probe
                // handler runs on top of it) or returns.
                loop {
                    send_abandon(tid);
                    match done_rx.recv_timeout(Duration::from_millis(100)) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => return true,
                    }
                }
            })
    });
    // The module's code is not the runtime's own work (on `-x`'s attach
    // thread everything else is): its calls fire probes, as under `-c`, and
    // the watchdog may abandon it unless a probe handler or a registration
    // it called runs on top (`abandon_guarded`).
    // SAFETY: ts is this thread's slot; only this thread writes these.
    let own = unsafe {
        let own = ((*ts).in_handler, (*ts).own_work);
        (*ts).in_handler = 0;
        (*ts).own_work = 0;
        own
    };
    // SAFETY: ts is this thread's slot; f takes no argument (the guard's
    // three are ignored by a function of no parameters).
    let r = unsafe { crate::hit::asm::guarded(ts, f, 0, 0, 0) };
    // SAFETY: as above.
    unsafe {
        (*ts).in_handler = own.0;
        (*ts).own_work = own.1;
    }
    INIT_TID.store(0, Ordering::Release);
    let _ = done_tx.send(());
    let timed_out = match watchdog {
        Some(Ok(h)) => h.join().unwrap_or(false),
        _ => false,
    };
    match r {
        Some(v) => Outcome::Returned(v as i32),
        None if timed_out => Outcome::TimedOut(limit_s.unwrap_or(0)),
        None => {
            // SAFETY: this thread's slot; the guard kept the fault's details.
            let (trapno, ip, addr) = unsafe {
                let g = core::ptr::addr_of!((*ts).guard);
                ((*g).fault_trapno, (*g).fault_ip, (*g).fault_addr)
            };
            let mut data = [0u8; 256];
            let mut b = crate::fmt::Buf {
                data: &mut data,
                len: 0,
            };
            b.extend(b"trap ");
            output::push_dec(&mut b, trapno);
            b.extend(b", address ");
            output::push_hex(&mut b, addr);
            b.extend(b", ip ");
            crate::proc::symbols::symbolize(ip, &mut b);
            Outcome::Faulted(String::from_utf8_lossy(b.as_bytes()).into_owned())
        }
    }
}

fn send_abandon(tid: i32) {
    let pid = sys::getpid();
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&crate::base::signo::SIGSEGV.to_le_bytes());
    info[8..12].copy_from_slice(&(-1i32).to_le_bytes()); // SI_QUEUE
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[24..32].copy_from_slice(&ABANDON_MAGIC.to_le_bytes());
    // SAFETY: rt_tgsigqueueinfo(tgid, tid, sig, &info) to our own thread.
    unsafe {
        sys::syscall6(
            297,
            pid as usize,
            tid as usize,
            crate::base::signo::SIGSEGV as usize,
            info.as_ptr() as usize,
            0,
            0,
        )
    };
}
