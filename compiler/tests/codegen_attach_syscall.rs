//! A compiled module's system-call probes, registered in this test process
//! (its own process: while a syscall probe is registered every system call
//! of the process traps). getpgid is issued through libc's wrapper (libc's
//! text is not exempt from Syscall User Dispatch; this binary, which links
//! the runtime, is).
mod codegen_support;
use codegen_support::*;
use std::sync::atomic::Ordering;

const SCRIPT: &str = "global n, last, a1\n\
    probe kprobe(sys_getpgid) { n++; a1 = arg1 }\n\
    probe kretprobe(sys_getpgid) { last = ret }";

#[test]
fn syscall_entry_and_return_probes() {
    assert!(ptap_rt_core::hit::threads::init());
    ptap_rt_core::lifecycle::install::install();
    ptap_rt_core::hit::wrap::ACTIVE.store(true, Ordering::Release);
    let checked = ptap_lang::frontend("t.pt", SCRIPT, &ptap_lang::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let m =
        ptap_rt_core::script::load::load(&ptap_compiler::emit_object(&checked).unwrap()).unwrap();
    let e = env(SCRIPT);
    let a = ptap_rt_core::script::attach::attach(m, e.globals.base(), e.session.base())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(a.count(), 2);
    ptap_rt_core::syscall::runtime_ready();
    let me = std::process::id() as libc::pid_t;
    let mut pgid = 0;
    for _ in 0..3 {
        // SAFETY: getpgid has no preconditions.
        pgid = unsafe { libc::getpgid(me) };
    }
    a.detach();
    ptap_rt_core::syscall::shutdown();
    // SAFETY: as above.
    unsafe { libc::getpgid(me) };
    assert_eq!(e.long("n"), 3);
    assert_eq!(e.long("a1"), i64::from(me));
    assert_eq!(e.long("last"), i64::from(pgid));
}
