//! A refusing socket file at php-fpm's socket path while a site sleeps.
//!
//! In nginx's direct mode php-fpm's socket is tried first and the waker's is
//! the backup. nginx logs the failed connect by its errno
//! (`ngx_event_connect_peer`): `ECONNREFUSED` at `error`, but `ENOENT` (no
//! file) at `crit`, which pages whoever alerts on `crit`. php-fpm removes its
//! socket file when it stops, so a sleeping site has none. A socket file that
//! is bound but never listened on refuses every connect with
//! `ECONNREFUSED`, so [`ensure`] leaves one there.
//!
//! php-fpm replaces it when it starts: it unlinks whatever is at its listen
//! path (after checking that nothing answers there) and binds anew. The
//! runtime directory belongs to the container, so nothing here follows,
//! removes or replaces anything in it: `bind(2)` never follows a symlink and
//! fails with `EADDRINUSE` if anything at all exists at the path, and that
//! entry is then left alone.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};

/// The placeholder's mode: any nginx worker may try it (and be refused); a
/// socket file it may not write would fail with `EACCES`, logged at `crit`.
const MODE: u32 = 0o666;

/// What [`ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new refusing socket file is at the path.
    Created,
    /// Something was already there (php-fpm's socket, a stale one, or
    /// anything else); it was left as it was.
    Exists,
}

/// The placeholder could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot leave a refusing placeholder socket at {path}")]
pub struct PlaceholderError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Makes `path` a socket file that refuses connections, unless something
/// exists there already.
pub fn ensure(path: &Path) -> Result<Placed, PlaceholderError> {
    let fail = |source: std::io::Error| PlaceholderError {
        path: path.to_owned(),
        source,
    };
    let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
    let addr = UnixAddr::new(path).map_err(|e| fail(errno(e)))?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail(errno(e)))?;
    match bind(sock.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::EADDRINUSE) => return Ok(Placed::Exists),
        Err(e) => return Err(fail(errno(e))),
    }
    // Never listen(): a connect that succeeded into a backlog nobody
    // accepts would be reset after nginx sent the request, which nginx does
    // not retry for a POST. Bound and closed, the file refuses at connect.
    drop(sock);
    // bind() honours the umask (the reaper's unit has 0077). chmod by the
    // descriptor of what is at the path now, opened without following a
    // symlink, and only if it is a socket: if the container swapped the
    // entry in the meantime, no file outside its directory is changed.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if meta.file_type().is_socket() {
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(MODE)).map_err(fail)?;
    }
    Ok(Placed::Created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_placeholder_refuses_and_keeps_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("php-fpm.sock");
        assert_eq!(ensure(&path).expect("made"), Placed::Created);
        let meta = std::fs::symlink_metadata(&path).expect("a file is there");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, MODE);
        let err = UnixStream::connect(&path).expect_err("nothing listens");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        // Twice: the second call finds it and leaves it.
        assert_eq!(ensure(&path).expect("found"), Placed::Exists);
    }

    #[test]
    fn anything_already_there_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A live socket (php-fpm's) keeps answering.
        let live = dir.path().join("live.sock");
        let listener = UnixListener::bind(&live).expect("bind");
        assert_eq!(ensure(&live).expect("found"), Placed::Exists);
        UnixStream::connect(&live).expect("still answers");
        drop(listener);
        // A symlink planted by a container is neither followed nor replaced,
        // dangling or not.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("write");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(ensure(&link).expect("found"), Placed::Exists);
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        let dangling = dir.path().join("dangling.sock");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        assert_eq!(ensure(&dangling).expect("found"), Placed::Exists);
        assert!(!dir.path().join("nowhere").exists());
        // A regular file stays a regular file.
        let file = dir.path().join("file.sock");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(ensure(&file).expect("found"), Placed::Exists);
        assert!(std::fs::symlink_metadata(&file).expect("meta").is_file());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone").join("php-fpm.sock");
        let err = ensure(&path).expect_err("no directory");
        assert!(err.to_string().contains("gone/php-fpm.sock"), "{err}");
    }
}
