//! Where a module's points are in this process: symbol names (qualified
//! by a library or not), demangled names, wildcards and link-time
//! addresses of the executable, resolved against the symbol index
//! (`crate::proc::symbols`) when the module is attached. Not the hit path.

use std::ffi::CString;

use super::ctx::SyscallName;
use super::meta::{ModuleSpec, TargetSpec};
use crate::proc::symbols;

/// The wildcard matcher (shared with ptap).
pub use crate::proc::names::glob;

/// Does a `lib:` qualifier name the object at `path`? (`libc` matches
/// libc.so.6.) ptap uses it too.
pub fn module_matches(path: &str, m: &Option<ModuleSpec>) -> bool {
    match m {
        None => true,
        Some(ModuleSpec::Path(p)) => path == p,
        Some(ModuleSpec::Name(n)) => {
            let base = path.rsplit('/').next().unwrap_or(path);
            base == n
                || base
                    .strip_prefix(n.as_str())
                    .is_some_and(|r| r.starts_with(['.', '-']))
        }
    }
}

/// Where a point is: a symbol name (+offset), an absolute address, or
/// the address of a function selected by its demangled name or a wildcard
/// (with the name to show).
pub(super) enum Site {
    Name(CString, u32),
    Addr(u64),
    Func(u64, String),
}

/// The name `probefunc()` gives for a site.
pub(super) fn func_name(site: &Site, target: &TargetSpec) -> Vec<u8> {
    match (site, target) {
        (Site::Name(..), TargetSpec::Symbol { name, .. }) => crate::proc::names::demangle(name)
            .unwrap_or_else(|| name.clone())
            .into_bytes(),
        (Site::Func(_, name), _) => name.as_bytes().to_vec(),
        (Site::Addr(a), _) => {
            let idx = symbols::get_or_build();
            symbols::containing_at(idx, *a)
                .map(|(o, i)| {
                    o.demangle_all();
                    o.display_name(i).as_bytes().to_vec()
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Owned names backing a `SyscallName` table.
pub(super) type Names = Box<[Box<[u8]>]>;

pub(super) fn syscall_table(target: &TargetSpec) -> (Box<[SyscallName]>, Names) {
    let TargetSpec::Syscall { calls, .. } = target else {
        return (Box::new([]), Box::new([]));
    };
    let names: Names = calls.iter().map(|(n, _)| n.as_bytes().into()).collect();
    let table = calls
        .iter()
        .zip(names.iter())
        .map(|((_, nr), n)| SyscallName {
            nr: u64::from(*nr),
            name: n.as_ptr(),
            len: n.len() as u64,
        })
        .collect();
    (table, names)
}

/// The sites of a point. `entry_kind`: "kretprobe" or "jprobe" for
/// points that need a function entry (not a `.cold` fragment).
pub(super) fn sites(target: &TargetSpec, entry_kind: Option<&str>) -> Result<Vec<Site>, String> {
    let refuse = |sym: &str| match entry_kind {
        Some(k) => crate::proc::names::entry_refusal(sym, k).map_or(Ok(()), Err),
        None => Ok(()),
    };
    match target {
        TargetSpec::Symbol {
            module,
            name,
            offset,
        } => {
            let full = match module {
                None => name.clone(),
                Some(ModuleSpec::Name(m) | ModuleSpec::Path(m)) => format!("{m}:{name}"),
            };
            let off = u32::try_from(*offset).map_err(|_| "offset too large".to_string())?;
            let c = CString::new(full.clone())
                .map_err(|_| "symbol name with a NUL byte".to_string())?;
            // The symbol itself (the probe layer looks it up again), else
            // the functions whose demangled name it is (crate::proc::names).
            if let Some(f) = crate::proc::symcache::lookup(&full) {
                refuse(name)?;
                demangle_object_of(f.addr);
                return Ok(vec![Site::Name(c, off)]);
            }
            let idx = symbols::get_or_build();
            let accept = |o: &symbols::Obj| module_matches(&o.path, module);
            let sel = symbols::select_demangled(idx, &accept, module.is_some(), name)?;
            if sel.is_empty() {
                // Not found: the probe layer says so.
                return Ok(vec![Site::Name(c, off)]);
            }
            Ok(sel
                .into_iter()
                .map(|s| {
                    demangle_object_of(s.addr);
                    Site::Func(s.addr + u64::from(off), s.display)
                })
                .collect())
        }
        // Not code: `attach_in` takes these points before asking for sites.
        TargetSpec::Process { .. } => Ok(Vec::new()),
        TargetSpec::Address(a) => {
            let idx = symbols::get_or_build();
            let main = idx
                .objs
                .iter()
                .find(|o| o.is_main)
                .ok_or("no main executable found")?;
            let at = main.bias + a;
            if let Some((o, i)) = symbols::containing_at(idx, at) {
                if o.syms[i].addr == at {
                    refuse(o.syms[i].name)?;
                }
            }
            demangle_object_of(at);
            Ok(vec![Site::Addr(at)])
        }
        TargetSpec::Pattern { module, pattern } => {
            let idx = symbols::get_or_build();
            let accept = |o: &symbols::Obj| module_matches(&o.path, module);
            let sel = symbols::select_pattern(idx, &accept, pattern);
            if sel.is_empty() {
                return Err(format!("no function matches `{pattern}`"));
            }
            Ok(sel
                .into_iter()
                .map(|s| {
                    demangle_object_of(s.addr);
                    Site::Func(s.addr, s.display)
                })
                .collect())
        }
        TargetSpec::Syscall { .. } => Err("system-call points register as syscall probes".into()),
        TargetSpec::None => Err("not a probe of the target".into()),
    }
}

/// See [`symbols::demangle_object_of`].
pub(super) fn demangle_object_of(addr: u64) {
    symbols::demangle_object_of(addr);
}
