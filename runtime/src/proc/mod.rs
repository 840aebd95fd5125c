//! The process as the runtime sees it: its symbols (`symbols`, `names`,
//! `symcache`), its call frame information (`eh_frame`) and its mappings
//! (`maps`, also how ptap reads a target's).

pub mod eh_frame;
pub mod maps;
pub mod names;
pub mod symbols;
pub mod symcache;
