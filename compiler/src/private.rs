//! Files ptap gives its targets (the runtime, the probe module, the attach
//! parameters of `-x`), created so that no other user can read, replace or
//! pre-create them, whatever the umask:
//!
//! - one new directory per session with an unpredictable name
//!   (`mkdtemp`, mode 0700; 0711 for `-x`, whose process may run as another
//!   user and must open the files by name), under `$XDG_RUNTIME_DIR` when
//!   it is a private directory of ptap's user, else under the temporary
//!   directory (`$TMPDIR`, `/tmp`);
//! - files created with `O_CREAT | O_EXCL | O_NOFOLLOW` and their mode set
//!   with `fchmod` (0600; 0644 for `-x`);
//! - the directory is removed when ptap ends (also after a detach: the
//!   processes have mapped what they loaded, and a mapping survives the
//!   file's removal).

use anyhow::{anyhow, Context};
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A session's private directory, removed (with its files) on drop.
pub(crate) struct PrivateDir {
    pub(crate) path: PathBuf,
    /// `-x`: the files must be readable by the process's user.
    shared: bool,
}

/// `$XDG_RUNTIME_DIR` if it is a directory of ours that nobody else may
/// write to.
fn runtime_dir() -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    let m = std::fs::symlink_metadata(&d).ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    (d.is_absolute() && m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0).then_some(d)
}

impl PrivateDir {
    /// A new directory for one session; `shared` for `-x` (see the module docs).
    pub(crate) fn new(shared: bool) -> anyhow::Result<PrivateDir> {
        let base = match runtime_dir() {
            Some(d) if !shared => d,
            _ => std::env::temp_dir(),
        };
        let template = base.join("ptap-XXXXXX");
        let mut buf = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| anyhow!("the temporary directory {} has a NUL byte", base.display()))?
            .into_bytes_with_nul();
        // SAFETY: buf is a NUL-terminated template ending in XXXXXX; mkdtemp
        // fills the X's in place and creates the directory with mode 0700.
        let p = unsafe { libc::mkdtemp(buf.as_mut_ptr() as *mut libc::c_char) };
        if p.is_null() {
            let e = std::io::Error::last_os_error();
            return Err(anyhow!(
                "cannot create a private directory in {}: {e} (set TMPDIR to a directory where ptap may create one)",
                base.display()
            ));
        }
        buf.pop();
        let path = PathBuf::from(OsStr::from_bytes(&buf));
        let dir = PrivateDir { path, shared };
        // mkdtemp's 0700 is exact (the umask only removes bits); -x needs
        // the other user to reach files it is told the names of.
        let mode = if shared { 0o711 } else { 0o700 };
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", dir.path.display()))?;
        Ok(dir)
    }

    fn file_mode(&self) -> u32 {
        if self.shared {
            0o644
        } else {
            0o600
        }
    }

    /// Create the new file `name` holding `data` (fails if anything has
    /// that name already; never follows a symbolic link).
    pub(crate) fn write(&self, name: &str, data: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        write_new(&path, data, self.file_mode())?;
        Ok(path)
    }

    /// `name` as a copy of the file `src` (a hard link when possible).
    pub(crate) fn copy_in(&self, name: &str, src: &Path) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        if std::fs::hard_link(src, &path).is_ok() {
            return Ok(path);
        }
        let data = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
        write_new(&path, &data, self.file_mode())?;
        Ok(path)
    }
}

/// Create `path` (O_EXCL | O_NOFOLLOW) with exactly `mode`, holding `data`.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(data))
        .with_context(|| format!("cannot write {}", path.display()))
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_whatever_the_umask_and_removed_on_drop() {
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let d = PrivateDir::new(false).unwrap();
        let f = d.write("a", b"x").unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d.path), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert!(d.write("a", b"y").is_err(), "never replaces a file");
        std::os::unix::fs::symlink("/etc/passwd", d.path.join("l")).unwrap();
        assert!(d.write("l", b"y").is_err(), "never follows a link");
        let p = d.path.clone();
        drop(d);
        assert!(!p.exists());
    }
}
