//! sd_notify(3): telling systemd we are ready, what we are doing, and that
//! we are stopping. A datagram to `NOTIFY_SOCKET` (a path, or an abstract
//! name written `@name`). Without `NOTIFY_SOCKET` every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    Path(PathBuf),
    /// Abstract name, without the leading `@` / NUL.
    Abstract(Vec<u8>),
}

/// A `NOTIFY_SOCKET` value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyAddrError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an abstract '@name'")]
    Unsupported(String),
    #[error("NOTIFY_SOCKET {0:?} is too long for a unix socket address")]
    TooLong(String),
}

/// Longest `sun_path` (108 bytes including the terminating NUL for paths).
const SUN_PATH_MAX: usize = 108;

/// Parses a `NOTIFY_SOCKET` value. `Ok(None)` when it is unset or empty.
pub fn parse_notify_addr(value: Option<&str>) -> Result<Option<NotifyAddr>, NotifyAddrError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Some(name) = v.strip_prefix('@') {
        if name.len() + 1 > SUN_PATH_MAX {
            return Err(NotifyAddrError::TooLong(v.to_owned()));
        }
        return Ok(Some(NotifyAddr::Abstract(name.as_bytes().to_vec())));
    }
    if v.starts_with('/') {
        if v.len() + 1 > SUN_PATH_MAX || v.contains('\0') {
            return Err(NotifyAddrError::TooLong(v.to_owned()));
        }
        return Ok(Some(NotifyAddr::Path(PathBuf::from(v))));
    }
    // vsock:… and relative paths are not used by the units we ship.
    Err(NotifyAddrError::Unsupported(v.to_owned()))
}

/// A connection to systemd's notification socket (or nothing).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`. An unusable value is logged and ignored: failing
    /// to talk to systemd must never stop the service.
    pub fn from_env() -> Self {
        let value = std::env::var("NOTIFY_SOCKET").ok();
        match parse_notify_addr(value.as_deref()) {
            Ok(Some(addr)) => match Self::to(&addr) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up sd_notify; not notifying");
                    Self::none()
                }
            },
            Ok(None) => Self::none(),
            Err(e) => {
                tracing::warn!(error = %e, "not notifying");
                Self::none()
            }
        }
    }

    /// A notifier that does nothing.
    pub fn none() -> Self {
        Notifier { target: None }
    }

    /// A notifier sending to `addr`.
    pub fn to(addr: &NotifyAddr) -> io::Result<Self> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        let sa = match addr {
            NotifyAddr::Path(p) => SocketAddr::from_pathname(p)?,
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        Ok(Notifier {
            target: Some((sock, sa)),
        })
    }

    /// Sends raw `KEY=value` lines. Errors are returned for callers that care;
    /// most log and carry on.
    pub fn send(&self, msg: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(msg.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// `READY=1` with a status line. systemd stops a unit whose `READY=1`
    /// never arrives, and PID 1's queue may be full for a moment when many
    /// units start at once (the socket is non-blocking): a full queue is
    /// tried again for up to [`READY_RETRY`], blocking the caller meanwhile.
    pub fn ready(&self, status: &str) {
        let msg = format!("READY=1\nSTATUS={}", one_line(status));
        let deadline = std::time::Instant::now() + READY_RETRY;
        let mut sent = self.send(&msg);
        while sent
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            sent = self.send(&msg);
        }
        if let Err(e) = sent {
            tracing::warn!(error = %e, "sd_notify READY=1 failed; systemd may time out the start");
        }
    }

    /// `STATUS=…`, what `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.log(self.send(&format!("STATUS={}", one_line(status))));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.log(self.send("STOPPING=1\nSTATUS=stopping"));
    }

    fn log(&self, r: io::Result<()>) {
        if let Err(e) = r {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// How long [`Notifier::ready`] retries while PID 1's queue is full.
pub const READY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(parse_notify_addr(None), Ok(None));
        assert_eq!(parse_notify_addr(Some("")), Ok(None));
        assert_eq!(
            parse_notify_addr(Some("/run/systemd/notify")),
            Ok(Some(NotifyAddr::Path("/run/systemd/notify".into())))
        );
        assert_eq!(
            parse_notify_addr(Some("@/org/x/notify")),
            Ok(Some(NotifyAddr::Abstract(b"/org/x/notify".to_vec())))
        );
        assert!(matches!(
            parse_notify_addr(Some("relative/path")),
            Err(NotifyAddrError::Unsupported(_))
        ));
        assert!(matches!(
            parse_notify_addr(Some("vsock:2:1234")),
            Err(NotifyAddrError::Unsupported(_))
        ));
        let long = format!("/{}", "a".repeat(200));
        assert!(matches!(
            parse_notify_addr(Some(&long)),
            Err(NotifyAddrError::TooLong(_))
        ));
        let long_abs = format!("@{}", "a".repeat(200));
        assert!(matches!(
            parse_notify_addr(Some(&long_abs)),
            Err(NotifyAddrError::TooLong(_))
        ));
    }

    #[test]
    fn sends_to_path_and_abstract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&NotifyAddr::Path(path.clone())).expect("notifier");
        n.ready("asleep");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=asleep");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fleet-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx2 = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        let n2 = Notifier::to(&NotifyAddr::Abstract(name.into_bytes())).expect("notifier");
        n2.status("waking a\nb");
        let len = rx2.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STATUS=waking a b");

        let none = Notifier::none();
        assert!(none.target.is_none());
        none.send("READY=1").expect("no-op");
    }

    #[test]
    fn ready_waits_out_a_full_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&NotifyAddr::Path(path)).expect("notifier");
        let mut queued = 0;
        while n.send("STATUS=filler").is_ok() {
            queued += 1;
        }
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            rx.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            while got.len() <= queued {
                let Ok(len) = rx.recv(&mut buf) else { break };
                got.push(buf[..len].to_vec());
            }
            got
        });
        n.ready("up");
        let got = reader.join().expect("reader");
        assert_eq!(
            got.last().map(Vec::as_slice),
            Some(&b"READY=1\nSTATUS=up"[..])
        );
    }
}
