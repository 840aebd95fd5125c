//! The probe-module loader: maps a compiled module (an ELF relocatable
//! object written by the compiler) into this process without a linker.
//!
//! The `object` crate parses the file. Every allocated section is copied
//! into one anonymous mapping: code first, then (from the next page) data.
//! Relocations are applied against the module's own symbols and, for
//! undefined symbols, against the runtime's helper table
//! ([`super::helper_table::HELPERS`]); a symbol that is neither is an error.
//! Finally the code pages become read+execute, the data pages stay
//! read+write. The `.ptap_meta` section gives the metadata.
//!
//! Runs at module load time (not on the hit path), so it may allocate.

use object::elf;
use object::read::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use object::{RelocationFlags, SectionKind};

use super::ctx::Handler;
use super::helper_table;
use super::meta::{self, Meta};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Parse(String),
    NoMetadata,
    Metadata(String),
    UnknownSymbol(String),
    Relocation(String),
    Map(i32),
    MissingHandler(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Parse(e) => write!(f, "not a probe module: {e}"),
            LoadError::NoMetadata => {
                write!(f, "not a ptap probe module: no {} section", meta::SECTION)
            }
            LoadError::Metadata(e) => write!(f, "bad module metadata: {e}"),
            LoadError::UnknownSymbol(s) => write!(
                f,
                "the module needs `{s}`, which this runtime does not provide"
            ),
            LoadError::Relocation(e) => write!(f, "cannot relocate the module: {e}"),
            LoadError::Map(errno) => write!(f, "cannot map the module's code (errno {errno})"),
            LoadError::MissingHandler(s) => write!(f, "the module has no handler `{s}`"),
        }
    }
}

impl std::error::Error for LoadError {}

/// A module mapped into this process. Its handlers stay valid while it lives.
pub struct LoadedModule {
    pub meta: Meta,
    base: *mut u8,
    len: usize,
    handlers: Vec<Handler>,
    entry_handlers: Vec<Option<Handler>>,
    /// It calls a helper that reads the symbol index on the hit path
    /// (`helper_table::reads_symbols`).
    pub reads_symbols: bool,
}

// SAFETY: after loading, the mapping is immutable code and data reached only
// through the handlers, which synchronize through the session's atomics.
unsafe impl Send for LoadedModule {}
// SAFETY: see above.
unsafe impl Sync for LoadedModule {}

impl LoadedModule {
    pub fn handler(&self, probe: usize) -> Option<Handler> {
        self.handlers.get(probe).copied()
    }

    pub fn entry_handler(&self, probe: usize) -> Option<Handler> {
        self.entry_handlers.get(probe).copied().flatten()
    }

    /// The mapped range (code first), for diagnostics.
    pub fn range(&self) -> (usize, usize) {
        (self.base as usize, self.len)
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        // SAFETY: base/len is the mapping made by `load`; nobody may call a
        // handler after the module is dropped (the registration glue
        // unregisters first).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

const PAGE: usize = 4096;

fn is_code(k: SectionKind) -> bool {
    k == SectionKind::Text
}

fn is_loaded(k: SectionKind) -> bool {
    matches!(
        k,
        SectionKind::Text
            | SectionKind::Data
            | SectionKind::ReadOnlyData
            | SectionKind::ReadOnlyDataWithRel
            | SectionKind::ReadOnlyString
            | SectionKind::UninitializedData
    )
}

/// Read just the metadata of a module (ptap's side of `ptap run NAME.o`).
pub fn read_meta(bytes: &[u8]) -> Result<Meta, LoadError> {
    let file = object::File::parse(bytes).map_err(|e| LoadError::Parse(e.to_string()))?;
    meta_of(&file)
}

fn meta_of(file: &object::File<'_>) -> Result<Meta, LoadError> {
    let sec = file
        .section_by_name(meta::SECTION)
        .ok_or(LoadError::NoMetadata)?;
    let data = sec.data().map_err(|e| LoadError::Parse(e.to_string()))?;
    let text = std::str::from_utf8(data).map_err(|_| LoadError::Metadata("not UTF-8".into()))?;
    Meta::decode(text).map_err(LoadError::Metadata)
}

/// Map `bytes` (a probe module) into this process.
pub fn load(bytes: &[u8]) -> Result<LoadedModule, LoadError> {
    let file = object::File::parse(bytes).map_err(|e| LoadError::Parse(e.to_string()))?;
    let meta = meta_of(&file)?;

    // Layout: code sections, then data sections from the next page.
    let mut place: Vec<Option<usize>> = Vec::new();
    let mut at = 0usize;
    let mut code_end = 0usize;
    for pass_code in [true, false] {
        if !pass_code {
            code_end = at;
            at = at.div_ceil(PAGE) * PAGE;
        }
        for sec in file.sections() {
            let i = sec.index().0;
            if place.len() <= i {
                place.resize(i + 1, None);
            }
            if !is_loaded(sec.kind()) || is_code(sec.kind()) != pass_code {
                continue;
            }
            let align = (sec.align() as usize).max(1);
            at = at.div_ceil(align) * align;
            place[i] = Some(at);
            at += sec.size() as usize;
        }
    }
    let len = at.max(1).div_ceil(PAGE) * PAGE;

    // SAFETY: a fresh private anonymous mapping.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(LoadError::Map(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    let mut m = LoadedModule {
        meta,
        base: base as *mut u8,
        len,
        handlers: Vec::new(),
        entry_handlers: Vec::new(),
        reads_symbols: false,
    };
    // SAFETY: the mapping is len bytes, RW, owned by m.
    let mem = unsafe { core::slice::from_raw_parts_mut(m.base, len) };

    for sec in file.sections() {
        let Some(off) = place[sec.index().0] else {
            continue;
        };
        if sec.kind() == SectionKind::UninitializedData {
            continue; // already zero
        }
        let data = sec.data().map_err(|e| LoadError::Parse(e.to_string()))?;
        mem.get_mut(off..off + data.len())
            .ok_or_else(|| LoadError::Parse("section outside the layout".into()))?
            .copy_from_slice(data);
    }

    let base_addr = m.base as u64;
    let reads_symbols = core::cell::Cell::new(false);
    let symbol_addr = |idx: object::SymbolIndex| -> Result<u64, LoadError> {
        let sym = file
            .symbol_by_index(idx)
            .map_err(|e| LoadError::Parse(e.to_string()))?;
        if let Some(si) = sym.section_index() {
            let off = place.get(si.0).copied().flatten().ok_or_else(|| {
                LoadError::Relocation(format!(
                    "symbol `{}` is in a section that is not loaded",
                    sym.name().unwrap_or("?")
                ))
            })?;
            return Ok(base_addr + off as u64 + sym.address());
        }
        let name = sym.name().map_err(|e| LoadError::Parse(e.to_string()))?;
        if helper_table::reads_symbols(name) {
            reads_symbols.set(true);
        }
        helper_table::lookup(name)
            .map(|a| a as u64)
            .ok_or_else(|| LoadError::UnknownSymbol(name.to_string()))
    };

    for sec in file.sections() {
        let Some(off) = place[sec.index().0] else {
            continue;
        };
        for (r_off, r) in sec.relocations() {
            let s = match r.target() {
                RelocationTarget::Symbol(i) => symbol_addr(i)?,
                RelocationTarget::Section(i) => {
                    base_addr
                        + place
                            .get(i.0)
                            .copied()
                            .flatten()
                            .ok_or(LoadError::Relocation("section target not loaded".into()))?
                            as u64
                }
                t => return Err(LoadError::Relocation(format!("unsupported target {t:?}"))),
            };
            let at = off + r_off as usize;
            let p = base_addr + at as u64;
            let a = r.addend();
            let RelocationFlags::Elf { r_type } = r.flags() else {
                return Err(LoadError::Relocation("not an ELF relocation".into()));
            };
            let size = if matches!(r_type, elf::R_X86_64_64 | elf::R_X86_64_PC64) {
                8
            } else {
                4
            };
            let dst = mem.get_mut(at..at + size).ok_or(LoadError::Relocation(
                "relocation outside its section".into(),
            ))?;
            match r_type {
                elf::R_X86_64_64 => dst.copy_from_slice(&(s as i64).wrapping_add(a).to_le_bytes()),
                elf::R_X86_64_PC64 => dst.copy_from_slice(
                    &(s as i64)
                        .wrapping_add(a)
                        .wrapping_sub(p as i64)
                        .to_le_bytes(),
                ),
                elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 => {
                    let v = (s as i64).wrapping_add(a).wrapping_sub(p as i64);
                    let v = i32::try_from(v).map_err(|_| {
                        LoadError::Relocation(format!(
                            "32-bit relative relocation out of range at {at:#x}"
                        ))
                    })?;
                    dst.copy_from_slice(&v.to_le_bytes());
                }
                t => {
                    return Err(LoadError::Relocation(format!(
                        "unsupported x86-64 relocation type {t}"
                    )))
                }
            }
        }
    }

    let code_len = code_end.div_ceil(PAGE) * PAGE;
    if code_len > 0 {
        // SAFETY: the code pages of our own mapping.
        if unsafe {
            libc::mprotect(
                m.base as *mut libc::c_void,
                code_len,
                libc::PROT_READ | libc::PROT_EXEC,
            )
        } != 0
        {
            return Err(LoadError::Map(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
    }

    let find = |name: &str| -> Result<Handler, LoadError> {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name) && s.section_index().is_some())
            .ok_or_else(|| LoadError::MissingHandler(name.to_string()))?;
        let addr = symbol_addr(sym.index())?;
        // SAFETY: the compiler defines every handler as
        // `extern "C" fn(*mut ProbeCtx) -> i64`; addr is inside the code pages.
        Ok(unsafe { core::mem::transmute::<usize, Handler>(addr as usize) })
    };
    for p in &m.meta.probes {
        m.handlers.push(find(&p.handler)?);
        m.entry_handlers.push(match &p.entry_handler {
            Some(e) => Some(find(e)?),
            None => None,
        });
    }
    m.reads_symbols = reads_symbols.get();
    Ok(m)
}
