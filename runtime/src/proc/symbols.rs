//! Process-wide symbol table: `kallsyms_lookup_name` for user space.
//!
//! Built at registration time (never on the hit path) from every loaded
//! object (`dl_iterate_phdr`): .symtab and .dynsym read from the files on
//! disk with the `object` crate, so LOCAL (static) functions are found too.
//! The built index is published through an atomic pointer and never freed,
//! so the hit path (fault reports, dump_stack) may read it without locks.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering};

use object::{Object, ObjectSymbol};

pub struct Sym {
    pub addr: u64,
    pub size: u64,
    /// In its object's block of names (see `load_syms`): no allocation per
    /// symbol.
    pub name: &'static str,
    pub global: bool,
    pub ifunc: bool,
}

pub struct Obj {
    pub path: String,
    pub bias: u64,
    /// Executable PT_LOAD ranges (absolute).
    pub exec: Vec<(u64, u64)>,
    /// All PT_LOAD ranges (absolute).
    pub all: Vec<(u64, u64)>,
    /// Sorted by address.
    pub syms: Vec<Sym>,
    pub is_runtime: bool,
    pub is_main: bool,
    /// Address of the in-memory .eh_frame_hdr (PT_GNU_EH_FRAME), 0 if none.
    pub eh_frame_hdr: u64,
    /// Demangled names of `syms` (None: not mangled), filled at
    /// registration time by [`Obj::demangle_all`] for the objects that
    /// hold probes (demangling a whole C++ library costs tens of
    /// milliseconds); read lock-free by the hit path.
    pub demangled: std::sync::OnceLock<Box<[Option<Box<str>>]>>,
}

impl Obj {
    /// The name to show for symbol `i`: demangled if known, else its own.
    /// Hit-path safe (no allocation, no lock).
    pub fn display_name(&self, i: usize) -> &str {
        if let Some(Some(d)) = self.demangled.get().and_then(|t| t.get(i)) {
            return d;
        }
        self.syms[i].name
    }

    /// Demangle every symbol of the object once (registration time).
    pub fn demangle_all(&self) {
        self.demangled.get_or_init(|| {
            self.syms
                .iter()
                .map(|s| crate::proc::names::demangle(s.name).map(String::into_boxed_str))
                .collect()
        });
    }
}

pub struct Index {
    pub objs: Vec<Obj>,
}

static INDEX: AtomicPtr<Index> = AtomicPtr::new(core::ptr::null_mut());

/// The current index, if one was built.
pub fn current() -> Option<&'static Index> {
    let p = INDEX.load(Ordering::Acquire);
    if p.is_null() {
        None
    } else {
        // SAFETY: published indexes are leaked, never freed.
        Some(unsafe { &*p })
    }
}

struct Raw {
    name: String,
    bias: u64,
    exec: Vec<(u64, u64)>,
    all: Vec<(u64, u64)>,
    eh_frame_hdr: u64,
}

unsafe extern "C" fn phdr_cb(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: called by dl_iterate_phdr with a valid info; data is our Vec.
    unsafe {
        let out = &mut *(data as *mut Vec<Raw>);
        let info = &*info;
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(info.dlpi_name)
                .to_string_lossy()
                .into_owned()
        };
        let mut exec = Vec::new();
        let mut all = Vec::new();
        let mut eh_frame_hdr = 0;
        for i in 0..info.dlpi_phnum as usize {
            let ph = &*info.dlpi_phdr.add(i);
            if ph.p_type == libc::PT_GNU_EH_FRAME {
                eh_frame_hdr = info.dlpi_addr + ph.p_vaddr;
            }
            if ph.p_type == libc::PT_LOAD {
                let s = info.dlpi_addr + ph.p_vaddr;
                let r = (s, s + ph.p_memsz);
                all.push(r);
                if ph.p_flags & libc::PF_X != 0 {
                    exec.push(r);
                }
            }
        }
        out.push(Raw {
            name,
            bias: info.dlpi_addr,
            exec,
            all,
            eh_frame_hdr,
        });
    }
    0
}

/// The loaded objects' names and segments, from their program headers in
/// memory (no file is read: microseconds).
fn loaded_objects() -> Vec<Raw> {
    let mut raws: Vec<Raw> = Vec::new();
    // SAFETY: the callback only appends to `raws`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(phdr_cb),
            &mut raws as *mut Vec<Raw> as *mut libc::c_void,
        );
    }
    raws
}

fn runtime_anchor() -> u64 {
    build as *const () as u64
}

impl Raw {
    /// The runtime's own object.
    fn is_runtime(&self) -> bool {
        let a = runtime_anchor();
        self.exec.iter().any(|&(s, e)| a >= s && a < e)
    }
}

/// Is the `i`-th loaded object one the index holds: the program (first),
/// and every named object but the vDSO?
fn indexed(i: usize, r: &Raw) -> bool {
    i == 0 || !(r.name.is_empty() || skipped(&r.name))
}

fn load_syms(path: &str, bias: u64) -> Vec<Sym> {
    // Mapped, not read: a process of a followed tree builds this index while
    // it starts, and reading a whole library (libc is ~2 MB) into fresh
    // anonymous memory costs a copy and a page fault per 4 KiB, while a
    // mapping shares the page cache and touches only the symbol tables.
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // SAFETY: a read-only private mapping of a loaded object's file, dropped
    // before this function returns. A file truncated under it would fault
    // (SIGBUS), but so would the process's own mapping of it: objects that are
    // loaded are not rewritten in place (a rebuild renames over them).
    let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(&*data) else {
        return Vec::new();
    };
    // The names are copied into one block per object (indexes are never
    // freed): an allocation per name cost ~3,000 of them for libc in every
    // process of a followed tree. Not kept in the file's mapping: a mapping
    // left in place would show in /proc/PID/maps as a second copy of the
    // object, at an address that is not where it is loaded.
    let found: Vec<FuncSym<'_>> = function_symbols(&file).collect();
    let mut block = String::with_capacity(found.iter().map(|f| f.name.len()).sum());
    for f in &found {
        block.push_str(f.name);
    }
    let block: &'static str = Box::leak(block.into_boxed_str());
    let mut at = 0;
    let syms: Vec<Sym> = found
        .iter()
        .map(|f| {
            let name = &block[at..at + f.name.len()];
            at += f.name.len();
            Sym {
                addr: bias + f.addr,
                size: f.size,
                name,
                global: f.global,
                ifunc: f.ifunc,
            }
        })
        .collect();
    // By address, globals first, else in table order (.symtab before
    // .dynsym): what a stable sort on (address, !global) gives, through an
    // unstable sort of small keys (the stable sort of the 48-byte entries
    // was a third of this function).
    let mut keys: Vec<(u64, bool, u32)> = syms
        .iter()
        .enumerate()
        .map(|(i, s)| (s.addr, !s.global, i as u32))
        .collect();
    keys.sort_unstable();
    let mut slots: Vec<Option<Sym>> = syms.into_iter().map(Some).collect();
    let mut syms: Vec<Sym> = keys
        .iter()
        .filter_map(|&(_, _, i)| slots[i as usize].take())
        .collect();
    syms.dedup_by(|a, b| a.addr == b.addr && a.name == b.name);
    syms
}

/// The path of this process's executable; a file replaced since the
/// process started (a rebuild renamed over it) reads as "PATH (deleted)":
/// the suffix is dropped. "" if unknown.
pub fn exe_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| {
            let p = p.to_string_lossy();
            p.strip_suffix(" (deleted)").unwrap_or(&p).to_owned()
        })
        .unwrap_or_default()
}

/// A function symbol of an ELF file, at its address in the file.
pub struct FuncSym<'a> {
    pub name: &'a str,
    pub addr: u64,
    pub size: u64,
    pub global: bool,
    pub ifunc: bool,
}

/// The symbols that name functions, as the runtime's index and ptap's
/// point resolution both take them: defined, at a non-zero address,
/// `STT_FUNC` or `STT_GNU_IFUNC`, with a name; .symtab then .dynsym.
///
/// A non-default symbol version (`name@VERSION`, kept for programs linked
/// against an older library: glibc's `pthread_cond_wait@GLIBC_2.2.5`) counts
/// as not global, so that a lookup by name finds the default version, the
/// one the dynamic linker binds programs to, as `dlsym` does.
pub fn function_symbols<'d: 'f, 'f>(
    file: &'f object::File<'d>,
) -> impl Iterator<Item = FuncSym<'d>> + 'f {
    let versions = match file {
        object::File::Elf64(e) => e
            .elf_section_table()
            .versions(e.endian(), e.data())
            .ok()
            .flatten()
            .map(|v| (v, e.endian())),
        _ => None,
    };
    file.symbols()
        .map(|s| (s, false))
        .chain(file.dynamic_symbols().map(|s| (s, true)))
        .filter_map(move |(s, dynamic)| {
            if s.is_undefined() || s.address() == 0 {
                return None;
            }
            let st_type = match s.flags() {
                object::SymbolFlags::Elf { st_info, .. } => st_info & 0xf,
                _ => 0,
            };
            let ifunc = st_type == object::elf::STT_GNU_IFUNC;
            if s.kind() != object::SymbolKind::Text && !ifunc {
                return None;
            }
            let name = s.name().ok().filter(|n| !n.is_empty())?;
            let hidden_version = if dynamic {
                versions
                    .as_ref()
                    .is_some_and(|(v, en)| v.version_index(*en, s.index()).is_hidden())
            } else {
                name.contains('@') && !name.contains("@@")
            };
            Some(FuncSym {
                name,
                addr: s.address(),
                size: s.size(),
                global: s.is_global() && !hidden_version,
                ifunc,
            })
        })
}

/// (Re)build the index from the objects loaded now, and publish it.
pub fn build() -> &'static Index {
    let raws = loaded_objects();
    // Nothing loaded or unloaded since the last build: keep it (reading
    // every object's symbol table again costs milliseconds).
    if let Some(cur) = current() {
        let now: Vec<(&str, u64)> = raws
            .iter()
            .enumerate()
            .filter(|&(i, r)| indexed(i, r))
            .map(|(i, r)| (if i == 0 { "" } else { r.name.as_str() }, r.bias))
            .collect();
        let before: Vec<(&str, u64)> = cur
            .objs
            .iter()
            .map(|o| (if o.is_main { "" } else { o.path.as_str() }, o.bias))
            .collect();
        if now == before {
            return cur;
        }
    }
    let mut objs = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let is_main = i == 0;
        let path = if is_main {
            // The name, for `lib:sym` and messages. A file replaced since
            // the process started (a rebuild renamed over it) reads as
            // "PATH (deleted)".
            exe_path()
        } else {
            r.name.clone()
        };
        if path.is_empty() || skipped(&path) {
            continue;
        }
        let is_runtime = r.is_runtime();
        // The symbols of the file that is mapped: /proc/self/exe opens it
        // even when the path now names another file (or none). The
        // runtime's own are read only for C modules (see
        // [`want_runtime_symbols`]).
        let syms = if is_runtime && !is_main && !RUNTIME_SYMS.load(Ordering::Relaxed) {
            Vec::new()
        } else {
            load_syms(if is_main { "/proc/self/exe" } else { &path }, r.bias)
        };
        objs.push(Obj {
            path,
            bias: r.bias,
            exec: r.exec,
            all: r.all,
            syms,
            is_runtime,
            is_main,
            eh_frame_hdr: r.eh_frame_hdr,
            demangled: std::sync::OnceLock::new(),
        });
    }
    let idx = Box::leak(Box::new(Index { objs }));
    // Before it is published: the hit path never sees the site objects'
    // names half done. A rebuilt index (a library loaded since) has fresh
    // objects: every object that holds a probe is demangled again.
    demangle_sites(idx);
    INDEX.store(idx, Ordering::Release);
    // A site recorded while this was built (it saw an older index, or none).
    demangle_sites(idx);
    idx
}

/// The objects that hold probe sites (see [`demangle_object_of`]): their
/// paths, and addresses of sites placed before any index was built.
struct SiteObjects {
    paths: Vec<String>,
    pending: Vec<u64>,
}

static SITE_OBJECTS: std::sync::Mutex<SiteObjects> = std::sync::Mutex::new(SiteObjects {
    paths: Vec::new(),
    pending: Vec::new(),
});

/// The names of the object holding a probe site are demangled, so that
/// backtraces and `usymname()` through it show demangled names (once per
/// object, at registration; never on the hit path). Without an index yet
/// (a name the dynamic linker resolved: [`quick_lookup`]), that is done
/// when one is built.
pub fn demangle_object_of(addr: u64) {
    let o = current()
        .and_then(|idx| object_of(idx, addr))
        .filter(|o| !o.is_runtime);
    if let Ok(mut s) = SITE_OBJECTS.lock() {
        match o {
            Some(o) if !s.paths.contains(&o.path) => s.paths.push(o.path.clone()),
            Some(_) => {}
            // No index yet, or one older than the object (a library loaded
            // since): the next build resolves it.
            None => s.pending.push(addr),
        }
    }
    if let Some(o) = o {
        o.demangle_all(); // outside the lock: tens of ms for a C++ library
    }
}

/// Resolve the pending site addresses against `idx` and demangle every
/// object that holds a site (the lock is held only to read the lists).
fn demangle_sites(idx: &Index) {
    let paths = {
        let Ok(mut s) = SITE_OBJECTS.lock() else {
            return;
        };
        for addr in std::mem::take(&mut s.pending) {
            match object_of(idx, addr).filter(|o| !o.is_runtime) {
                Some(o) if !s.paths.contains(&o.path) => s.paths.push(o.path.clone()),
                Some(_) => {}
                None => s.pending.push(addr),
            }
        }
        s.paths.clone()
    };
    for o in idx
        .objs
        .iter()
        .filter(|o| !o.is_runtime && paths.contains(&o.path))
    {
        o.demangle_all();
    }
}

static FORK_SITE_OBJECTS: crate::base::forklock::MutexSlot<SiteObjects> =
    crate::base::forklock::MutexSlot::new(&SITE_OBJECTS);

/// The lock of the site objects' list, for the fork handlers
/// (`crate::base::forklock`).
pub fn fork_lock() -> &'static dyn crate::base::forklock::ForkLock {
    &FORK_SITE_OBJECTS
}

static RUNTIME_SYMS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Read the runtime's own symbols into the index from now on. Its functions
/// cannot be probed and lookups without a module skip it, so they only
/// name frames: a C module's `init_module` is called by the runtime's
/// loader, and a backtrace taken there names the loader's frames. A script
/// module's handlers never run under the runtime's named frames in a
/// backtrace (it starts at the probed context). Its symbol table is the
/// largest in most processes (5,000 Rust symbols, 60% of building the
/// index), and every process of a followed tree would read it again.
pub fn want_runtime_symbols() {
    RUNTIME_SYMS.store(true, Ordering::Relaxed);
}

/// Objects `build` leaves out (no file on disk).
fn skipped(name: &str) -> bool {
    name.starts_with("linux-vdso")
}

pub fn get_or_build() -> &'static Index {
    current().unwrap_or_else(build)
}

/// Does `want` (from "lib:sym") name this object? `libc` matches libc.so.6,
/// `libc.so.6` matches exactly, and anything with a '/' is a path.
fn lib_matches(path: &str, want: &str) -> bool {
    if want.contains('/') {
        return path == want
            || std::fs::canonicalize(want)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
                .as_deref()
                == Some(path);
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    if base == want {
        return true;
    }
    base.strip_prefix(want)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub addr: u64,
    /// Start and size of the containing function (for boundary checks).
    pub func: u64,
    pub size: u64,
}

/// The implementation the IFUNC `name` of object `o` resolved to, looked
/// up in that object (registration time: `dlopen(RTLD_NOLOAD)` + `dlsym`).
fn ifunc_target(o: &Obj, name: &str) -> Option<u64> {
    if o.is_main {
        return resolve_ifunc(name);
    }
    let path = CString::new(o.path.as_str()).ok()?;
    let c = CString::new(name).ok()?;
    // SAFETY: dlopen of an object already loaded (RTLD_NOLOAD: no
    // constructor runs) with valid C strings; the handle is closed again.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return None;
        }
        let p = libc::dlsym(h, c.as_ptr());
        libc::dlclose(h);
        (!p.is_null()).then_some(p as u64)
    }
}

fn resolve_ifunc(name: &str) -> Option<u64> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT and a valid C string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

fn lookup_in(idx: &Index, name: &str) -> Option<Found> {
    let (lib, sym) = match name.split_once(':') {
        Some((l, s)) if !l.is_empty() => (Some(l), s),
        _ => (None, name),
    };
    let mut best: Option<(Found, bool)> = None;
    for o in &idx.objs {
        if o.is_runtime && lib.is_none() {
            continue;
        }
        if let Some(l) = lib {
            if !lib_matches(&o.path, l) {
                continue;
            }
        }
        for s in &o.syms {
            if s.name == sym || s.name.split('@').next() == Some(sym) {
                let f = if s.ifunc {
                    let a = resolve_ifunc(sym)?;
                    // The implementation is often a LOCAL symbol of a stripped
                    // library: use a symbol only if it really contains it.
                    let (func, size) = containing(idx, a)
                        .filter(|(_, s)| a >= s.addr && a < s.addr + s.size)
                        .map(|(_, s)| (s.addr, s.size))
                        .unwrap_or((a, 0));
                    Found {
                        addr: a,
                        func,
                        size,
                    }
                } else {
                    Found {
                        addr: s.addr,
                        func: s.addr,
                        size: s.size,
                    }
                };
                // First global wins; a local one is kept only if no global appears.
                if s.global {
                    return Some(f);
                }
                if best.is_none() {
                    best = Some((f, false));
                }
            }
        }
        if best.is_some() && o.is_main {
            break;
        }
    }
    best.map(|b| b.0)
}

/// `dladdr1`'s request for the symbol table entry (glibc's
/// `RTLD_DL_SYMENT`; the libc crate does not define it).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// `lib:name` resolved through the dynamic linker's own hash tables of the
/// loaded library (`dlsym`, then `dladdr1` for the symbol's size), without
/// reading any file: building the index reads every loaded object's symbol
/// table, ~0.6 ms for libc alone, which every process of a followed tree
/// paid to find one function (measured with `kprobe(libc:malloc)`). Only
/// an exported function of that library itself qualifies: None (and the
/// caller asks the index) for an IFUNC (`dlsym` gives its implementation,
/// often a local symbol of a stripped library), a symbol found in a
/// dependency, the program itself (`lib` names a library), a name with a
/// version suffix, or anything `dladdr1` does not describe exactly.
pub fn quick_lookup(name: &str) -> Option<Found> {
    let (lib, sym) = name.split_once(':')?;
    if lib.is_empty() || sym.is_empty() || sym.contains('@') {
        return None;
    }
    let obj = loaded_objects()
        .into_iter()
        .enumerate()
        .find(|(i, r)| *i > 0 && indexed(*i, r) && !r.is_runtime() && lib_matches(&r.name, lib))?;
    let (path, c) = (
        CString::new(obj.1.name.as_str()).ok()?,
        CString::new(sym).ok()?,
    );
    // SAFETY: dlopen of an object already loaded (RTLD_NOLOAD: nothing is
    // loaded, no constructor runs) with valid C strings; the handle is
    // closed again. dladdr1 writes only `info` and `ent`.
    let (p, saddr, ent) = unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return None;
        }
        // The handle is kept until the symbol entry is read: a dlclose by
        // the target meanwhile cannot unmap the library under us.
        let found = (|| {
            let p = libc::dlsym(h, c.as_ptr());
            if p.is_null() {
                return None;
            }
            let mut info: libc::Dl_info = core::mem::zeroed();
            let mut ent: *mut libc::c_void = core::ptr::null_mut();
            if libc::dladdr1(p, &mut info, &mut ent, RTLD_DL_SYMENT) == 0 || ent.is_null() {
                return None;
            }
            Some((
                p as u64,
                info.dli_saddr as u64,
                *(ent as *const libc::Elf64_Sym),
            ))
        })();
        libc::dlclose(h);
        found?
    };
    let in_lib = obj.1.exec.iter().any(|&(s, e)| p >= s && p < e);
    let func = ent.st_info & 0xf == object::elf::STT_FUNC;
    (in_lib && func && ent.st_size > 0 && saddr == p).then_some(Found {
        addr: p,
        func: p,
        size: ent.st_size,
    })
}

/// The executable segment holding `addr` and whether it is the runtime's
/// own, from the program headers in memory (no symbol table is read).
pub fn exec_segment(addr: u64) -> Option<((u64, u64), bool)> {
    let raws = loaded_objects();
    raws.iter().enumerate().find_map(|(i, r)| {
        let seg = *r.exec.iter().find(|&&(s, e)| addr >= s && addr < e)?;
        indexed(i, r).then(|| (seg, r.is_runtime()))
    })
}

/// Look a name up; rebuild the index once if it is not found (a library may
/// have been loaded since).
pub fn lookup(name: &str) -> Option<Found> {
    if let Some(f) = lookup_in(get_or_build(), name) {
        return Some(f);
    }
    lookup_in(build(), name)
}

/// The object containing `addr` (any PT_LOAD segment).
pub fn object_of(idx: &Index, addr: u64) -> Option<&Obj> {
    idx.objs
        .iter()
        .find(|o| o.all.iter().any(|&(s, e)| addr >= s && addr < e))
}

/// The function symbol containing `addr`.
pub fn containing(idx: &Index, addr: u64) -> Option<(&Obj, &Sym)> {
    containing_at(idx, addr).map(|(o, i)| (o, &o.syms[i]))
}

/// [`containing`], with the index of the symbol in its object.
pub fn containing_at(idx: &Index, addr: u64) -> Option<(&Obj, usize)> {
    let o = object_of(idx, addr)?;
    let i = o.syms.partition_point(|s| s.addr <= addr);
    let mut k = i;
    while k > 0 {
        k -= 1;
        let s = &o.syms[k];
        if addr < s.addr + s.size.max(1) {
            return Some((o, k));
        }
        if s.size != 0 && addr >= s.addr + s.size && k + 1 < i {
            break;
        }
    }
    // No sized symbol contains it: the nearest preceding symbol when its
    // size is unknown (0). A sized one that ends before addr does not
    // contain it (a local function of a stripped library, named by no
    // symbol): None, and callers show the object and offset instead of
    // `name+off` with an offset past the symbol's end.
    if i > 0 && o.syms[i - 1].size == 0 {
        return Some((o, i - 1));
    }
    None
}

/// One function selected by a demangled name or a wildcard.
pub struct Selected {
    pub addr: u64,
    /// The symbol.
    pub name: String,
    /// The name to show (demangled when the symbol is mangled).
    pub display: String,
}

/// The functions the exact name `name` selects by demangled names (see
/// `crate::proc::names`), in the first object (in load order, the runtime's own
/// left out unless `module` is given) that has any: every overload.
/// Err: several scopes end with `::name`. Ok(empty): none.
pub fn select_demangled(
    idx: &Index,
    module: &dyn Fn(&Obj) -> bool,
    explicit_module: bool,
    name: &str,
) -> Result<Vec<Selected>, String> {
    for o in idx
        .objs
        .iter()
        .filter(|o| (explicit_module || !o.is_runtime) && module(o))
    {
        let hits = crate::proc::names::select_demangled(
            name,
            o.syms.iter().enumerate().map(|(i, s)| (i, s.name)),
        );
        if hits.is_empty() {
            continue;
        }
        if let Some(why) = crate::proc::names::ambiguity(name, &hits) {
            return Err(why);
        }
        let mut out: Vec<Selected> = hits
            .into_iter()
            .map(|h| Selected {
                addr: o.syms[h.index].addr,
                name: o.syms[h.index].name.to_string(),
                display: h.demangled,
            })
            .collect();
        out.sort_by_key(|s| s.addr);
        out.dedup_by_key(|s| s.addr);
        return Ok(out);
    }
    Ok(Vec::new())
}

/// The sized function symbols of the objects `module` accepts (the
/// runtime's own left out) that the wildcard `pattern` selects: symbol or
/// demangled name, function entries only (`crate::proc::names`).
pub fn select_pattern(idx: &Index, module: &dyn Fn(&Obj) -> bool, pattern: &str) -> Vec<Selected> {
    let mut out: Vec<Selected> = Vec::new();
    for o in idx.objs.iter().filter(|o| !o.is_runtime && module(o)) {
        for s in &o.syms {
            if s.size == 0 {
                continue;
            }
            let d = if crate::proc::names::may_match(pattern, s.name) {
                crate::proc::names::demangle(s.name)
            } else {
                None
            };
            if crate::proc::names::match_pattern(pattern, s.name, d.as_deref()) {
                // An IFUNC selects its implementation, as an explicit name
                // does (the resolver only runs at relocation).
                let base = s.name.split('@').next().unwrap_or(s.name);
                let addr = if s.ifunc {
                    match ifunc_target(o, base) {
                        Some(a) => a,
                        None => continue,
                    }
                } else {
                    s.addr
                };
                out.push(Selected {
                    addr,
                    name: s.name.to_string(),
                    display: d.unwrap_or_else(|| base.to_string()),
                });
            }
        }
    }
    out.sort_by_key(|s| s.addr);
    out.dedup_by_key(|s| s.addr);
    out
}

/// Format `addr` as `func+0xoff [lib]` into `out` without allocating
/// (hit-path safe once an index exists). Returns the number of bytes written.
pub fn symbolize(addr: u64, out: &mut crate::fmt::Buf) {
    let hex = |out: &mut crate::fmt::Buf, v: u64| {
        out.extend(b"0x");
        let mut started = false;
        for i in (0..16).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            if d != 0 || started || i == 0 {
                started = true;
                out.push(b"0123456789abcdef"[d as usize]);
            }
        }
    };
    if let Some(idx) = current() {
        if let Some((o, i)) = containing_at(idx, addr) {
            out.extend(o.display_name(i).as_bytes());
            out.push(b'+');
            hex(out, addr - o.syms[i].addr);
            if !o.is_main {
                out.extend(b" [");
                out.extend(o.path.rsplit('/').next().unwrap_or("").as_bytes());
                out.push(b']');
            }
            return;
        }
    }
    hex(out, addr);
}

/// Is `addr` inside executable code of a loaded object?
pub fn executable(idx: &Index, addr: u64) -> Option<&Obj> {
    idx.objs
        .iter()
        .find(|o| o.exec.iter().any(|&(s, e)| addr >= s && addr < e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dynamic linker's answer is the index's for libc's plain exported
    /// functions (address and size); everything it cannot describe exactly
    /// is left to the index.
    #[test]
    fn quick_lookup_agrees_with_the_index() {
        for name in ["malloc", "free", "open", "read", "write", "fopen", "strtol"] {
            let full = format!("libc:{name}");
            let Some(q) = quick_lookup(&full) else {
                panic!("{full}: the dynamic linker's tables should answer");
            };
            assert_eq!(Some(q), lookup(&full), "{full}");
            assert!(q.size > 0 && q.func == q.addr, "{full}: {q:?}");
        }
        // Two versions: the default one (what programs call) for both.
        for name in [
            "pthread_cond_wait",
            "pthread_cond_signal",
            "posix_spawn",
            "fmemopen",
        ] {
            let full = format!("libc:{name}");
            let q = quick_lookup(&full).expect("a default version");
            assert_eq!(
                Some(q),
                lookup(&full),
                "{full}: the index must pick the default version too"
            );
            // SAFETY: dlsym with RTLD_DEFAULT and a C string.
            let bound =
                unsafe { libc::dlsym(libc::RTLD_DEFAULT, CString::new(name).unwrap().as_ptr()) };
            assert_eq!(q.addr, bound as u64, "{full}");
        }
        // Not there, not a function, not this library's, not a library.
        assert_eq!(quick_lookup("libc:ptap_no_such_function"), None);
        assert_eq!(quick_lookup("libc:environ"), None, "a variable");
        assert_eq!(
            quick_lookup("libc:memcpy"),
            None,
            "an IFUNC: the index picks its implementation"
        );
        assert_eq!(quick_lookup("libnosuchlib:malloc"), None);
        assert_eq!(
            quick_lookup("malloc"),
            None,
            "unqualified names go to the index"
        );
        assert_eq!(quick_lookup("libc:malloc@GLIBC_2.2.5"), None);
    }

    /// An address in a gap between two sized symbols of libc (code no
    /// exported symbol names, as a stripped library's local functions) is
    /// in no symbol: no `name+off` past a symbol's end.
    #[test]
    fn an_address_past_a_sized_symbol_is_in_none() {
        let idx = get_or_build();
        let libc = idx
            .objs
            .iter()
            .find(|o| lib_matches(&o.path, "libc"))
            .expect("libc is loaded");
        let gap = libc
            .syms
            .windows(2)
            .find(|w| w[0].size > 0 && w[0].addr + w[0].size + 16 <= w[1].addr)
            .map(|w| w[0].addr + w[0].size + 8)
            .expect("libc has code between its exported functions");
        assert!(containing_at(idx, gap).is_none(), "{gap:#x}");
        let f = &libc
            .syms
            .iter()
            .find(|s| s.size > 1)
            .expect("a sized symbol");
        let (_, i) = containing_at(idx, f.addr + 1).expect("inside it");
        assert_eq!(libc.syms[i].addr, f.addr);
    }

    /// A site in a library loaded after the index was built: the next build
    /// has the library, and demangles it as an object holding a site.
    #[test]
    fn a_library_loaded_after_the_index_is_demangled_by_the_next_build() {
        let _ = get_or_build();
        // SAFETY: dlopen of a system library with a C string.
        let h = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW) };
        assert!(!h.is_null(), "libm.so.6");
        // SAFETY: dlsym on our handle.
        let addr = unsafe { libc::dlsym(h, c"frexp".as_ptr()) } as u64;
        assert_ne!(addr, 0);
        demangle_object_of(addr);
        let idx = build();
        let o = object_of(idx, addr).expect("the rebuilt index has libm");
        assert!(o.path.contains("libm"), "{}", o.path);
        assert!(
            o.demangled.get().is_some(),
            "libm holds a site: its names are demangled"
        );
    }

    #[test]
    fn exec_segment_finds_the_code_of_libc_and_of_the_runtime() {
        let malloc = quick_lookup("libc:malloc").expect("libc:malloc");
        let ((s, e), runtime) = exec_segment(malloc.addr).expect("libc's text");
        assert!(s <= malloc.addr && malloc.addr < e && !runtime);
        let here = exec_segment_finds_the_code_of_libc_and_of_the_runtime as *const () as u64;
        assert!(exec_segment(here).is_some_and(|(_, runtime)| runtime));
        let stack = 0u64;
        assert_eq!(exec_segment(&stack as *const u64 as u64), None);
    }
}
