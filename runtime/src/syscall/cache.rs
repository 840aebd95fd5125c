//! libc's system call sites, found once per session.
//!
//! The sweep of libc's text ([`ptap_arch::syssites::find`]: every
//! instruction decoded) costs ~10 ms, and every process of a followed tree
//! (a shell's children, a build's compilers) paid it again for the same
//! libc. The first process that sweeps writes what it found to a file in
//! ptap's private directory (the runtime's own, mode 0700); the processes
//! after it read that file back. The file is keyed by the length of the
//! text, and every site in it is checked against this process's bytes
//! before it is used (the `syscall`, and the `mov` that sets the number with
//! that number): a file written for another libc fails the check, and the
//! process sweeps for itself. File I/O is by raw system calls (the runtime's
//! own calls are not the target's: a probe on `openat` must not see them).

use std::sync::Mutex;

use ptap_arch::syssites::SysSite;

use crate::base::sys;

/// ptap's private directory (where the runtime was loaded from).
static DIR: Mutex<Option<std::ffi::CString>> = Mutex::new(None);

/// Set by the runtime's start-up: the directory the runtime was loaded from.
pub fn set_dir(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    if let (Ok(c), Ok(mut g)) = (
        std::ffi::CString::new(dir.as_os_str().as_bytes()),
        DIR.lock(),
    ) {
        *g = Some(c);
    }
}

const MAGIC: &str = "ptap-syssites 1";

fn path(len: u64, suffix: &str) -> Option<std::ffi::CString> {
    let g = DIR.lock().ok()?;
    let dir = g.as_ref()?.to_str().ok()?;
    std::ffi::CString::new(format!("{dir}/syssites-{len:x}{suffix}")).ok()
}

/// The file's text for `sites` of a text of `len` bytes at `base`.
fn encode(base: u64, len: u64, sites: &[SysSite]) -> String {
    use std::fmt::Write;
    let mut s = format!("{MAGIC} {len} {}\n", sites.len());
    for x in sites {
        let nr = x.nr.map_or(-1, |n| n as i64);
        let (at, plen) = x.patch.map_or((-1, 0), |(a, l)| ((a - base) as i64, l));
        let _ = writeln!(s, "{} {nr} {at} {plen}", x.syscall - base);
    }
    s
}

/// Parse what [`encode`] wrote, for a text of `len` bytes at `base`.
fn decode(text: &str, base: u64, len: u64) -> Option<Vec<SysSite>> {
    let mut lines = text.lines();
    let head = lines.next()?;
    let rest = head.strip_prefix(MAGIC)?;
    let mut w = rest.split_whitespace();
    let (l, n): (u64, usize) = (w.next()?.parse().ok()?, w.next()?.parse().ok()?);
    if l != len {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for line in lines {
        let f: Vec<i64> = line
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [sc, nr, at, plen] = f[..] else {
            return None;
        };
        if sc < 0 || sc as u64 + 2 > len {
            return None;
        }
        let patch = if at < 0 {
            None
        } else {
            if !(plen == 5 || plen == 7) || at as u64 >= sc as u64 {
                return None;
            }
            Some((base + at as u64, plen as u8))
        };
        out.push(SysSite {
            syscall: base + sc as u64,
            nr: u32::try_from(nr).ok(),
            patch,
        });
    }
    (out.len() == n).then_some(out)
}

/// Is `s` what this process's text holds? `bytes(addr, n)` reads the text
/// as it was before any probe (kprobes' int3s and jumps taken out).
fn holds(s: &SysSite, bytes: &dyn Fn(u64, usize) -> Vec<u8>) -> bool {
    if bytes(s.syscall, 2) != [0x0f, 0x05] {
        return false;
    }
    let Some((at, len)) = s.patch else {
        return true;
    };
    let b = bytes(at, len as usize);
    let imm = match (len, b.as_slice()) {
        (5, [0xb8, i @ ..]) => i,
        (7, [0x48, 0xc7, 0xc0, i @ ..]) => i,
        _ => return false,
    };
    let v = u32::from_le_bytes([imm[0], imm[1], imm[2], imm[3]]);
    s.nr == Some(v)
}

/// The sites of a text of `len` bytes at `base`, from this session's file,
/// if there is one and all of it holds here.
pub(crate) fn load(
    base: u64,
    len: u64,
    bytes: &dyn Fn(u64, usize) -> Vec<u8>,
) -> Option<Vec<SysSite>> {
    let p = path(len, "")?;
    // O_RDONLY | O_NOFOLLOW | O_CLOEXEC
    let data = sys::read_file_raw(&p, 0o400000 | 0o2000000)?;
    let sites = decode(std::str::from_utf8(&data).ok()?, base, len)?;
    sites.iter().all(|s| holds(s, bytes)).then_some(sites)
}

/// Write `sites` for later processes (best effort: written under a name of
/// this process's, then renamed into place, so readers see whole files).
pub(crate) fn store(base: u64, len: u64, sites: &[SysSite]) {
    let (Some(tmp), Some(fin)) = (path(len, &format!(".{}", sys::getpid())), path(len, "")) else {
        return;
    };
    let text = encode(base, len, sites);
    // WRONLY CREAT EXCL TRUNC NOFOLLOW CLOEXEC, mode 0600
    let flags = 0o1 | 0o100 | 0o200 | 0o1000 | 0o400000 | 0o2000000;
    let Some(fd) = sys::openat_raw(&tmp, flags, 0o600) else {
        return;
    };
    sys::write_all(fd as i32, text.as_bytes());
    // SAFETY: our descriptor; then a rename of our own file.
    unsafe {
        sys::syscall3(sys::SYS_CLOSE, fd as usize, 0, 0);
        sys::syscall6(
            sys::SYS_RENAMEAT,
            sys::AT_FDCWD as usize,
            tmp.as_ptr() as usize,
            sys::AT_FDCWD as usize,
            fin.as_ptr() as usize,
            0,
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    fn text() -> Vec<u8> {
        let mut t = vec![0x90u8; 64];
        t[10..15].copy_from_slice(&[0xb8, 0x02, 0, 0, 0]); // mov eax, 2
        t[15..17].copy_from_slice(&[0x0f, 0x05]); //          syscall
        t[30..32].copy_from_slice(&[0x0f, 0x05]); //          syscall (number unknown)
        t
    }

    fn sites() -> Vec<SysSite> {
        vec![
            SysSite {
                syscall: BASE + 15,
                nr: Some(2),
                patch: Some((BASE + 10, 5)),
            },
            SysSite {
                syscall: BASE + 30,
                nr: None,
                patch: None,
            },
        ]
    }

    #[test]
    fn sites_round_trip_at_another_base() {
        let t = encode(BASE, 64, &sites());
        assert_eq!(decode(&t, BASE, 64).unwrap(), sites());
        let other = decode(&t, 0x1000, 64).unwrap();
        assert_eq!(other[0].syscall, 0x1000 + 15);
        assert_eq!(other[0].patch, Some((0x1000 + 10, 5)));
        assert!(decode(&t, BASE, 65).is_none(), "another text length");
        assert!(
            decode(&t.replace(" 2\n", " 3\n"), BASE, 64).is_none(),
            "count"
        );
    }

    #[test]
    fn only_sites_this_text_holds_are_trusted() {
        let t = text();
        let bytes = |a: u64, n: usize| t[(a - BASE) as usize..(a - BASE) as usize + n].to_vec();
        for s in sites() {
            assert!(holds(&s, &bytes), "{s:?}");
        }
        let mut wrong_nr = sites()[0].clone();
        wrong_nr.nr = Some(3);
        assert!(!holds(&wrong_nr, &bytes));
        let mut moved = sites()[1].clone();
        moved.syscall += 1;
        assert!(!holds(&moved, &bytes));
        let mut not_mov = sites()[0].clone();
        not_mov.patch = Some((BASE + 11, 5));
        assert!(!holds(&not_mov, &bytes));
    }
}
