//! The process as the runtime sees it: its symbols (`symbols`, `names`,
//! `symcache`) and its call frame information (`eh_frame`).

pub mod eh_frame;
pub mod names;
pub mod symbols;
pub mod symcache;
