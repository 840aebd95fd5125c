//! `runtime/include/ptap/syscalls.h`: syscall probes for C modules.

use core::ffi::{c_int, c_ulong, c_void};
use core::sync::atomic::Ordering;

pub use ptap_arch::regs::PtRegs;

use ptap_rt_core::hit::sigsys::probes::SyscallProbe;
use ptap_rt_core::hit::sigsys::probes::HITS;
use ptap_rt_core::hit::sigsys::probes::TRAPS;
use ptap_rt_core::syscall::armed_threads;
use ptap_rt_core::syscall::call_data;
use ptap_rt_core::syscall::register;
use ptap_rt_core::syscall::unregister;

/// # Safety
/// See [`register`].
#[no_mangle]
pub unsafe extern "C" fn register_syscall_probe(p: *mut SyscallProbe) -> c_int {
    // A C module's handlers (compiled scripts do not come through here).
    ptap_rt_core::kprobes::known::note_unknown();
    // SAFETY: forwarded contract.
    unsafe { register(p) }
}

/// # Safety
/// See [`unregister`].
#[no_mangle]
pub unsafe extern "C" fn unregister_syscall_probe(p: *mut SyscallProbe) {
    // SAFETY: forwarded contract.
    unsafe { unregister(p) }
}

/// `void *syscall_probe_data(void)`: see [`call_data`].
#[no_mangle]
pub extern "C" fn syscall_probe_data() -> *mut c_void {
    call_data() as *mut c_void
}

/// `int ptap_syscall_armed_threads(void)`: threads of this process whose
/// dispatch is on (for tests: 0 once every thread took its last trap after
/// a detach).
#[no_mangle]
pub extern "C" fn ptap_syscall_armed_threads() -> c_int {
    armed_threads() as c_int
}

/// libc sites moved out of libc now, and direct-path calls so far (see
/// [`sites`]).
/// # Safety
/// NULL or valid pointers.
#[no_mangle]
pub unsafe extern "C" fn ptap_syscall_sites(
    patched: *mut c_ulong,
    int3: *mut c_ulong,
    direct: *mut c_ulong,
) {
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !patched.is_null() {
            *patched = ptap_rt_core::syscall::sites::PATCHED.load(Ordering::Relaxed) as c_ulong;
        }
        if !int3.is_null() {
            *int3 = ptap_rt_core::syscall::sites::INT3.load(Ordering::Relaxed) as c_ulong;
        }
        if !direct.is_null() {
            *direct = ptap_rt_core::hit::sigsys::DIRECT.load(Ordering::Relaxed);
        }
    }
}

/// Traps taken and handler invocations so far in this process.
/// # Safety
/// NULL or valid pointers.
#[no_mangle]
pub unsafe extern "C" fn ptap_syscall_stats(traps: *mut c_ulong, hits: *mut c_ulong) {
    // SAFETY: caller-provided out pointers (NULL allowed).
    unsafe {
        if !traps.is_null() {
            *traps = TRAPS.load(Ordering::Relaxed);
        }
        if !hits.is_null() {
            *hits = HITS.load(Ordering::Relaxed);
        }
    }
}
