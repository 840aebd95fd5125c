//! ptap-arch: x86-64 only code.
//!
//! - [`regs`]: `struct pt_regs` and the two argument conventions (SysV vs. syscall);
//! - [`decode`]: linear-sweep decode of functions, instruction boundaries, and the one
//!   classification of what may run out of line;
//! - [`xol`]: relocation of the displaced instruction into an out-of-line slot;
//! - [`emulate`]: relative branches and calls, emulated on a `PtRegs`;
//! - [`optprobe`]: the Linux optprobe safety rules, region relocation;
//! - [`trampoline`]: the optprobe trampoline and the kretprobe return trampoline.
//! - [`syssites`]: the `syscall` sites of a library's text (syscall probes).
//!
//! Allocation happens only at registration time. The hit-path functions —
//! [`emulate::emulate`], [`xol::after_step`], [`xol::fault_fixup`] — neither allocate,
//! nor panic, nor call libc.
//!
//! # How the runtime drives a trap-path probe
//!
//! Registration: `decode::check_boundary(func_bytes, func_start, addr)` (NotBoundary →
//! -EILSEQ), then `xol::prepare(orig_bytes_at_addr, addr, slot_addr)` and copy
//! `Prepared::slot_bytes()` to the slot (for `Kind::Emulate` no slot is needed). The bytes
//! handed in must be the ORIGINAL ones, with any int3/jmp ptap itself planted put back.
//!
//! Hit (SIGTRAP from the int3, `regs.ip = addr + 1`): set `regs.ip = addr`, run the
//! pre-handlers, then
//! - `Kind::Emulate(e)`: `emulate(&e, regs, push)`, post-handlers, return;
//! - `Kind::Slot`, no post-handler (boost): `regs.ip = slot`, return;
//! - `Kind::Slot` with a post-handler: `regs.ip = slot`, set TF, return; on each TF trap
//!   call `after_step`: `Continue` → return with TF still set; `Done` → clear TF, run the
//!   post-handlers with the mapped `regs`.
//!
//! A SIGSEGV/SIGBUS/SIGFPE whose ip is in a slot: `fault_fixup` makes the registers look
//! as if the original instruction faulted, then deliver as usual. A thread may be inside
//! a slot (boosted) when its probe is unregistered: free slots only when no thread can be
//! there.

pub mod decode;
pub mod emulate;
mod error;
pub mod optprobe;
mod prebuilt;
pub mod regs;
pub mod syssites;
pub mod trampoline;
pub mod xol;

#[cfg(test)]
mod sandbox;

pub use error::ArchError;
