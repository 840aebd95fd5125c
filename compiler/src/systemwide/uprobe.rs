//! Function points system-wide: the kernel's uprobe PMU
//! (/sys/bus/event_source/devices/uprobe) on a file, for every process
//! that maps it. A point names its file (`"/usr/bin/bash":readline`) or a
//! library (`libc:malloc`, found as ld.so finds it for a system program);
//! each matching function gives one (path, file offset) site.

use anyhow::{anyhow, Context};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment};
use ptap_rt_core::script::attach::glob;
use ptap_rt_core::script::meta::{ModuleSpec, TargetSpec};

const PMU: &str = "/sys/bus/event_source/devices/uprobe";

/// One place to probe.
#[derive(Debug, Clone)]
pub struct Site {
    pub path: PathBuf,
    /// Offset in the file (what the uprobe PMU takes).
    pub offset: u64,
    /// The function (`probefunc()`).
    pub func: String,
}

/// The uprobe PMU's type and the config bit that makes a uretprobe.
pub struct Pmu {
    pub ty: u32,
    pub retprobe_bit: u32,
}

pub fn pmu() -> anyhow::Result<Pmu> {
    pmu_at(Path::new(PMU))
}

fn pmu_at(dir: &Path) -> anyhow::Result<Pmu> {
    let d = dir.display();
    let ty = std::fs::read_to_string(dir.join("type")).map_err(|_| {
        anyhow!("this kernel has no uprobe PMU ({d} is missing: CONFIG_UPROBE_EVENTS is off): probe functions of one process with -c CMD or -x PID")
    })?;
    let ty = ty
        .trim()
        .parse()
        .map_err(|_| anyhow!("{d}/type: not a number"))?;
    // "config:0"
    let bit = std::fs::read_to_string(dir.join("format/retprobe"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("config:")?.parse().ok())
        .unwrap_or(0);
    Ok(Pmu {
        ty,
        retprobe_bit: bit,
    })
}

/// The file a point's module qualifier names.
fn file_of(point: &str, module: &Option<ModuleSpec>) -> anyhow::Result<PathBuf> {
    match module {
        None => Err(anyhow!(
            "probe point {point} names no file: system-wide (no -c, no -x), a function point needs one, e.g. \"/usr/bin/bash\":readline or libc:malloc; or probe one process with -c CMD or -x PID"
        )),
        Some(ModuleSpec::Name(n)) if n == "kernel" => Err(anyhow!(kernel_error(point))),
        Some(ModuleSpec::Path(p)) => {
            let p = PathBuf::from(p);
            if p.is_file() {
                Ok(p)
            } else {
                Err(anyhow!("probe point {point}: no file {}", p.display()))
            }
        }
        Some(ModuleSpec::Name(n)) => crate::points::system_library(n).ok_or_else(|| {
            anyhow!(
                "probe point {point}: no library `{n}` found (searched the libraries of /bin/sh and /etc/ld.so.cache): give its path, e.g. \"/usr/lib/x86_64-linux-gnu/{n}.so\":FUNC"
            )
        }),
    }
}

/// `kernel:FUNC`: the kernel's own functions need kprobes.
pub fn kernel_error(point: &str) -> String {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        format!("probe point {point}: kernel functions are not probed by ptap; system calls are (kprobe(sys_NAME))")
    } else {
        format!("probe point {point}: this kernel has no kprobes (CONFIG_KPROBES is off), so its functions cannot be probed; system calls can (kprobe(sys_NAME))")
    }
}

/// Every site of a function point.
pub fn sites(point: &str, target: &TargetSpec) -> anyhow::Result<Vec<Site>> {
    let (module, name, offset, pattern) = match target {
        TargetSpec::Symbol {
            module,
            name,
            offset,
        } => (module, Some(name.as_str()), *offset, None),
        TargetSpec::Pattern { module, pattern } => (module, None, 0, Some(pattern.as_str())),
        TargetSpec::Address(_) => {
            return Err(anyhow!(
                "probe point {point}: an address names no file: system-wide, name the function and its file (\"/path/prog\":func), or probe one process with -c CMD or -x PID"
            ))
        }
        _ => return Ok(Vec::new()),
    };
    let path = file_of(point, module)?;
    let data = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| anyhow!("{} is not an ELF file ({e})", path.display()))?;
    let mut syms = crate::points::function_symbols(&data);
    syms.sort_by_key(|s| s.addr);
    let mut out: Vec<Site> = Vec::new();
    for s in &syms {
        let hit = match (name, pattern) {
            (Some(n), _) => s.name == n || s.name.split('@').next() == Some(n),
            (_, Some(p)) => s.size > 0 && glob(p.as_bytes(), s.name.as_bytes()),
            _ => false,
        };
        if !hit || out.iter().any(|o| o.func == s.name) {
            continue;
        }
        if offset > 0 && s.size > 0 && offset >= s.size {
            return Err(anyhow!(
                "probe point {point} is beyond the end of `{}` ({} bytes) in {}",
                s.name,
                s.size,
                path.display()
            ));
        }
        let vaddr = s.addr + offset;
        let Some(off) = file_offset(&file, vaddr) else {
            continue;
        };
        if out.iter().any(|o| o.offset == off) {
            continue;
        }
        out.push(Site {
            path: path.clone(),
            offset: off,
            func: s.name.split('@').next().unwrap_or(&s.name).to_string(),
        });
        if name.is_some() {
            break;
        }
    }
    if out.is_empty() {
        return Err(anyhow!(
            "probe point {point} resolved to nothing: searched {} (symbols from .symtab and .dynsym)",
            path.display()
        ));
    }
    Ok(out)
}

/// The file offset of link-time address `vaddr` (its PT_LOAD segment).
fn file_offset(file: &object::File, vaddr: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (start, size) = (seg.address(), seg.size());
        let (foff, fsize) = seg.file_range();
        (vaddr >= start && vaddr < start + size.min(fsize)).then(|| vaddr - start + foff)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_the_uprobe_pmu_is_a_clear_error() {
        let e = format!(
            "{:#}",
            pmu_at(Path::new("/nonexistent/uprobe")).err().unwrap()
        );
        assert!(e.contains("no uprobe PMU"), "{e}");
        assert!(e.contains("-c CMD or -x PID"), "{e}");
    }

    #[test]
    fn functions_resolve_to_file_offsets() {
        // /bin/sh's libc: a real library found by name, as ld.so would.
        let t = TargetSpec::Symbol {
            module: Some(ModuleSpec::Name("libc".into())),
            name: "malloc".into(),
            offset: 0,
        };
        let s = sites("kprobe(libc:malloc)", &t).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].path.to_string_lossy().contains("libc.so"));
        assert!(s[0].offset > 0);
        let none = TargetSpec::Symbol {
            module: None,
            name: "work".into(),
            offset: 0,
        };
        assert!(sites("kprobe(work)", &none)
            .unwrap_err()
            .to_string()
            .contains("names no file"));
    }
}
