//! php-fpm's socket, verified rather than followed.
//!
//! php-fpm's socket lives in the site's runtime directory, which is
//! bind-mounted read-write into the site's container: the container (its
//! owner, or whoever broke into its PHP) decides what that name is. A root
//! process that connects to whatever the name resolves to relays a tenant's
//! bytes to Docker's API, systemd's bus or another site's php-fpm. So a
//! connect here:
//!
//! 1. opens the name itself with `O_PATH | O_NOFOLLOW` (a symlink is opened as
//!    the link and refused, never followed) and checks with `fstat` that it is
//!    a socket, and not the caller's own listening socket (a hard link of
//!    `vhost-waker.sock` would make the waker connect to itself);
//! 2. connects through `/proc/self/fd/N`, which reaches exactly the inode
//!    just checked, whatever the name points to by then;
//! 3. reports the listening process (`SO_PEERCRED`) and the listener's bound
//!    address, so the caller can check that it belongs to the site's own
//!    container ([`cgroup_names_container`]) before a byte is relayed.
//!
//! Only the last path component is the container's: the runtime directory
//! itself is a mount point in the container and lives in a root-owned
//! directory on the host.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::stat::{Mode, SFlag};

/// Identity of a file: the same (device, inode) is the same socket for as
/// long as it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file at `path`, without following a final symlink.
    pub fn of_path(path: &Path) -> io::Result<FileId> {
        let st = nix::sys::stat::lstat(path)?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// What is at the upstream path instead of a socket, in words a sysadmin
/// knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Symlink,
    Fifo,
    Regular,
    Directory,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    fn of(mode: u32) -> Option<FileKind> {
        let fmt = SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits());
        Some(match fmt {
            SFlag::S_IFSOCK => return None,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFREG => FileKind::Regular,
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Other,
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Symlink => "a symlink (never followed)",
            FileKind::Fifo => "a FIFO",
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "not a socket",
        })
    }
}

/// Why an upstream was refused. No byte is relayed to a refused upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Something other than a socket is at the path.
    NotSocket(FileKind),
    /// The path is the caller's own listening socket (a hard link, or the
    /// same name): connecting would loop.
    OwnSocket,
    /// The listening process is not in the site's container.
    ForeignPeer { pid: i32, cgroup: String },
    /// The listening process cannot be seen from this PID namespace, so its
    /// container cannot be checked.
    PeerInvisible,
    /// The listening process's cgroup could not be read.
    PeerUnreadable { pid: i32, error: String },
    /// Docker could not say which container is the site's (unreachable,
    /// an error, or no answer in time).
    NoContainerId { error: String },
}

impl Refusal {
    /// True for a refusal that says nothing about the file or its listener
    /// (Docker could not be asked): it must not be remembered against the
    /// socket file, or a short Docker outage would refuse a healthy php-fpm
    /// until the waker exits.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Refusal::NoContainerId { .. })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotSocket(kind) => write!(f, "it is {kind}, not a socket"),
            Refusal::OwnSocket => f.write_str("it is the waker's own listening socket"),
            Refusal::ForeignPeer { pid, cgroup } => write!(
                f,
                "its listener (pid {pid}, cgroup {cgroup}) is not in the site's container"
            ),
            Refusal::PeerInvisible => f.write_str(
                "its listener is not visible from this PID namespace, so its container cannot be checked (see --peer-check)",
            ),
            Refusal::PeerUnreadable { pid, error } => {
                write!(f, "the cgroup of its listener (pid {pid}) cannot be read: {error}")
            }
            Refusal::NoContainerId { error } => {
                write!(f, "Docker cannot tell the container's id: {error}")
            }
        }
    }
}

/// A connection to a socket that passed the file checks.
#[derive(Debug)]
pub struct Connected {
    pub stream: UnixStream,
    /// The socket file connected to.
    pub file: FileId,
    /// The listening process as seen from here; 0 when it is not visible
    /// from this PID namespace.
    pub pid: i32,
}

/// How a connect to the upstream path went.
#[derive(Debug)]
pub enum Outcome {
    Connected(Connected),
    /// Nothing at the path.
    Absent,
    /// A socket file nobody listens on (in any network namespace: a
    /// path-bound socket is found by its inode).
    Refused,
    /// The listener's backlog is full.
    Busy,
    /// Something is there that must not be connected to.
    Rejected {
        file: Option<FileId>,
        why: Refusal,
    },
    Failed(io::Error),
}

/// Connects to the unix socket at `path` without following a symlink and
/// only when it is a socket other than `own` (the caller's listening
/// socket file). Non-blocking, and returns at once: a unix `connect`
/// completes or fails with EAGAIN (backlog full) immediately.
/// `refused` short-cuts a file already refused: it is not connected to
/// again.
pub fn connect(path: &Path, own: Option<FileId>, refused: Option<(FileId, &Refusal)>) -> Outcome {
    let opath = match nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Outcome::Absent,
        Err(e) => return Outcome::Failed(e.into()),
    };
    let st = match nix::sys::stat::fstat(&opath) {
        Ok(st) => st,
        Err(e) => return Outcome::Failed(e.into()),
    };
    let file = FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    };
    if let Some(kind) = FileKind::of(st.st_mode) {
        return Outcome::Rejected {
            file: Some(file),
            why: Refusal::NotSocket(kind),
        };
    }
    if own == Some(file) {
        return Outcome::Rejected {
            file: Some(file),
            why: Refusal::OwnSocket,
        };
    }
    if let Some((id, why)) = refused
        && id == file
    {
        return Outcome::Rejected {
            file: Some(file),
            why: why.clone(),
        };
    }
    match connect_fd(&opath) {
        Ok(stream) => {
            let pid = nix::sys::socket::getsockopt(&stream, sockopt::PeerCredentials)
                .map(|c| c.pid())
                .unwrap_or(0);
            Outcome::Connected(Connected { stream, file, pid })
        }
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Outcome::Refused,
            io::ErrorKind::WouldBlock => Outcome::Busy,
            // The file was opened above, so only a missing /proc explains
            // this.
            io::ErrorKind::NotFound => Outcome::Failed(io::Error::other(
                "cannot connect through /proc/self/fd (is /proc mounted?)",
            )),
            _ => Outcome::Failed(e),
        },
    }
}

/// Connects a non-blocking stream socket to the socket inode `opath`
/// refers to, through its `/proc/self/fd` entry.
fn connect_fd(opath: &OwnedFd) -> io::Result<UnixStream> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let via = format!("/proc/self/fd/{}", opath.as_raw_fd());
    nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(via.as_str())?)?;
    Ok(UnixStream::from(fd))
}

/// The bound address of the listener `stream` is connected to, as the
/// listener bound it (for comparing with one's own listening socket).
pub fn peer_path(stream: &UnixStream) -> Option<std::path::PathBuf> {
    stream
        .peer_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
}

/// True when `/proc/<pid>/cgroup` text places the process in the container
/// with id `id` (64 hex digits): a path component that is the id itself
/// (cgroupfs driver: `/docker/<id>`) or `<prefix>-<id>.scope` (systemd
/// driver: `docker-<id>.scope`, podman's `libpod-<id>.scope`). An id that is
/// not 64 hex digits never matches.
pub fn cgroup_names_container(proc_cgroup: &str, id: &str) -> bool {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let scope = format!("-{id}.scope");
    proc_cgroup.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path.split('/').any(|c| c == id || c.ends_with(&scope))
    })
}

/// Liveness of a socket file, for deciding whether removing it is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Absent,
    /// Something other than a socket; never removed.
    NotSocket(FileKind),
    /// A process accepts on it (or its backlog is full).
    Listening,
    /// Nobody listens on it anywhere: safe to remove.
    Dead,
    /// Cannot tell; keep it.
    Unknown(String),
}

/// Finds out whether anything listens on the socket at `path` by
/// connecting to it (without following a symlink) and closing at once.
/// Unlike the kernel's `/proc/net/unix`, this sees listeners in every
/// network namespace, such as php-fpm inside a container. Only for
/// sockets whose listener does nothing on a bare connect (php-fpm):
/// connecting to a socket-activated waker would start a wake.
pub fn probe(path: &Path) -> Liveness {
    match connect(path, None, None) {
        Outcome::Absent => Liveness::Absent,
        Outcome::Refused => Liveness::Dead,
        Outcome::Connected(_) | Outcome::Busy => Liveness::Listening,
        Outcome::Rejected {
            why: Refusal::NotSocket(kind),
            ..
        } => Liveness::NotSocket(kind),
        Outcome::Rejected { why, .. } => Liveness::Unknown(why.to_string()),
        Outcome::Failed(e) => Liveness::Unknown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn cgroup_matches_docker_layouts() {
        let v1 = format!("12:freezer:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n0::/\n");
        assert!(cgroup_names_container(&v1, ID));
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert!(cgroup_names_container(&v2, ID));
        // Another container, the host, a prefix or suffix of the id, garbage.
        let other = ID.replace('0', "f");
        assert!(!cgroup_names_container(&v1, &other));
        assert!(!cgroup_names_container(
            "0::/init.scope\n1:name=systemd:/\n",
            ID
        ));
        assert!(!cgroup_names_container(&format!("0::/docker/{ID}x\n"), ID));
        assert!(!cgroup_names_container(&format!("0::/docker/x{ID}\n"), ID));
        assert!(!cgroup_names_container(&v1, &ID[..63]));
        assert!(!cgroup_names_container(&v1, ""));
        assert!(!cgroup_names_container("garbage", ID));
    }

    #[test]
    fn refuses_everything_but_a_socket_and_connects_to_a_real_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let sock = d.join("real.sock");
        let _l = UnixListener::bind(&sock).expect("bind");

        // A real socket: connected, peer is this process.
        match connect(&sock, None, None) {
            Outcome::Connected(c) => {
                assert_eq!(c.pid, std::process::id() as i32);
                assert_eq!(c.file, FileId::of_path(&sock).expect("id"));
                assert_eq!(peer_path(&c.stream).as_deref(), Some(sock.as_path()));
            }
            other => panic!("{other:?}"),
        }
        // The same socket through a symlink: refused, never connected.
        let link = d.join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).expect("symlink");
        assert!(matches!(
            connect(&link, None, None),
            Outcome::Rejected {
                why: Refusal::NotSocket(FileKind::Symlink),
                ..
            }
        ));
        let dangling = d.join("dangling.sock");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).expect("symlink");
        assert!(matches!(
            connect(&dangling, None, None),
            Outcome::Rejected {
                why: Refusal::NotSocket(FileKind::Symlink),
                ..
            }
        ));
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        assert!(matches!(
            connect(&fifo, None, None),
            Outcome::Rejected {
                why: Refusal::NotSocket(FileKind::Fifo),
                ..
            }
        ));
        let file = d.join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            connect(&file, None, None),
            Outcome::Rejected {
                why: Refusal::NotSocket(FileKind::Regular),
                ..
            }
        ));
        assert!(matches!(
            connect(d, None, None),
            Outcome::Rejected {
                why: Refusal::NotSocket(FileKind::Directory),
                ..
            }
        ));
        assert!(matches!(
            connect(&d.join("absent"), None, None),
            Outcome::Absent
        ));
        // A hard link of one's own socket is one's own socket.
        let hard = d.join("hard.sock");
        std::fs::hard_link(&sock, &hard).expect("link");
        let own = FileId::of_path(&sock).expect("id");
        assert!(matches!(
            connect(&hard, Some(own), None),
            Outcome::Rejected {
                why: Refusal::OwnSocket,
                ..
            }
        ));
        // A file refused before is not connected to again.
        let why = Refusal::PeerInvisible;
        assert!(matches!(
            connect(&sock, None, Some((own, &why))),
            Outcome::Rejected {
                why: Refusal::PeerInvisible,
                ..
            }
        ));
        // A stale socket file refuses.
        let stale = d.join("stale.sock");
        drop(UnixListener::bind(&stale).expect("bind"));
        assert!(matches!(connect(&stale, None, None), Outcome::Refused));

        assert_eq!(probe(&sock), Liveness::Listening);
        assert_eq!(probe(&stale), Liveness::Dead);
        assert_eq!(probe(&d.join("absent")), Liveness::Absent);
        assert_eq!(probe(&link), Liveness::NotSocket(FileKind::Symlink));
        assert_eq!(probe(&fifo), Liveness::NotSocket(FileKind::Fifo));
    }
}
