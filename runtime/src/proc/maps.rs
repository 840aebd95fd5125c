//! The one `/proc/PID/maps` parser: the runtime reads its own process's
//! (free address ranges near a probe for code arenas, text pages to patch),
//! ptap a target's (the files it maps, for `-x` and for points in shared
//! libraries).
//!
//! Parsing allocates nothing: the runtime reads its maps while registering
//! probes, when a probe on malloc may already be armed, and its own
//! allocations must not show up as the target's.

use std::path::Path;

/// One line of `/proc/PID/maps`: `Mapping<&str>` borrows its path from the
/// text ([`parse`]), `Mapping` (`String`) owns it ([`Mapping::to_owned`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping<P = String> {
    pub start: u64,
    pub end: u64,
    /// The permissions field as the kernel writes it: `r`/`-`, `w`/`-`,
    /// `x`/`-`, then `p` (private) or `s` (shared).
    pub perms: [u8; 4],
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file's absolute path (with the kernel's ` (deleted)` suffix if it
    /// was removed), a pseudo-name such as `[heap]`, `[stack]` or `[vdso]`,
    /// or empty for an anonymous mapping.
    pub path: P,
}

impl<P: AsRef<str>> Mapping<P> {
    pub fn exec(&self) -> bool {
        self.perms[2] == b'x'
    }

    /// Readable and executable, not writable, private: plain program text.
    pub fn private_text(&self) -> bool {
        &self.perms == b"r-xp"
    }

    /// A file (an absolute path), not an anonymous or special mapping.
    pub fn is_file(&self) -> bool {
        self.path.as_ref().starts_with('/')
    }
}

impl Mapping<&str> {
    /// The same line with its path copied.
    pub fn to_owned(&self) -> Mapping {
        Mapping {
            start: self.start,
            end: self.end,
            perms: self.perms,
            offset: self.offset,
            path: self.path.to_string(),
        }
    }
}

/// One line (`start-end perms offset dev inode [path]`); None if it is not
/// one. The path keeps its inner spaces; the column padding before it goes.
pub fn parse_line(line: &str) -> Option<Mapping<&str>> {
    let mut f = line.splitn(6, ' ');
    let (range, perms, off, _dev, _inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let path = f.next().unwrap_or("").trim_start();
    let (s, e) = range.split_once('-')?;
    let perms: [u8; 4] = perms.as_bytes().try_into().ok()?;
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset: u64::from_str_radix(off, 16).ok()?,
        path,
    })
}

/// Every mapping of a maps file's text, in its order (address order);
/// lines that do not parse are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Mapping<&str>> {
    text.lines().filter_map(parse_line)
}

/// The text of a maps file (`/proc/self/maps`, `/proc/PID/maps`), read in
/// one go (the kernel's snapshot of each page of it is consistent).
pub fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// This process's maps (empty if /proc is not readable).
/// By raw system calls: the runtime reads it while system call probes may
/// be armed (`kprobes::codemem::poke_many`), and they must not see it.
pub fn read_self() -> String {
    crate::base::sys::read_file_raw(c"/proc/self/maps", 0)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_each_kind() {
        let text = "\
55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1234                       /usr/bin/my prog\n\
7f0000000000-7f0000001000 rw-s 00000000 00:05 99                         /memfd:ptap-code (deleted)\n\
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]\n\
7f1000000000-7f1000004000 ---p 00000000 00:00 0 \n\
garbage\n\
7f2000000000-7f2000001000 r-xp 00000000 00:00 0\n";
        let m: Vec<_> = parse(text).collect();
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[0],
            Mapping {
                start: 0x55d0c0a00000,
                end: 0x55d0c0a21000,
                perms: *b"r-xp",
                offset: 0x2000,
                path: "/usr/bin/my prog",
            }
        );
        assert_eq!(m[0].to_owned().path, "/usr/bin/my prog");
        assert!(m[0].to_owned().private_text());
        assert!(m[0].exec() && m[0].private_text() && m[0].is_file());
        assert_eq!(m[1].path, "/memfd:ptap-code (deleted)");
        assert!(!m[1].exec() && m[1].is_file());
        assert_eq!(m[2].path, "[stack]");
        assert!(!m[2].is_file());
        assert_eq!((m[3].path, m[3].perms), ("", *b"---p"));
        assert_eq!((m[4].start, m[4].path), (0x7f2000000000, ""));
        assert!(m[4].private_text() && !m[4].is_file());
    }

    #[test]
    fn this_process_maps_its_own_code() {
        let here = this_process_maps_its_own_code as *const () as u64;
        let text = read_self();
        let m: Vec<_> = parse(&text).collect();
        let text = m
            .iter()
            .find(|m| m.start <= here && here < m.end)
            .expect("a mapping holds this function");
        assert!(text.exec() && text.is_file(), "{text:?}");
        assert!(m.windows(2).all(|w| w[0].end <= w[1].start));
    }
}
