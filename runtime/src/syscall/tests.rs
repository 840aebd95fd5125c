//! Unit tests of `crate::syscall`.

use super::*;
use crate::hit::sigsys::probes::{for_each_probe, watched};

unsafe extern "C" fn nop(_: *mut SyscallProbe, _: *mut PtRegs) -> c_int {
    0
}

// Registration only: the runtime's constructor never runs in the test
// harness (READY stays false), so nothing is armed here.
#[test]
fn registry_tracks_numbers_and_refuses_bad_probes() {
    let a = register_fns(&[2, 257, 437, 85], None, Some(nop), core::ptr::null_mut()).unwrap();
    let b = register_fns(&[110], Some(nop), None, core::ptr::null_mut()).unwrap();
    assert_eq!(watched(257), (false, true));
    assert_eq!(watched(85), (false, true));
    assert_eq!(watched(110), (true, false));
    assert_eq!(watched(0), (false, false));
    let mut seen = 0;
    for_each_probe(437, true, |_, p| {
        assert_eq!(p as *const SyscallProbe, probe_of(a));
        seen += 1;
    });
    assert_eq!(seen, 1);
    assert_eq!(
        register_fns(&[512], Some(nop), None, core::ptr::null_mut()),
        Err(-EINVAL)
    );
    assert_eq!(
        register_fns(&[-1], Some(nop), None, core::ptr::null_mut()),
        Err(-EINVAL)
    );
    assert_eq!(
        register_fns(&[1], None, None, core::ptr::null_mut()),
        Err(-EINVAL)
    );
    assert_eq!(
        register_fns(&[], Some(nop), None, core::ptr::null_mut()),
        Err(-EINVAL)
    );
    assert_eq!(
        // SAFETY: probe_of(b) is registered; a second registration is refused.
        unsafe { register(probe_of(b) as *mut SyscallProbe) },
        -EEXIST
    );
    // SAFETY: NULL is refused.
    assert_eq!(unsafe { register(core::ptr::null_mut()) }, -EINVAL);
    unregister_id(a);
    assert_eq!(watched(257), (false, false));
    assert_eq!(watched(110), (true, false));
    unregister_id(b);
    assert_eq!(watched(110), (false, false));
    assert!(!ON.load(Ordering::Acquire));
}
