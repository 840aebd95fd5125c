//! The one error type of ptap-arch.

use core::fmt;

/// Why an address cannot be probed, or an instruction cannot be relocated/emulated.
/// Every variant has a one-line `Display` meant for users (`ptap -v`, printk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchError {
    /// The address is not the start of an instruction when decoding from the function's
    /// start (the runtime answers -EILSEQ).
    NotBoundary,
    /// The bytes do not decode as an x86-64 instruction.
    Undecodable,
    /// The byte slice ends in the middle of an instruction.
    Truncated,
    /// The address lies outside the code that was given.
    OutsideCode,
    /// An `int3` (0xCC) is already at the address: another breakpoint, or a probe
    /// whose original bytes were not handed in.
    Int3Present,
    /// The instruction cannot run out of line and is not emulated; the text says what it is.
    CannotRelocate(&'static str),
    /// A target (RIP-relative operand or the jump back) is more than ±2 GiB from the slot.
    OutOfRange,
    /// The relocated sequence does not fit in [`crate::xol::SLOT_SIZE`] bytes.
    SlotTooSmall,
    /// Emulating a `call`: writing the return address to the stack failed.
    StackFault,
}

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchError::NotBoundary => f.write_str("address is not on an instruction boundary"),
            ArchError::Undecodable => f.write_str("bytes do not decode as an x86-64 instruction"),
            ArchError::Truncated => f.write_str("code ends in the middle of an instruction"),
            ArchError::OutsideCode => f.write_str("address is outside the given code"),
            ArchError::Int3Present => {
                f.write_str("an int3 (0xcc) is already at this address (another breakpoint?)")
            }
            ArchError::CannotRelocate(why) => write!(f, "cannot execute out of line: {why}"),
            ArchError::OutOfRange => {
                f.write_str("target is more than +/-2 GiB away from the out-of-line slot")
            }
            ArchError::SlotTooSmall => f.write_str("relocated instruction does not fit its slot"),
            ArchError::StackFault => f.write_str("could not push the return address"),
        }
    }
}

impl std::error::Error for ArchError {}
