//! Probe point resolution before the target starts (SystemTap semantics).
//!
//! ptap resolves every kprobe / jprobe / kretprobe point of a script against
//! the -c executable and the libraries the dynamic loader will map for it
//! (PT_INTERP, LD_PRELOAD, then DT_NEEDED breadth-first, found through
//! DT_RPATH / LD_LIBRARY_PATH / DT_RUNPATH / /etc/ld.so.cache / the system
//! directories), with the rules the runtime uses in the target
//! (`ptap_rt_core::proc::symbols`: function and IFUNC symbols of .symtab and .dynsym;
//! `ptap_rt_core::script::attach`: patterns, library names). A point that
//! resolves to nothing is an error that says what was searched, and the
//! target is never started. `?` makes a point optional: nothing is said.
//!
//! Syscall points need no resolution (their names were checked at compile
//! time); begin / end / timer points run in ptap.
//!
//! With `-x PID` the points are resolved against the objects mapped in
//! the running process (/proc/PID/maps) instead.
//!
//! Known limits: libraries the target loads later with dlopen are not
//! searched (and the runtime does not probe them either); `$ORIGIN` is the
//! only dynamic string token expanded in run paths.
//!
//! `libraries.rs` finds the files and reads their symbols; this file
//! matches the points against them.

use anyhow::{anyhow, Context};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use object::Object;
use ptap_rt_core::proc::names;
use ptap_rt_core::script::attach::module_matches;
use ptap_rt_core::script::meta::{Meta, ModuleSpec, PointKind, TargetSpec};

mod libraries;
use libraries::{
    canonical, find_library, has_data_symbol, image, interpreter_of_script, Elf, LdCache,
};
pub(crate) use libraries::{function_symbols, system_library};

/// One function symbol of an object (link-time address).
pub(crate) struct Sym {
    pub(crate) name: String,
    pub(crate) addr: u64,
    pub(crate) size: u64,
}

/// An object the loader maps into the target.
struct Image {
    path: PathBuf,
    /// How messages name it: the main executable by its path, libraries by
    /// their file name.
    label: String,
    data: Vec<u8>,
    /// Read from `data` on first use (most points resolve in the executable).
    syms: std::cell::OnceCell<Vec<Sym>>,
    /// Executable PT_LOAD ranges (link-time addresses).
    exec: Vec<(u64, u64)>,
}

/// The executable and its libraries, in the loader's order.
pub struct Images {
    images: Vec<Image>,
}

/// The result of checking a module's points.
pub struct Resolution {
    /// What each point resolved to (for `-v`).
    pub notes: Vec<String>,
}

/// Does the module probe functions of the target (anything to resolve)?
pub fn has_function_points(meta: &Meta) -> bool {
    meta.probes.iter().flat_map(|p| &p.points).any(|q| {
        matches!(
            q.kind,
            PointKind::Kprobe | PointKind::Jprobe | PointKind::Kretprobe(_)
        ) && !matches!(q.target, TargetSpec::Syscall { .. } | TargetSpec::None)
    })
}

/// An error when `exe` (a `#!` script: its interpreter) cannot load
/// ptap's runtime: a statically linked program has no dynamic loader to
/// honour LD_PRELOAD. For a script whose probes run in the target but name
/// no function (system call probes), which resolves nothing.
pub fn check_runtime_loads(exe: &Path) -> anyhow::Result<()> {
    let exe = interpreter_of_script(exe)?.unwrap_or_else(|| exe.to_path_buf());
    let data = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    static_check(&exe, &Elf::parse(&exe, &data)?)
}

fn static_check(exe: &Path, main: &Elf) -> anyhow::Result<()> {
    if main.interp.is_none() {
        return Err(anyhow!(
            "{} is statically linked: ptap cannot load its runtime there (LD_PRELOAD needs the dynamic loader)",
            exe.display()
        ));
    }
    Ok(())
}

impl Images {
    /// Read `exe` and the libraries it will load. A script (`#!`) is
    /// replaced by its interpreter, as the kernel does.
    pub fn load(exe: &Path) -> anyhow::Result<Images> {
        let exe = interpreter_of_script(exe)?.unwrap_or_else(|| exe.to_path_buf());
        let data = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
        let main = Elf::parse(&exe, &data)?;
        static_check(&exe, &main)?;
        let cache = LdCache::read();
        let mut images = vec![image(&exe, data, &main, true)];
        let mut seen: Vec<PathBuf> = vec![canonical(&exe)];
        let mut queue: VecDeque<Elf> = VecDeque::new();
        let mut add = |path: PathBuf, queue: &mut VecDeque<Elf>| {
            let c = canonical(&path);
            if seen.contains(&c) {
                return;
            }
            let Ok(data) = std::fs::read(&path) else {
                return;
            };
            let Ok(elf) = Elf::parse(&path, &data) else {
                return;
            };
            seen.push(c);
            images.push(image(&path, data, &elf, false));
            queue.push_back(elf);
        };
        // The user's own LD_PRELOAD libraries come before DT_NEEDED ones.
        if let Ok(pre) = std::env::var("LD_PRELOAD") {
            for p in pre.split([':', ' ']).filter(|p| !p.is_empty()) {
                add(PathBuf::from(p), &mut queue);
            }
        }
        let ld_library_path: Vec<String> = std::env::var("LD_LIBRARY_PATH")
            .map(|v| v.split([':', ';']).map(str::to_string).collect())
            .unwrap_or_default();
        let exe_rpath = main.rpath.clone();
        let interp = main.interp.clone();
        let mut pending = VecDeque::from([main]);
        pending.extend(queue.drain(..));
        while let Some(elf) = pending.pop_front() {
            for need in &elf.needed {
                if let Some(found) = find_library(need, &elf, &exe_rpath, &ld_library_path, &cache)
                {
                    add(found, &mut pending);
                }
            }
        }
        if let Some(interp) = interp {
            add(PathBuf::from(interp), &mut pending);
        }
        Ok(Images { images })
    }

    /// The objects mapped in the running process `pid` (`ptap -x`), the
    /// executable first, then the others in address order. ptap's own
    /// runtime (an earlier session's) is left out.
    pub fn from_pid(pid: i32) -> anyhow::Result<Images> {
        let exe = std::fs::read_link(format!("{}/exe", crate::inject::proc_of(pid)))
            .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
        let exe_str = exe.to_string_lossy().into_owned();
        let maps = crate::inject::mappings(pid)?;
        let mut files = crate::inject::mapped_files(&maps);
        files.retain(|(p, _)| !p.ends_with("libptap_rt.so") && *p != exe_str);
        let mut images = Vec::new();
        let data = std::fs::read(crate::inject::target_file(pid, &exe_str))
            .with_context(|| format!("cannot read {}", exe.display()))?;
        let main = Elf::parse(&exe, &data)?;
        images.push(image(&exe, data, &main, true));
        for (path, _) in files {
            let Ok(data) = std::fs::read(crate::inject::target_file(pid, &path)) else {
                continue;
            };
            let p = PathBuf::from(&path);
            // Mapped files that are not ELF objects (locale archives, ...).
            let Ok(elf) = Elf::parse(&p, &data) else {
                continue;
            };
            images.push(image(&p, data, &elf, false));
        }
        Ok(Images { images })
    }

    /// "/path/hot, libc.so.6, ld-linux-x86-64.so.2".
    fn searched(&self) -> String {
        self.images
            .iter()
            .map(|i| i.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn main(&self) -> &Image {
        &self.images[0]
    }

    /// The main executable's file (for its debug information).
    pub fn main_path(&self) -> Option<PathBuf> {
        self.images.first().map(|i| i.path.clone())
    }

    fn matching<'a>(&'a self, module: &'a Option<ModuleSpec>) -> impl Iterator<Item = &'a Image> {
        self.images.iter().filter(move |i| match module {
            None => true,
            Some(ModuleSpec::Path(p)) => {
                let path = i.path.to_string_lossy();
                path == p.as_str() || canonical(Path::new(p)) == canonical(&i.path)
            }
            Some(m) => module_matches(&i.path.to_string_lossy(), &Some(m.clone())),
        })
    }

    /// Check every target point of `meta`. Err: the message for the first
    /// point that resolves to nothing (without the "ptap: " prefix).
    pub fn resolve(&self, meta: &Meta) -> anyhow::Result<Resolution> {
        let mut notes = Vec::new();
        for pt in meta.probes.iter().flat_map(|p| &p.points) {
            if !matches!(
                pt.kind,
                PointKind::Kprobe | PointKind::Jprobe | PointKind::Kretprobe(_)
            ) {
                continue;
            }
            let entry_kind = match pt.kind {
                PointKind::Kretprobe(_) => Some("kretprobe"),
                PointKind::Jprobe => Some("jprobe"),
                _ => None,
            };
            match self.resolve_one(&pt.target, entry_kind) {
                Ok(Some(note)) => notes.push(format!("{} -> {note}", pt.text)),
                Ok(None) => {}
                Err(_) if pt.optional => {
                    notes.push(format!("{} -> nothing (optional: not armed)", pt.text))
                }
                Err(why) => return Err(anyhow!("probe point {} {why:#}", pt.text)),
            }
        }
        Ok(Resolution { notes })
    }

    fn nothing(&self, module: &Option<ModuleSpec>) -> String {
        match module {
            None => format!(
                "resolved to nothing: searched {} (symbols from .symtab and .dynsym)",
                self.searched()
            ),
            Some(ModuleSpec::Name(m) | ModuleSpec::Path(m)) => {
                if self.matching(module).next().is_none() {
                    format!(
                        "resolved to nothing: no library `{m}` among {} (libraries loaded later with dlopen are not probed)",
                        self.searched()
                    )
                } else {
                    let libs: Vec<&str> = self.matching(module).map(|i| i.label.as_str()).collect();
                    format!(
                        "resolved to nothing: searched {} (symbols from .symtab and .dynsym)",
                        libs.join(", ")
                    )
                }
            }
        }
    }

    /// Ok(Some(note)): resolved; Ok(None): nothing to resolve.
    /// `entry_kind`: "kretprobe" or "jprobe" (needs a function entry).
    fn resolve_one(
        &self,
        target: &TargetSpec,
        entry_kind: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let refuse = |sym: &str| match entry_kind {
            Some(k) => names::entry_refusal(sym, k).map_or(Ok(()), |why| Err(anyhow!(why))),
            None => Ok(()),
        };
        match target {
            TargetSpec::None | TargetSpec::Syscall { .. } | TargetSpec::Process { .. } => Ok(None),
            TargetSpec::Symbol {
                module,
                name,
                offset,
            } => {
                for img in self.matching(module) {
                    // Like ptap_rt_core::proc::symbols::lookup: `name` or `name@VERSION`.
                    let Some(s) = img
                        .syms()
                        .iter()
                        .find(|s| s.name == *name || s.name.split('@').next() == Some(name))
                    else {
                        continue;
                    };
                    if *offset > 0 && s.size > 0 && *offset >= s.size {
                        return Err(anyhow!(
                            "is beyond the end of `{name}` ({} bytes) in {}",
                            s.size,
                            img.label
                        ));
                    }
                    if *offset > 0 {
                        img.check_boundary(s, s.addr + offset).map_err(|why| {
                            anyhow!("{why:#}: {name}+{offset:#x} in {}", img.label)
                        })?;
                    }
                    refuse(&s.name)?;
                    return Ok(Some(format!("{name} in {}", img.label)));
                }
                // Not a symbol: the functions whose demangled name it is
                // (ptap_rt_core::proc::names, as the runtime selects them).
                for img in self.matching(module) {
                    let syms = img.syms();
                    let hits = names::select_demangled(
                        name,
                        syms.iter().enumerate().map(|(i, s)| (i, s.name.as_str())),
                    );
                    if hits.is_empty() {
                        continue;
                    }
                    if let Some(why) = names::ambiguity(name, &hits) {
                        return Err(anyhow!("{why} (in {})", img.label));
                    }
                    let mut listed: Vec<(u64, String)> = hits
                        .iter()
                        .map(|h| {
                            let s = &syms[h.index];
                            let full = names::demangle_full(&s.name).unwrap_or(h.demangled.clone());
                            (s.addr, format!("{full} [{}] at {:#x}", s.name, s.addr))
                        })
                        .collect();
                    listed.sort();
                    listed.dedup_by_key(|l| l.0);
                    if *offset > 0 {
                        for h in &hits {
                            let s = &syms[h.index];
                            if s.size > 0 && *offset >= s.size {
                                return Err(anyhow!(
                                    "is beyond the end of `{}` ({} bytes) in {}",
                                    h.demangled,
                                    s.size,
                                    img.label
                                ));
                            }
                            img.check_boundary(s, s.addr + offset).map_err(|why| {
                                anyhow!("{why:#}: {}+{offset:#x} in {}", h.demangled, img.label)
                            })?;
                        }
                    }
                    let n = listed.len();
                    let what: Vec<String> = listed.into_iter().map(|l| l.1).collect();
                    return Ok(Some(format!(
                        "{} function{} in {}: {}",
                        n,
                        if n == 1 { "" } else { "s" },
                        img.label,
                        what.join(", ")
                    )));
                }
                // Not a function: say so when it is a data symbol.
                for img in self.matching(module) {
                    if has_data_symbol(&img.data, name) {
                        return Err(anyhow!(
                            "`{name}` in {} is a data object, not a function",
                            img.label
                        ));
                    }
                }
                Err(anyhow!(self.nothing(module)))
            }
            TargetSpec::Pattern { module, pattern } => {
                let mut found: Vec<String> = Vec::new();
                for img in self.matching(module) {
                    let mut addrs: Vec<u64> = img
                        .syms()
                        .iter()
                        .filter(|s| s.size > 0 && pattern_selects(pattern, &s.name))
                        .map(|s| s.addr)
                        .collect();
                    addrs.sort_unstable();
                    addrs.dedup();
                    if !addrs.is_empty() {
                        found.push(format!("{} in {}", addrs.len(), img.label));
                    }
                }
                if found.is_empty() {
                    return Err(anyhow!("(pattern `{pattern}`) {}", self.nothing(module)));
                }
                Ok(Some(format!("functions: {}", found.join(", "))))
            }
            TargetSpec::Address(a) => {
                let main = self.main();
                if main.exec.iter().any(|&(s, e)| *a >= s && *a < e) {
                    let func = main
                        .syms()
                        .iter()
                        .find(|s| s.addr <= *a && *a < s.addr + s.size.max(1));
                    if let Some(s) = func.filter(|s| s.addr == *a) {
                        refuse(&s.name)?;
                    }
                    if let Some(s) = func {
                        main.check_boundary(s, *a).map_err(|why| {
                            anyhow!(
                                "{why:#}: {a:#x} is {}+{:#x} in {}",
                                s.name,
                                a - s.addr,
                                main.label
                            )
                        })?;
                    }
                    let f = func
                        .map(|s| format!("{}+{:#x}", s.name, a - s.addr))
                        .unwrap_or_else(|| format!("{a:#x}"));
                    Ok(Some(format!("{f} in {}", main.label)))
                } else {
                    Err(anyhow!(
                        "resolved to nothing: {a:#x} is not in the executable code of {} (addresses are link-time addresses of the main executable)",
                        main.label
                    ))
                }
            }
        }
    }
}

/// The file of the library `module` names among the objects `exe` loads
/// (for the debug information of `$name` in `kprobe(lib:f)`).
pub fn library_file(exe: &Path, module: &ptap_lang::checked::Module) -> Option<PathBuf> {
    let spec = match module {
        ptap_lang::checked::Module::Name(n) => ModuleSpec::Name(n.clone()),
        ptap_lang::checked::Module::Path(p) => ModuleSpec::Path(p.clone()),
    };
    let images = Images::load(exe).ok()?;
    let spec = Some(spec);
    let found = images.matching(&spec).next().map(|i| i.path.clone());
    found
}

/// One function a listing (`ptap -l`) shows.
pub struct Listed {
    /// How messages name its object.
    pub label: String,
    pub path: PathBuf,
    pub is_main: bool,
    /// The symbol.
    pub symbol: String,
    /// The name to write in a point (demangled for C++ and Rust).
    pub name: String,
    /// The demangled name with its parameters (C++), else `name`.
    pub full: String,
    /// Link-time address.
    pub addr: u64,
}

impl Images {
    /// The functions `query` (a name, or a wildcard when `pattern`)
    /// selects in the objects `module` names, as [`Images::resolve`]
    /// selects them.
    pub fn list(
        &self,
        module: &Option<ModuleSpec>,
        query: &str,
        pattern: bool,
    ) -> anyhow::Result<Vec<Listed>> {
        let listed = |img: &Image, s: &Sym| {
            let d = names::demangle(&s.name);
            let name = d
                .clone()
                .unwrap_or_else(|| s.name.split('@').next().unwrap_or(&s.name).to_string());
            Listed {
                label: img.label.clone(),
                path: img.path.clone(),
                is_main: std::ptr::eq(img, self.main()),
                symbol: s.name.clone(),
                full: names::demangle_full(&s.name).unwrap_or_else(|| name.clone()),
                name,
                addr: s.addr,
            }
        };
        let mut out: Vec<Listed> = Vec::new();
        if pattern {
            for img in self.matching(module) {
                let mut seen: Vec<u64> = Vec::new();
                for s in img.syms() {
                    if s.size > 0 && !seen.contains(&s.addr) && pattern_selects(query, &s.name) {
                        seen.push(s.addr);
                        out.push(listed(img, s));
                    }
                }
            }
            return Ok(out);
        }
        for img in self.matching(module) {
            if let Some(s) = img
                .syms()
                .iter()
                .find(|s| s.name == query || s.name.split('@').next() == Some(query))
            {
                return Ok(vec![listed(img, s)]);
            }
        }
        for img in self.matching(module) {
            let syms = img.syms();
            let hits = names::select_demangled(
                query,
                syms.iter().enumerate().map(|(i, s)| (i, s.name.as_str())),
            );
            if hits.is_empty() {
                continue;
            }
            if let Some(why) = names::ambiguity(query, &hits) {
                return Err(anyhow!("{why} (in {})", img.label));
            }
            let mut seen: Vec<u64> = Vec::new();
            for h in hits {
                let s = &syms[h.index];
                if !seen.contains(&s.addr) {
                    seen.push(s.addr);
                    out.push(listed(img, s));
                }
            }
            return Ok(out);
        }
        Ok(out)
    }
}

impl Images {
    /// Every object's label (the executable's path, libraries' file names)
    /// and its function names (the REPL completes probe points with them).
    pub fn function_names(&self) -> Vec<(String, Vec<String>)> {
        self.images
            .iter()
            .map(|i| {
                let mut v: Vec<String> = i.syms().iter().map(|s| s.name.clone()).collect();
                v.sort();
                v.dedup();
                (i.label.clone(), v)
            })
            .collect()
    }
}

impl Image {
    fn syms(&self) -> &[Sym] {
        self.syms.get_or_init(|| function_symbols(&self.data))
    }

    /// Is `addr` (link-time) an instruction boundary of function `f`,
    /// decoding from its start in the file? Ok when the bytes cannot be
    /// found (the runtime checks again in memory).
    fn check_boundary(&self, f: &Sym, addr: u64) -> anyhow::Result<()> {
        use object::ObjectSection;
        let Ok(file) = object::File::parse(&*self.data) else {
            return Ok(());
        };
        let code = file.sections().find_map(|sec| {
            let (start, len) = (sec.address(), sec.size());
            if f.addr < start || f.addr >= start + len {
                return None;
            }
            let data = sec.data().ok()?;
            let from = usize::try_from(f.addr - start).ok()?;
            let end = from.saturating_add(usize::try_from(f.size.max(1)).ok()?);
            data.get(from..end.min(data.len()))
        });
        let Some(code) = code else { return Ok(()) };
        match ptap_arch::decode::check_boundary(code, f.addr, addr) {
            Ok(_) => Ok(()),
            Err(ptap_arch::ArchError::NotBoundary) => {
                Err(anyhow!("is not on an instruction boundary"))
            }
            // Undecodable bytes, ...: the runtime decides (and explains).
            Err(_) => Ok(()),
        }
    }
}

/// Does the wildcard select this symbol (its name or its demangled name;
/// function entries only)? As `ptap_rt_core::proc::symbols::select_pattern`.
fn pattern_selects(pattern: &str, sym: &str) -> bool {
    let d = if names::may_match(pattern, sym) {
        names::demangle(sym)
    } else {
        None
    };
    names::match_pattern(pattern, sym, d.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_of_a_system_program() {
        let sh = Path::new("/bin/sh");
        let imgs = Images::load(sh).unwrap();
        assert!(imgs.images.iter().any(|i| i.label.starts_with("libc.so")));
        assert!(imgs.images.iter().any(|i| i.label.starts_with("ld-linux")));
    }
}
