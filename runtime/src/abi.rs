//! The C structures of `ptap/kprobes.h`, mirrored field for field.

use core::ffi::{c_char, c_int, c_ulong, c_void};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

pub use ptap_arch::regs::PtRegs;

pub type PreHandler = unsafe extern "C" fn(*mut Kprobe, *mut PtRegs) -> c_int;
pub type PostHandler = unsafe extern "C" fn(*mut Kprobe, *mut PtRegs, c_ulong);
pub type FaultHandler = unsafe extern "C" fn(*mut Kprobe, *mut PtRegs, c_int) -> c_int;
pub type RetHandler = unsafe extern "C" fn(*mut KretprobeInstance, *mut PtRegs) -> c_int;

pub const KPROBE_FLAG_GONE: u32 = 1;
pub const KPROBE_FLAG_DISABLED: u32 = 2;
/// ptap extension: do not explain a failed registration on stderr (the
/// caller reports it itself, e.g. from `crate::kprobes::register::LAST_ERROR`).
pub const KPROBE_FLAG_QUIET: u32 = 1 << 8;

#[repr(C)]
pub struct Kprobe {
    pub addr: *mut u8,
    pub symbol_name: *const c_char,
    pub offset: u32,
    pub pre_handler: Option<PreHandler>,
    pub post_handler: Option<PostHandler>,
    pub fault_handler: Option<FaultHandler>,
    pub nmissed: c_ulong,
    pub flags: u32,
    pub private: [*mut c_void; 4],
}

#[repr(C)]
pub struct Jprobe {
    pub kp: Kprobe,
    pub entry: *mut c_void,
}

#[repr(C)]
pub struct Kretprobe {
    pub kp: Kprobe,
    pub handler: Option<RetHandler>,
    pub entry_handler: Option<RetHandler>,
    pub data_size: usize,
    pub maxactive: c_int,
    pub nmissed: c_int,
    pub private: [*mut c_void; 4],
}

#[repr(C)]
pub struct KretprobeInstance {
    pub rp: *mut Kretprobe,
    pub ret_addr: *mut u8,
    pub task: c_ulong,
    // data[] follows
}

/// Atomically bump `kp->nmissed` (handlers on several threads may miss at once).
///
/// # Safety
/// `kp` must point to a live registered kprobe.
pub unsafe fn kprobe_missed(kp: *mut Kprobe) {
    // SAFETY: nmissed is an aligned unsigned long inside a live struct.
    unsafe {
        (*(core::ptr::addr_of_mut!((*kp).nmissed) as *const AtomicU64))
            .fetch_add(1, Ordering::Relaxed)
    };
}

/// # Safety
/// `rp` must point to a live registered kretprobe.
pub unsafe fn kretprobe_missed(rp: *mut Kretprobe) {
    // SAFETY: nmissed is an aligned int inside a live struct.
    unsafe {
        (*(core::ptr::addr_of_mut!((*rp).nmissed) as *const AtomicI32))
            .fetch_add(1, Ordering::Relaxed)
    };
}

/// # Safety
/// `kp` must point to a live kprobe.
pub unsafe fn kprobe_flags(kp: *const Kprobe) -> u32 {
    // SAFETY: flags is an aligned u32; read volatile, it may change under us.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*kp).flags)) }
}
