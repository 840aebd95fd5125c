//! ptap-arch: x86-64 only code.
//!
//! - [`regs`]: `struct pt_regs` and the argument conventions;
//! - [`decode`]: linear-sweep decode of functions, instruction boundaries, classification;
//! - [`xol`]: relocation of the displaced instruction into an out-of-line slot;
//! - [`emulate`]: relative branches and calls, emulated on a `PtRegs` (hit path);
//! - [`optprobe`]: the Linux optprobe safety rules for jump-optimized probes.
//!
//! Everything allocates only at registration time; the hit-path functions
//! ([`emulate::emulate`], [`xol::after_step`], [`xol::fault_fixup`]) neither allocate nor panic.

pub mod decode;
pub mod emulate;
mod error;
pub mod optprobe;
pub mod regs;
pub mod trampoline;
pub mod xol;

#[cfg(test)]
mod sandbox;

pub use error::ArchError;
