//! The contract end to end, the way the runtime uses it: an int3 at the original
//! address, a SIGTRAP handler that sends the thread to the slot (boosted, or
//! single-stepped with EFLAGS.TF and [`after_step`] after every trap), emulation for
//! relative branches, and a SIGSEGV handler that calls [`fault_fixup`].
//! A tiny test-only kprobe, run on the CPU in a [`Sandbox`].

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use super::*;
use crate::emulate::emulate;
use crate::regs::flags;
use crate::sandbox::{Sandbox, CODE, STACK_TOP};

/// Serializes the tests of this file: the handlers are process-wide.
static LOCK: Mutex<()> = Mutex::new(());
static SIM: AtomicPtr<Sim> = AtomicPtr::new(core::ptr::null_mut());

struct Sim {
    p: Prepared,
    orig: u64,
    slot: u64,
    single_step: bool,
    stepping: bool,
    /// ip after every trap the handler saw, after after_step's mapping.
    traps: Vec<u64>,
    done: Option<PtRegs>,
    fault: Option<PtRegs>,
    plain_fault: Option<PtRegs>,
    fault_landing: u64,
}

fn load(uc: &libc::ucontext_t) -> PtRegs {
    PtRegs::from_gregs(&uc.uc_mcontext.gregs)
}

fn store(uc: &mut libc::ucontext_t, r: &PtRegs) {
    r.to_gregs(&mut uc.uc_mcontext.gregs);
}

extern "C" fn on_trap(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext; SIM points at the live Sim of the test
    // holding LOCK (only that test's sandbox code traps).
    let (uc, sim) = unsafe {
        (
            &mut *(ctx as *mut libc::ucontext_t),
            &mut *SIM.load(Ordering::SeqCst),
        )
    };
    let mut r = load(uc);
    if sim.stepping {
        match after_step(&sim.p, sim.slot, &mut r) {
            StepResult::Continue => {}
            StepResult::Done => {
                r.flags &= !flags::TF;
                sim.stepping = false;
                sim.done = Some(r);
            }
        }
        sim.traps.push(r.ip);
    } else {
        assert_eq!(r.ip, sim.orig + 1, "int3 reports the address after it");
        r.ip = sim.orig;
        match sim.p.kind {
            Kind::Slot => {
                r.ip = sim.slot;
                if sim.single_step {
                    r.flags |= flags::TF;
                    sim.stepping = true;
                }
            }
            Kind::Emulate(e) => {
                emulate(&e, &mut r, &mut |a, v| {
                    // SAFETY: the sandbox stack is mapped and writable.
                    unsafe { core::ptr::write_unaligned(a as *mut u64, v) };
                    true
                })
                .unwrap();
                sim.done = Some(r);
            }
        }
        sim.traps.push(r.ip);
    }
    store(uc, &r);
}

extern "C" fn on_segv(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: as in on_trap.
    let (uc, sim) = unsafe {
        (
            &mut *(ctx as *mut libc::ucontext_t),
            &mut *SIM.load(Ordering::SeqCst),
        )
    };
    let mut r = load(uc);
    let in_slot = fault_fixup(&sim.p, sim.slot, &mut r);
    r.flags &= !flags::TF;
    sim.stepping = false;
    sim.fault = Some(PtRegs {
        orig_ax: in_slot as u64,
        ..r
    });
    r.ip = sim.fault_landing;
    store(uc, &r);
}

fn install() {
    for (sig, h) in [
        (libc::SIGTRAP, on_trap as extern "C" fn(_, _, _) as usize),
        (libc::SIGSEGV, on_segv as extern "C" fn(_, _, _) as usize),
    ] {
        // SAFETY: plain sigaction with an SA_SIGINFO handler; the tests that can raise
        // these signals hold LOCK and have SIM set.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = h;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
        }
    }
}

fn uninstall() {
    for sig in [libc::SIGTRAP, libc::SIGSEGV] {
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Probe `code` placed at orig: run it through int3 + slot (boosted or stepped), and
/// without the probe; `setup` prepares registers and memory. Returns (probed, plain, sim).
fn probe_run(
    code: &[u8],
    single_step: bool,
    setup: &dyn Fn(&Sandbox, u64, &mut PtRegs),
) -> (PtRegs, PtRegs, Box<Sim>, u64) {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new();
    let orig = sb.at(CODE);
    let slot = sb.at(CODE + 0x40000);
    sb.write(orig, code);
    let p = prepare(code, orig, slot).unwrap();
    sb.write(slot, p.slot_bytes());
    sb.land(orig + p.insn_len as u64);
    sb.land(orig + 0x700); // fault landing
    let mut sim = Box::new(Sim {
        p,
        orig,
        slot,
        single_step,
        stepping: false,
        traps: Vec::with_capacity(64),
        done: None,
        fault: None,
        plain_fault: None,
        fault_landing: orig + 0x700,
    });
    SIM.store(&mut *sim, Ordering::SeqCst);
    install();
    // without the probe first (a fault there lands at the fault landing too)
    let mut r = sb.regs();
    setup(&sb, orig, &mut r);
    let plain = sb.run(orig, &r);
    sim.plain_fault = sim.fault.take();
    sb.write(orig, &[0xcc]);
    let mut r = sb.regs();
    setup(&sb, orig, &mut r);
    let probed = sb.run(orig, &r);
    uninstall();
    SIM.store(core::ptr::null_mut(), Ordering::SeqCst);
    (probed, plain, sim, orig)
}

#[test]
fn boosted_rip_relative_load() {
    // 48 8b 05 f9 0f 00 00     mov 0xff9(%rip),%rax
    let code = [0x48, 0x8b, 0x05, 0xf9, 0x0f, 0x00, 0x00];
    let (probed, plain, sim, orig) = probe_run(&code, false, &|sb, orig, _| {
        sb.write_u64(orig + 0x1000, 0xfeed)
    });
    assert_eq!(probed, plain);
    assert_eq!(probed.ax, 0xfeed);
    assert_eq!(sim.traps, [sim.slot], "one trap: the int3");
    assert_eq!(probed.ip, orig + 7);
}

#[test]
fn single_stepped_rip_relative_load() {
    let code = [0x48, 0x8b, 0x05, 0xf9, 0x0f, 0x00, 0x00];
    let (probed, plain, sim, orig) = probe_run(&code, true, &|sb, orig, _| {
        sb.write_u64(orig + 0x1000, 0xfeed)
    });
    assert_eq!(probed, plain);
    assert_eq!(
        sim.traps,
        [sim.slot, orig + 7],
        "int3, then one TF trap mapped back"
    );
    assert_eq!(
        sim.done.unwrap().ax,
        0xfeed,
        "post_handler time sees the load done"
    );
}

#[test]
fn single_stepped_indirect_call() {
    // ff d0                    call *%rax   -> push; jmp: two TF traps
    let (probed, plain, sim, orig) = probe_run(&[0xff, 0xd0], true, &|sb, orig, r| {
        r.ax = orig + 0x900;
        sb.land(orig + 0x900);
    });
    assert_eq!(probed, plain);
    assert_eq!(sim.traps, [sim.slot, sim.slot + 6, orig + 0x900]);
    // post_handler time: at the callee, with the return address pushed
    let done = sim.done.unwrap();
    assert_eq!((done.ip, done.sp), (orig + 0x900, probed.sp));
    assert_eq!(probed.sp, (orig - CODE) + STACK_TOP - 8);
}

#[test]
fn single_stepped_ret_form_call_through_stack() {
    // ff 54 24 f8              call *-0x8(%rsp)  (5-instruction form: 5 TF traps)
    let (probed, plain, sim, orig) = probe_run(&[0xff, 0x54, 0x24, 0xf8], true, &|sb, orig, r| {
        sb.write_u64(r.sp - 8, orig + 0x900);
        sb.land(orig + 0x900);
    });
    assert_eq!(probed, plain);
    assert_eq!(sim.traps.len(), 6);
    assert_eq!(*sim.traps.last().unwrap(), orig + 0x900);
}

#[test]
fn single_stepped_rep_movsb_traps_per_iteration() {
    // f3 a4                    rep movsb %ds:(%rsi),%es:(%rdi)
    let (probed, plain, sim, orig) = probe_run(&[0xf3, 0xa4], true, &|sb, orig, r| {
        r.si = orig + 0x1000;
        r.di = orig + 0x1100;
        r.cx = 3;
        sb.write_u64(orig + 0x1000, 0x0033_2211);
        sb.write_u64(orig + 0x1100, 0);
    });
    assert_eq!(probed, plain);
    assert_eq!(sim.traps, [sim.slot, sim.slot, sim.slot, orig + 2]);
}

#[test]
fn single_stepped_and_boosted_syscall() {
    for step in [false, true] {
        let (probed, plain, sim, orig) = probe_run(&[0x0f, 0x05], step, &|_, _, r| r.ax = 39);
        assert_eq!(probed.ax, std::process::id() as u64);
        assert_eq!(probed.ip, orig + 2);
        if step {
            // single-stepped: the TF trap comes after the jump back (see after_step);
            // after_step also repairs rcx (return address) and r11 (no TF)
            assert_eq!(sim.traps, [sim.slot, orig + 2]);
            assert_eq!(probed, plain);
        } else {
            // boosted: rcx holds the slot's next address; everything else is the same
            assert_eq!(PtRegs { cx: 0, ..probed }, PtRegs { cx: 0, ..plain });
            assert_eq!(probed.cx, sim.slot + 2);
        }
    }
}

#[test]
fn emulated_call_through_int3() {
    // e8 fb 08 00 00           call orig+0x900
    let (probed, plain, sim, orig) =
        probe_run(&[0xe8, 0xfb, 0x08, 0x00, 0x00], false, &|sb, orig, _| {
            sb.land(orig + 0x900)
        });
    assert_eq!(probed, plain);
    assert_eq!(sim.traps, [orig + 0x900]);
}

#[test]
fn fault_in_slot_is_reported_at_the_original_address() {
    // ff 10                    call *(%rax)   with rax = 0x10 (unmapped): the jmp faults
    // after the push; fault_fixup undoes the push and points at the original call.
    for step in [false, true] {
        let (probed, plain, sim, orig) = probe_run(&[0xff, 0x10], step, &|_, _, r| r.ax = 0x10);
        let f = sim.fault.unwrap();
        assert_eq!(f.orig_ax, 1, "ip was inside the slot body");
        assert_eq!(f.ip, orig);
        assert_eq!(f.sp, probed.sp, "the push was undone");
        // exactly what the unprobed instruction's fault looks like
        let pf = sim.plain_fault.unwrap();
        assert_eq!(PtRegs { orig_ax: 1, ..pf }, f);
        assert_eq!(probed, plain);
    }
}
