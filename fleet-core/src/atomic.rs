//! Replacing a small file atomically, without following a link: a temp file
//! created exclusively beside it (mode 0644, `O_NOFOLLOW`), then `rename`.
//! A reader sees the old or the new content, never a mix. Used for the
//! waker's state file and the reaper's metrics file. Also the one way
//! fleet opens (creating) its lock files: never through a link.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a file was not replaced.
#[derive(Debug)]
pub enum ReplaceError {
    /// A symlink is at the path; it is left alone.
    Symlink,
    /// Something other than a regular file is at the path; left alone.
    NotRegular,
    Io(std::io::Error),
}

/// Replaces the file at `path` with `bytes` (mode 0644 whatever the umask),
/// flushing the data first when `sync`.
pub fn replace(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ReplaceError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(ReplaceError::Symlink),
        Ok(m) if !m.is_file() => return Err(ReplaceError::NotRegular),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ReplaceError::Io(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // A leftover temp file of ours (a crash between create and rename)
        // would make create_new fail; remove_file does not follow symlinks.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)?;
        // A umask such as a unit's UMask=0077 would hide it from readers.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(ReplaceError::Io)
}

/// Opens the lock file at `path` read-write, creating it (mode 0600) when
/// missing, never through a symlink: the wake slots and the site locks.
pub fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}
