//! Where a kprobe goes: its address from `addr` or `symbol_name` + `offset`
//! (the runtime's symbol index), checked to be an instruction of a function
//! of an executable segment (symbol size, else CFI bounds) that the runtime
//! may patch. Registration time only.

use super::register::{set_last_error, EINVAL, ENOENT};
use crate::abi::*;
use crate::base::sys;
use crate::proc::symbols;

/// Marks a function size taken from CFI bounds (see `resolve`).
pub(super) const CFI_BOUNDS: u64 = 1 << 63;

/// Resolve the probe address of `kp` and validate it. Returns (addr, func
/// start or 0, func size, end of the executable segment).
pub(super) fn resolve(kp: *mut Kprobe) -> Result<(u64, u64, u64, u64), i32> {
    // SAFETY: kp points to the user's struct (checked non-null by the caller).
    let (addr, sym, off) = unsafe { ((*kp).addr as u64, (*kp).symbol_name, (*kp).offset as u64) };
    let (addr, mut func, mut size) = if addr == 0 {
        if sym.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: user-supplied NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(sym) }
            .to_string_lossy()
            .into_owned();
        let f = crate::proc::symcache::lookup(&name).ok_or_else(|| {
            set_last_error(format!("unknown symbol `{name}`"));
            ENOENT
        })?;
        (f.addr + off, f.func, f.size)
    } else {
        if !sym.is_null() {
            set_last_error("both addr and symbol_name are set".into());
            return Err(EINVAL);
        }
        (addr, 0, 0)
    };
    // The segment and the runtime check come from the program headers: a
    // function whose bounds the name gave (the usual case) needs no symbol
    // index (see `symbols::quick_lookup`).
    let Some(((_, seg_end), runtime)) = symbols::exec_segment(addr) else {
        set_last_error(format!(
            "{addr:#x} is not in the executable code of a loaded object"
        ));
        return Err(EINVAL);
    };
    if runtime {
        set_last_error(format!("{addr:#x} is inside the ptap runtime itself"));
        return Err(EINVAL);
    }
    if func == 0 || size == 0 {
        let mut idx = symbols::get_or_build();
        if symbols::executable(idx, addr).is_none() {
            idx = symbols::build();
        }
        if func == 0 {
            if let Some((_, s)) = symbols::containing(idx, addr) {
                if s.size > 0 && addr < s.addr + s.size {
                    func = s.addr;
                    size = s.size;
                }
            }
        }
        if func == 0 || size == 0 {
            // No sized symbol (a stripped library's local function, an IFUNC
            // implementation): the bounds of its CFI, for the boundary check.
            // Not for jump optimization: hand-written assembly such as glibc's
            // string functions has several entry points, and a sibling entry
            // outside this FDE may jump into the bytes a jump would replace
            // (measured: a jump-optimized memcpy implementation missed most
            // of its calls). `resolve` marks such bounds with the high bit.
            if let Some((s, e)) = symbols::executable(idx, addr)
                .and_then(|obj| crate::proc::eh_frame::fde_bounds(obj, addr))
            {
                func = s;
                size = (e - s) | CFI_BOUNDS;
            }
        }
    }
    if func != 0 && size > 0 && addr >= func + (size & !CFI_BOUNDS) {
        set_last_error(format!(
            "offset {:#x} is beyond the end of the function",
            addr - func
        ));
        return Err(EINVAL);
    }
    let g = sys::gadget();
    if addr >= g && addr < g + 3 {
        // The `syscall; ret` every raw system call of the runtime goes
        // through (see syscall/sites.rs): an int3 there would trap inside
        // the runtime's own hit path.
        set_last_error(format!(
            "{addr:#x} is the runtime's own system call gadget and cannot be probed"
        ));
        return Err(EINVAL);
    }
    Ok((addr, func, size, seg_end))
}
