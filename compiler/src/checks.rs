//! Checks that give bad input one clear line before a target runs, and the
//! filter that keeps a flood of identical runtime messages to one line and
//! a count.

use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// `ptap load MODULE`: is MODULE a shared object ptap can hand to the
/// runtime's `dlopen`? Catches what can be known before the target runs (a
/// directory, an unreadable file, not ELF, an executable); what only the
/// dynamic loader knows (undefined symbols, missing libraries) is reported
/// by the runtime in the target, and ptap then exits 1.
pub(crate) fn check_module(path: &Path) -> anyhow::Result<()> {
    let p = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("module {p}"))?;
    if meta.is_dir() {
        return Err(anyhow!(
            "module {p} is a directory, not a shared object (build the module with `cc -shared -fPIC`)"
        ));
    }
    if !meta.is_file() {
        return Err(anyhow!("module {p} is not a regular file"));
    }
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read module {p}"))?;
    let mut head = Vec::new();
    f.by_ref()
        .take(1 << 20)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read module {p}"))?;
    if !head.starts_with(b"\x7fELF") {
        return Err(anyhow!(
            "module {p} is not an ELF shared object (build it with `cc -shared -fPIC`)"
        ));
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read module {p}"))?;
    use object::read::elf::{Dyn, FileHeader, ProgramHeader};
    type Hdr = object::elf::FileHeader64<object::Endianness>;
    let hdr = Hdr::parse(&*data).with_context(|| format!("module {p} is not a valid ELF file"))?;
    let e = hdr
        .endian()
        .with_context(|| format!("module {p} is not a valid ELF file"))?;
    if hdr.e_machine(e) != object::elf::EM_X86_64 {
        return Err(anyhow!("module {p} is not an x86-64 shared object"));
    }
    if hdr.e_type(e) != object::elf::ET_DYN {
        return Err(anyhow!(
            "module {p} is an executable or object file, not a shared object (build it with `cc -shared -fPIC`)"
        ));
    }
    let phdrs = hdr
        .program_headers(e, &*data)
        .with_context(|| format!("module {p} is not a valid ELF file"))?;
    let pie = phdrs.iter().any(|ph| {
        ph.p_type(e) == object::elf::PT_INTERP
            || ph.dynamic(e, &*data).ok().flatten().is_some_and(|d| {
                d.iter().any(|x| {
                    x.tag32(e) == Some(object::elf::DT_FLAGS_1)
                        && x.d_val(e) & u64::from(object::elf::DF_1_PIE) != 0
                })
            })
    });
    if pie {
        return Err(anyhow!(
            "module {p} is a position-independent executable, not a shared object (build it with `cc -shared -fPIC`)"
        ));
    }
    Ok(())
}

/// Identical runtime messages (a faulting handler reports every hit): the
/// first few go through, the rest are counted and summed up at the end.
#[derive(Default)]
pub(crate) struct DiagFilter {
    seen: HashMap<Vec<u8>, u64>,
}

/// How many copies of one message are shown before they are only counted.
const SHOWN: u64 = 3;
/// Distinct messages remembered (then new ones all go through).
const REMEMBERED: usize = 4096;

impl DiagFilter {
    /// Should `msg` be printed now?
    pub(crate) fn pass(&mut self, msg: &[u8]) -> bool {
        if let Some(n) = self.seen.get_mut(msg) {
            *n += 1;
            return *n <= SHOWN;
        }
        if self.seen.len() < REMEMBERED {
            self.seen.insert(msg.to_vec(), 1);
        }
        true
    }

    /// One line per message that was held back: how many more times it came.
    pub(crate) fn summary(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, &n)| n > SHOWN)
            .map(|(m, n)| {
                format!(
                    "ptap: {} more times: {}",
                    n - SHOWN,
                    String::from_utf8_lossy(m).trim_end()
                )
            })
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_messages_are_counted() {
        let mut f = DiagFilter::default();
        let shown = (0..1000).filter(|_| f.pass(b"ptap: boom\n")).count();
        assert_eq!(shown, SHOWN as usize);
        assert!(f.pass(b"ptap: other\n"));
        assert_eq!(f.summary(), vec!["ptap: 997 more times: ptap: boom"]);
    }
}
