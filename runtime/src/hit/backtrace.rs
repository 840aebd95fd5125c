//! `dump_stack()`: a symbolized backtrace of the probed context.
//!
//! Inside a handler the probed registers are known: the trace is unwound
//! with the objects' .eh_frame CFI ([`crate::proc::eh_frame`]). Where CFI is
//! missing (hand-written asm, JIT code) it continues with the kernel's
//! "unreliable" scan: every stack word (copied with process_vm_readv, which
//! cannot fault) that points just after a call instruction is printed with
//! a "?". Hijacked kretprobe return addresses are shown as the real ones.

use crate::base::sys;
use crate::fmt::Buf;
use crate::hit::site::InstHdr;
use crate::hit::threads::ThreadState;
use crate::proc::symbols;
use crate::session::output;

const SCAN_WORDS: usize = 512;
const MAX_FRAMES: usize = 24;

fn read_stack(sp: u64, out: &mut [u64; SCAN_WORDS]) -> usize {
    let local = [out.as_mut_ptr() as usize, core::mem::size_of_val(out)];
    let mut n = 0;
    // Copy page by page: stop at the first unmapped page.
    let mut got = 0usize;
    while got < local[1] {
        let addr = sp as usize + got;
        let chunk = (4096 - (addr & 4095)).min(local[1] - got);
        let l = [local[0] + got, chunk];
        let r = [addr, chunk];
        // SAFETY: process_vm_readv on ourselves: the kernel checks both ranges.
        let res = unsafe {
            sys::syscall6(
                310,
                sys::getpid() as usize,
                l.as_ptr() as usize,
                1,
                r.as_ptr() as usize,
                1,
                0,
            )
        };
        if res <= 0 {
            break;
        }
        got += res as usize;
        n = got / 8;
    }
    n
}

fn after_call(idx: &symbols::Index, v: u64) -> bool {
    if symbols::executable(idx, v.wrapping_sub(7)).is_none()
        || symbols::executable(idx, v).is_none()
    {
        return false;
    }
    let mut b = [0u8; 7];
    // SAFETY: [v-7, v) lies in an executable (mapped) segment.
    unsafe { core::ptr::copy_nonoverlapping((v - 7) as *const u8, b.as_mut_ptr(), 7) };
    // Our own int3s hide call opcodes: look at the original bytes.
    for (k, byte) in b.iter_mut().enumerate() {
        if *byte == 0xcc {
            if let Some(site) = crate::hit::site::lookup(v - 7 + k as u64) {
                *byte = site.orig[0];
            }
        }
    }
    b[2] == 0xe8 // call rel32
        || (b[5] == 0xff && (b[6] >> 3) & 7 == 2) // call *%reg
        || (b[4] == 0xff && (b[5] >> 3) & 7 == 2) // call *disp8(%reg) / *(%reg,%idx)
        || (b[1] == 0xff && (b[2] >> 3) & 7 == 2) // call *disp32(...)
        || (b[0] == 0xff && (b[1] >> 3) & 7 == 2)
}

/// The real return address behind a hijacked one read from `slot`. Several
/// kretprobes on one function hook the same slot: the newest instance's
/// return address is the return stub the one before it left there, and so
/// on down to the real one (`site::chained_return`).
///
/// # Safety
/// `ts`, if given, is the calling thread's own slot (from `threads::current`).
pub(crate) unsafe fn unhijack(ts: Option<*mut ThreadState>, slot: u64) -> Option<u64> {
    let mut cur = ts.map_or(0, |t| {
        // SAFETY: this thread's slot.
        unsafe { (*t).kret_head }
    });
    while cur != 0 {
        let h = cur as *mut InstHdr;
        // SAFETY: instances are never freed.
        unsafe {
            if (*h).sp == slot {
                let newest = (*crate::hit::site::public(h)).ret_addr as u64;
                return Some(crate::hit::site::chained_return(cur, slot).unwrap_or(newest));
            }
            cur = (*h).next;
        }
    }
    None
}

/// Print a backtrace of the context `regs` (a probed thread): unwound
/// precisely with the .eh_frame CFI, continued by a stack scan ("?"
/// entries) if the CFI runs out before the outermost frame.
///
/// # Safety
/// `ts`, if given, is the calling thread's own slot (from `threads::current`).
pub unsafe fn dump_regs(ts: Option<*mut ThreadState>, regs: &crate::abi::PtRegs, skip_first: bool) {
    use crate::proc::eh_frame::{step, Frame, Stop};
    let Some(idx) = symbols::current() else {
        output::text(b"Call Trace: (no symbols)\n");
        return;
    };
    let mut data = [0u8; 2048];
    let mut b = Buf {
        data: &mut data,
        len: 0,
    };
    b.extend(b"Call Trace:\n");
    let line = |b: &mut Buf, ip: u64, guess: bool| {
        b.extend(b" [<");
        output::push_hex(b, ip);
        b.extend(if guess { b">] ? " } else { b">] " });
        symbols::symbolize(ip, b);
        b.push(b'\n');
    };
    let is_tramp = crate::hit::asm::is_ret_trampoline;
    let mut f = Frame::from_ptregs(regs);
    if !skip_first {
        line(&mut b, f.ip(), false);
    }
    let mut lost = false;
    for i in 0..MAX_FRAMES {
        match step(idx, &f, i == 0) {
            Ok(mut n) => {
                if is_tramp(n.ip()) {
                    // SAFETY: ts is this thread's slot (contract).
                    match unsafe { unhijack(ts, n.ra_slot) } {
                        Some(real) => n.regs[16] = real,
                        None => {
                            lost = true;
                            break;
                        }
                    }
                }
                line(&mut b, n.ip(), false);
                f = n;
            }
            Err(Stop::End) => break,
            Err(Stop::Lost) => {
                lost = true;
                break;
            }
        }
    }
    output::text(b.as_bytes());
    if lost {
        // SAFETY: forwarded contract.
        unsafe { scan(ts, idx, f.regs[7], true) };
    }
}

/// Print a backtrace starting at (ip, sp) to the output ring, by stack scan
/// only (no registers to unwind from: dump_stack outside a handler).
///
/// # Safety
/// `ts`, if given, is the calling thread's own slot (from `threads::current`).
pub unsafe fn dump(ts: Option<*mut ThreadState>, ip: u64, sp: u64) {
    let Some(idx) = symbols::current() else {
        output::text(b"Call Trace: (no symbols)\n");
        return;
    };
    let mut data = [0u8; 256];
    let mut b = Buf {
        data: &mut data,
        len: 0,
    };
    b.extend(b"Call Trace:\n [<");
    output::push_hex(&mut b, ip);
    b.extend(b">] ");
    symbols::symbolize(ip, &mut b);
    b.push(b'\n');
    output::text(b.as_bytes());
    // SAFETY: forwarded contract.
    unsafe { scan(ts, idx, sp, false) };
}

/// The kernel's "unreliable" trace: every stack word from `sp` up that
/// points just after a call instruction, marked with "?". With
/// `continuation`, the lines continue a trace already printed.
///
/// # Safety
/// As [`dump`].
unsafe fn scan(ts: Option<*mut ThreadState>, idx: &symbols::Index, sp: u64, continuation: bool) {
    let mut data = [0u8; 2048];
    let mut b = Buf {
        data: &mut data,
        len: 0,
    };
    if continuation {
        b.extend(b" (no unwind information further up; scanning the stack)\n");
    }
    let mut words = [0u64; SCAN_WORDS];
    let n = read_stack(sp, &mut words);
    let tramp = crate::hit::asm::trampoline_addr();
    let is_tramp = crate::hit::asm::is_ret_trampoline;
    let mut frames = 0;
    for (i, &w) in words.iter().take(n).enumerate() {
        let mut v = w;
        if is_tramp(v) {
            // A hijacked return address: the instance for this stack slot has the real one.
            // SAFETY: ts is this thread's slot (contract).
            v = unsafe { unhijack(ts, sp + 8 * i as u64) }.unwrap_or(tramp);
        }
        if is_tramp(v) || !after_call(idx, v) {
            continue;
        }
        b.extend(b" [<");
        output::push_hex(&mut b, v);
        b.extend(b">] ? ");
        symbols::symbolize(v, &mut b);
        b.push(b'\n');
        frames += 1;
        if frames >= MAX_FRAMES {
            break;
        }
    }
    output::text(b.as_bytes());
}
