//! The files a program maps, found as the dynamic loader finds them: what
//! ld.so reads from an ELF file (PT_INTERP, DT_NEEDED, run paths, the
//! executable segments), the library search (run paths, LD_LIBRARY_PATH,
//! /etc/ld.so.cache, the system directories), and the function symbols
//! the points are resolved against.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Object, ObjectSymbol};
use ptap_rt_core::script::attach::module_matches;
use ptap_rt_core::script::meta::ModuleSpec;

use super::{Image, Images, Sym};

pub(super) fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The interpreter of a `#!` script, resolved like execvp would.
pub(super) fn interpreter_of_script(exe: &Path) -> anyhow::Result<Option<PathBuf>> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(exe)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("cannot read {}", exe.display()))?;
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    let Some(interp) = line.split_whitespace().next() else {
        return Ok(None);
    };
    Ok(Some(PathBuf::from(interp)))
}

/// What the loader needs from one ELF file.
pub(super) struct Elf {
    pub(super) interp: Option<String>,
    pub(super) needed: Vec<String>,
    pub(super) rpath: Vec<String>,
    pub(super) runpath: Vec<String>,
    pub(super) exec: Vec<(u64, u64)>,
}

impl Elf {
    pub(super) fn parse(path: &Path, data: &[u8]) -> anyhow::Result<Elf> {
        let bad = |e: object::Error| anyhow!("{} is not an x86-64 ELF file ({e})", path.display());
        let header = object::elf::FileHeader64::<object::Endianness>::parse(data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        if header.e_machine(endian) != object::elf::EM_X86_64 {
            return Err(anyhow!("{} is not an x86-64 ELF file", path.display()));
        }
        let mut elf = Elf {
            interp: None,
            needed: Vec::new(),
            rpath: Vec::new(),
            runpath: Vec::new(),
            exec: Vec::new(),
        };
        for ph in header.program_headers(endian, data).map_err(bad)? {
            if let Ok(Some(i)) = ph.interpreter(endian, data) {
                elf.interp = Some(String::from_utf8_lossy(i).into_owned());
            }
            if ph.p_type(endian) == object::elf::PT_LOAD
                && ph.p_flags(endian) & object::elf::PF_X != 0
            {
                let s = ph.p_vaddr(endian);
                elf.exec.push((s, s + ph.p_memsz(endian)));
            }
        }
        let sections = header.sections(endian, data).map_err(bad)?;
        if let Ok(Some((dyns, link))) = sections.dynamic(endian, data) {
            let strings = sections.strings(endian, data, link).map_err(bad)?;
            for d in dyns {
                let Some(tag) = d.tag32(endian) else { continue };
                let Ok(s) = d.string(endian, strings) else {
                    continue;
                };
                let s = String::from_utf8_lossy(s).into_owned();
                match tag {
                    object::elf::DT_NEEDED => elf.needed.push(s),
                    object::elf::DT_RPATH => elf.rpath.extend(split_path(&s, path)),
                    object::elf::DT_RUNPATH => elf.runpath.extend(split_path(&s, path)),
                    _ => {}
                }
            }
        }
        Ok(elf)
    }
}

/// A run path list with `$ORIGIN` expanded.
pub(super) fn split_path(list: &str, obj: &Path) -> Vec<String> {
    let origin = canonical(obj)
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    list.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
        .collect()
}

pub(super) fn image(path: &Path, data: Vec<u8>, elf: &Elf, is_main: bool) -> Image {
    let label = if is_main {
        canonical(path).to_string_lossy().into_owned()
    } else {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Image {
        path: path.to_path_buf(),
        label,
        data,
        syms: std::cell::OnceCell::new(),
        exec: elf.exec.clone(),
    }
}

/// Function (and IFUNC) symbols: the runtime's filter
/// (`ptap_rt_core::proc::symbols::function_symbols`), one definition for both.
pub(crate) fn function_symbols(data: &[u8]) -> Vec<Sym> {
    let Ok(file) = object::File::parse(data) else {
        return Vec::new();
    };
    ptap_rt_core::proc::symbols::function_symbols(&file)
        .map(|f| Sym {
            name: f.name.to_string(),
            addr: f.addr,
            size: f.size,
        })
        .collect()
}

/// The file a bare library name (`libc`, `libm.so.6`) stands for in a
/// system program, as ld.so finds it: among the libraries /bin/sh loads,
/// then among the x86-64 entries of /etc/ld.so.cache (system-wide probes,
/// which have no executable to start from).
pub(crate) fn system_library(name: &str) -> Option<PathBuf> {
    let spec = Some(ModuleSpec::Name(name.to_string()));
    if let Ok(imgs) = Images::load(Path::new("/bin/sh")) {
        if let Some(i) = imgs.matching(&spec).next() {
            return Some(i.path.clone());
        }
    }
    LdCache::read()
        .paths()
        .into_iter()
        .find(|p| module_matches(&p.to_string_lossy(), &spec) && is_x86_64_elf(p))
}

/// Does `data` (an ELF file) define a data symbol (object, TLS, common)
/// `name` or `name@VERSION`? (The error path only.)
pub(super) fn has_data_symbol(data: &[u8], name: &str) -> bool {
    let Ok(file) = object::File::parse(data) else {
        return false;
    };
    file.symbols().chain(file.dynamic_symbols()).any(|s| {
        !s.is_undefined()
            && matches!(s.kind(), object::SymbolKind::Data | object::SymbolKind::Tls)
            && s.name()
                .is_ok_and(|n| n == name || n.split('@').next() == Some(name))
    })
}

/// An ELF64 x86-64 file? (Only the header is read: ld.so skips the
/// 32-bit libraries a search path may hold.)
pub(super) fn is_x86_64_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut h = [0u8; 20];
    let ok = std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut h))
        .is_ok();
    ok && h.starts_with(b"\x7fELF") && h[4] == 2 && u16::from_le_bytes([h[18], h[19]]) == 62
}

/// Where ld.so finds `need` for the object at `from`.
pub(super) fn find_library(
    need: &str,
    elf: &Elf,
    exe_rpath: &[String],
    ld_library_path: &[String],
    cache: &LdCache,
) -> Option<PathBuf> {
    if need.contains('/') {
        return Some(PathBuf::from(need));
    }
    let usable = |p: PathBuf| -> Option<PathBuf> { is_x86_64_elf(&p).then_some(p) };
    let in_dirs = |dirs: &[String]| {
        dirs.iter()
            .filter(|d| !d.is_empty())
            .find_map(|d| usable(Path::new(d).join(need)))
    };
    // DT_RPATH (of the object, then of the executable) only without DT_RUNPATH.
    if elf.runpath.is_empty() {
        if let Some(p) = in_dirs(&elf.rpath).or_else(|| in_dirs(exe_rpath)) {
            return Some(p);
        }
    }
    if let Some(p) = in_dirs(ld_library_path) {
        return Some(p);
    }
    if let Some(p) = in_dirs(&elf.runpath) {
        return Some(p);
    }
    if let Some(p) = cache.lookup(need).into_iter().find_map(usable) {
        return Some(p);
    }
    let system: Vec<String> = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    in_dirs(&system)
}

/// /etc/ld.so.cache (glibc's "glibc-ld.so.cache1.1" format). Hand-read:
/// a header, fixed-size entries and a string table, about thirty lines;
/// no crate in the workspace reads it.
pub(super) struct LdCache {
    data: Vec<u8>,
}

impl LdCache {
    const MAGIC: &'static [u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;

    pub(super) fn read() -> LdCache {
        let data = std::fs::read("/etc/ld.so.cache").unwrap_or_default();
        LdCache {
            data: if data.starts_with(Self::MAGIC) {
                data
            } else {
                Vec::new()
            },
        }
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.data.get(off..off + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn str_at(&self, off: usize) -> Option<&str> {
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Every path the cache lists.
    fn paths(&self) -> Vec<PathBuf> {
        let Some(n) = self.u32_at(Self::MAGIC.len()) else {
            return Vec::new();
        };
        (0..n as usize)
            .filter_map(|i| {
                let value = self.u32_at(Self::HEADER + i * Self::ENTRY + 8)? as usize;
                self.str_at(value).map(PathBuf::from)
            })
            .collect()
    }

    /// Every path the cache lists for `soname` (the caller checks the ELF class).
    fn lookup(&self, soname: &str) -> Vec<PathBuf> {
        let Some(n) = self.u32_at(Self::MAGIC.len()) else {
            return Vec::new();
        };
        (0..n as usize)
            .filter_map(|i| {
                let e = Self::HEADER + i * Self::ENTRY;
                let key = self.u32_at(e + 4)? as usize;
                let value = self.u32_at(e + 8)? as usize;
                if self.str_at(key)? != soname {
                    return None;
                }
                self.str_at(value).map(PathBuf::from)
            })
            .collect()
    }
}
