//! The control side of kprobes: registration ([`register`]), code memory
//! and patching ([`codemem`]), jump optimization ([`optimize`], with its
//! signal [`barrier`]). What the hit path reads is published into
//! `crate::hit` (the site table, code ranges).

pub mod barrier;
pub mod codemem;
pub mod optimize;
pub mod register;
