//! Getting the listening socket: from systemd (socket activation) or by
//! binding one ourselves (`--listen`).
//!
//! systemd passes sockets as fds 3, 4, … and describes them in three
//! environment variables (sd_listen_fds(3)): `LISTEN_PID` (the process meant
//! to take them), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (optional,
//! colon-separated names). [`parse_listen_env`] interprets them without any
//! I/O; [`take_listener`] does the checks on the descriptor itself.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr, bind,
    getsockname, getsockopt, listen, socket, sockopt,
};

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// The environment variables of the protocol.
const ENV_PID: &str = "LISTEN_PID";
const ENV_FDS: &str = "LISTEN_FDS";
const ENV_FDNAMES: &str = "LISTEN_FDNAMES";

/// Most fds we believe systemd could pass (a sanity bound on `LISTEN_FDS`).
const MAX_FDS: u32 = 4096;

/// Why no usable listening socket was handed over.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "no listening socket was passed (LISTEN_FDS is not set) and no --listen path was given"
    )]
    NotPassed,
    #[error("{var}={value:?} is not a number")]
    NotNumber { var: &'static str, value: String },
    #[error("LISTEN_PID={listen_pid} is not this process ({my_pid}): the sockets are not for us")]
    WrongPid { listen_pid: u32, my_pid: u32 },
    #[error("LISTEN_FDS={count}: expected exactly one socket")]
    BadCount { count: u32 },
    #[error("LISTEN_FDNAMES has {names} names for {fds} sockets")]
    NamesMismatch { names: usize, fds: usize },
    #[error("the listening socket can be taken only once per process")]
    AlreadyTaken,
    #[error("passed fd {fd} is not {expected}")]
    NotListening { fd: RawFd, expected: &'static str },
    #[error("cannot inspect passed fd {fd}")]
    Inspect {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
    #[error("{path} is in use: something accepts connections on it")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotSocket { path: PathBuf },
    #[error("cannot bind a unix socket at {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One passed socket: its fd and optional name.
pub type PassedFd = (RawFd, Option<String>);

/// Interprets the sd_listen_fds variables. `Ok(empty)` is impossible: with
/// nothing passed the answer is [`ListenError::NotPassed`]. Pure: no I/O.
pub fn parse_listen_env(
    pid_var: Option<&str>,
    fds_var: Option<&str>,
    names_var: Option<&str>,
    my_pid: u32,
) -> Result<Vec<PassedFd>, ListenError> {
    let (Some(pid), Some(fds)) = (pid_var, fds_var) else {
        return Err(ListenError::NotPassed);
    };
    let num = |var: &'static str, value: &str| -> Result<u32, ListenError> {
        let v = value.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ListenError::NotNumber {
                var,
                value: value.to_owned(),
            });
        }
        v.parse::<u32>().map_err(|_| ListenError::NotNumber {
            var,
            value: value.to_owned(),
        })
    };
    let listen_pid = num(ENV_PID, pid)?;
    if listen_pid != my_pid {
        return Err(ListenError::WrongPid { listen_pid, my_pid });
    }
    let count = num(ENV_FDS, fds)?;
    if count == 0 || count > MAX_FDS {
        return Err(ListenError::BadCount { count });
    }
    let n = count as usize;
    let names: Vec<Option<String>> = match names_var {
        None | Some("") if n == 1 => vec![None],
        None => vec![None; n],
        Some(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() != n {
                return Err(ListenError::NamesMismatch {
                    names: parts.len(),
                    fds: n,
                });
            }
            parts
                .into_iter()
                .map(|p| (!p.is_empty()).then(|| p.to_owned()))
                .collect()
        }
    };
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (LISTEN_FDS_START + i as RawFd, name))
        .collect())
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the socket systemd passed: parses the environment, checks that fd 3
/// is a listening `SOCK_STREAM` `AF_UNIX` socket, makes it close-on-exec and
/// non-blocking, and removes the three variables so children never see them.
///
/// Exactly one socket is accepted (the waker serves one site).
///
/// # Safety
///
/// Must be called while the process has a single thread (before any runtime
/// starts): it modifies the environment, which is unsound with concurrent
/// readers. Nothing else in the process may own fd 3; this function takes
/// ownership of it (a second call fails with [`ListenError::AlreadyTaken`]).
pub unsafe fn take_listener() -> Result<UnixListener, ListenError> {
    let var = |k| std::env::var(k).ok();
    let fds = parse_listen_env(
        var(ENV_PID).as_deref(),
        var(ENV_FDS).as_deref(),
        var(ENV_FDNAMES).as_deref(),
        std::process::id(),
    );
    // SAFETY: the caller guarantees no other thread runs, so nobody reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var(ENV_PID);
        std::env::remove_var(ENV_FDS);
        std::env::remove_var(ENV_FDNAMES);
    }
    let fds = fds?;
    if fds.len() != 1 {
        return Err(ListenError::BadCount {
            count: fds.len() as u32,
        });
    }
    let fd = fds[0].0;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ListenError::AlreadyTaken);
    }
    let inspect = |source| ListenError::Inspect { fd, source };
    // Is fd 3 open at all? F_GETFD on a raw number is harmless.
    // SAFETY: fcntl(F_GETFD) only reads descriptor flags; an unused number
    // yields EBADF, which we report.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if rc < 0 {
        return Err(inspect(nix::Error::last()));
    }
    // SAFETY: fd is open (checked above), systemd handed it to this process
    // (LISTEN_PID matched), the caller promises nothing else owns it, and
    // TAKEN makes sure we wrap it only once; so this OwnedFd is its sole owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    check_listening_unix(&owned).map_err(|e| match e {
        Some(source) => inspect(source),
        None => ListenError::NotListening {
            fd,
            expected: "a listening SOCK_STREAM AF_UNIX socket",
        },
    })?;
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(inspect)?;
    let fl = fcntl(&owned, FcntlArg::F_GETFL).map_err(inspect)?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    fcntl(&owned, FcntlArg::F_SETFL(fl)).map_err(inspect)?;
    Ok(UnixListener::from(owned))
}

/// `Err(None)`: a socket, but not the right kind; `Err(Some)`: a syscall failed
/// (ENOTSOCK for a non-socket).
fn check_listening_unix(fd: &impl AsFd) -> Result<(), Option<nix::Error>> {
    let ty = getsockopt(fd, sockopt::SockType).map_err(Some)?;
    let accepting = getsockopt(fd, sockopt::AcceptConn).map_err(Some)?;
    let addr: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd()).map_err(Some)?;
    if ty != SockType::Stream || !accepting || addr.family() != Some(AddressFamily::Unix) {
        return Err(None);
    }
    Ok(())
}

/// Binds a listening unix socket at `path` with permissions `mode` (the
/// waker's `--listen`), close-on-exec and non-blocking. A socket file already
/// there is removed only when nothing accepts on it; anything else at the
/// path is left alone and reported.
pub fn bind_listener(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
    let bind_err = |source| ListenError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(ListenError::NotSocket {
                    path: path.to_owned(),
                });
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError::InUse {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let nerr = |e: nix::Error| bind_err(io::Error::from(e));
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(nerr)?;
    let addr = UnixAddr::new(path).map_err(nerr)?;
    bind(fd.as_raw_fd(), &addr).map_err(nerr)?;
    // Permissions before listen(): no client can connect in between.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    listen(&fd, Backlog::MAXCONN).map_err(nerr)?;
    Ok(UnixListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
    ) -> Result<Vec<PassedFd>, ListenError> {
        parse_listen_env(pid, fds, names, 100)
    }

    #[test]
    fn parses_good_env() {
        assert_eq!(
            p(Some("100"), Some("1"), None).expect("ok"),
            vec![(3, None)]
        );
        assert_eq!(
            p(Some("100"), Some("1"), Some("")).expect("ok"),
            vec![(3, None)]
        );
        assert_eq!(
            p(Some("100"), Some("2"), Some("web:")).expect("ok"),
            vec![(3, Some("web".into())), (4, None)]
        );
        assert_eq!(
            p(Some("100"), Some("2"), None).expect("ok"),
            vec![(3, None), (4, None)]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(p(None, None, None), Err(ListenError::NotPassed)));
        assert!(matches!(
            p(Some("100"), None, None),
            Err(ListenError::NotPassed)
        ));
        assert!(matches!(
            p(None, Some("1"), None),
            Err(ListenError::NotPassed)
        ));
        for bad in [
            "",
            "abc",
            "1x",
            "-1",
            "+1",
            "1.0",
            " ",
            "99999999999999999999",
        ] {
            assert!(
                matches!(
                    p(Some(bad), Some("1"), None),
                    Err(ListenError::NotNumber { var: ENV_PID, .. })
                ),
                "pid {bad:?}"
            );
            assert!(
                matches!(
                    p(Some("100"), Some(bad), None),
                    Err(ListenError::NotNumber { var: ENV_FDS, .. })
                ),
                "fds {bad:?}"
            );
        }
        assert!(matches!(
            p(Some("101"), Some("1"), None),
            Err(ListenError::WrongPid {
                listen_pid: 101,
                my_pid: 100
            })
        ));
        assert!(matches!(
            p(Some("100"), Some("0"), None),
            Err(ListenError::BadCount { count: 0 })
        ));
        assert!(matches!(
            p(Some("100"), Some("4000000"), None),
            Err(ListenError::BadCount { .. })
        ));
        assert!(matches!(
            p(Some("100"), Some("1"), Some("a:b")),
            Err(ListenError::NamesMismatch { names: 2, fds: 1 })
        ));
        assert!(matches!(
            p(Some("100"), Some("3"), Some("a")),
            Err(ListenError::NamesMismatch { names: 1, fds: 3 })
        ));
        let msg = p(Some("101"), Some("1"), None)
            .expect_err("wrong pid")
            .to_string();
        assert!(msg.contains("LISTEN_PID=101"), "{msg}");
    }

    #[test]
    fn checks_socket_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.sock");
        let l = UnixListener::bind(&path).expect("bind");
        assert!(check_listening_unix(&l).is_ok());
        let s = UnixStream::connect(&path).expect("connect");
        assert!(matches!(check_listening_unix(&s), Err(None)));
        let f = std::fs::File::open(dir.path()).expect("open dir");
        assert!(matches!(check_listening_unix(&f), Err(Some(_))));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        assert!(matches!(check_listening_unix(&tcp), Err(None)));
    }

    #[test]
    fn bind_replaces_only_dead_sockets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.sock");
        let l = bind_listener(&path, 0o660).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: refused.
        assert!(matches!(
            bind_listener(&path, 0o660),
            Err(ListenError::InUse { .. })
        ));
        drop(l);
        // Stale: replaced.
        let _l2 = bind_listener(&path, 0o660).expect("rebind over stale");
        UnixStream::connect(&path).expect("accepts");
        // Not a socket: left alone.
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").expect("write");
        assert!(matches!(
            bind_listener(&file, 0o660),
            Err(ListenError::NotSocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep");
    }
}
