//! Tracepoints: tracefs (mounted at /sys/kernel/tracing when it is not
//! mounted yet), the id and the record layout of `syscalls:sys_enter_*` /
//! `sys_exit_*`.

use anyhow::{anyhow, Context};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs directory, mounted if needed.
pub fn root() -> anyhow::Result<PathBuf> {
    for d in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(d).join("events").is_dir() {
            return Ok(PathBuf::from(d));
        }
    }
    let _ = std::fs::create_dir_all(TRACEFS);
    let (src, dst, ty) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: NUL-terminated strings; no mount data.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(anyhow!(
            "tracefs is not mounted and mounting it on {TRACEFS} failed ({}): mount it with `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        ));
    }
    Ok(PathBuf::from(TRACEFS))
}

/// One numeric field of a tracepoint record.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// A tracepoint: its id and its fields after the common ones.
#[derive(Debug, Clone)]
pub struct Tracepoint {
    pub name: String,
    pub id: u64,
    pub fields: Vec<Field>,
}

impl Tracepoint {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `syscalls:NAME` (`sys_enter_openat`).
pub fn syscall_tracepoint(root: &Path, name: &str) -> anyhow::Result<Tracepoint> {
    let dir = root.join("events/syscalls");
    if !dir.is_dir() {
        return Err(anyhow!(
            "this kernel has no system call tracepoints ({} is missing: CONFIG_FTRACE_SYSCALLS is off): use -c CMD or -x PID to probe system calls of one process",
            dir.display()
        ));
    }
    let ev = dir.join(name);
    let id = std::fs::read_to_string(ev.join("id"))
        .map_err(|e| anyhow!("no tracepoint syscalls:{name} ({}: {e})", ev.display()))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| anyhow!("{}/id: not a number", ev.display()))?;
    let format = std::fs::read_to_string(ev.join("format"))
        .with_context(|| format!("{}/format", ev.display()))?;
    Ok(Tracepoint {
        name: name.to_string(),
        id,
        fields: parse_fields(&format),
    })
}

/// The non-common fields of a tracepoint `format` file:
/// `field:long ret; offset:16; size:8; signed:1;` (tab-separated).
pub fn parse_fields(format: &str) -> Vec<Field> {
    let mut out = Vec::new();
    for line in format.lines() {
        let mut name = None;
        let (mut offset, mut size, mut signed) = (None, None, false);
        for part in line.trim().split(';') {
            let part = part.trim();
            if let Some(decl) = part.strip_prefix("field:") {
                let decl = decl.trim_end_matches(']');
                name = decl
                    .rsplit([' ', '*'])
                    .next()
                    .map(|n| n.split('[').next().unwrap_or(n).to_string());
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = v == "1";
            }
        }
        if let (Some(n), Some(o), Some(s)) = (name, offset, size) {
            if !n.starts_with("common_") && n != "__syscall_nr" {
                out.push(Field {
                    name: n,
                    offset: o,
                    size: s,
                    signed,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_format_file() {
        let f = "name: sys_enter_openat\nID: 782\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
\tfield:long ret;\toffset:32;\tsize:8;\tsigned:1;\n";
        let v = parse_fields(f);
        let names: Vec<&str> = v.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["dfd", "filename", "ret"]);
        assert_eq!((v[1].offset, v[1].size, v[1].signed), (24, 8, false));
        assert!(v[2].signed);
    }

    #[test]
    fn a_kernel_without_syscall_tracepoints_is_a_clear_error() {
        let e = format!(
            "{:#}",
            syscall_tracepoint(Path::new("/nonexistent"), "sys_exit_openat").unwrap_err()
        );
        assert!(e.contains("no system call tracepoints"), "{e}");
        assert!(e.contains("-c CMD or -x PID"), "{e}");
    }
}
