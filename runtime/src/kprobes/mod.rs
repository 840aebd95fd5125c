//! The control side of kprobes: registration ([`register`], with the
//! address checks of [`address`]), code memory
//! and patching ([`codemem`]), the functions never probed ([`blocked`]), jump optimization ([`optimize`], with its
//! signal [`barrier`]). What the hit path reads is published into
//! `crate::hit` (the site table, code ranges).

pub mod address;
pub mod barrier;
pub mod blocked;
pub mod codemem;
pub mod known;
pub mod optimize;
pub mod register;
