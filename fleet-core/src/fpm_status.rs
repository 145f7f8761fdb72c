//! php-fpm's own pool status page (`pm.status_path`), asked over its socket.
//!
//! A stock pool writes no access log, so the container's logs cannot tell
//! whether it served anyone; its status page can: `accepted conn` grows
//! with every connection php-fpm accepts, and `active processes` and
//! `listen queue` say whether anything is in progress or waiting.
//!
//! [`query`] sends one FastCGI `GET` of the status path over the site's
//! `php-fpm.sock` and [`parse`] reads php-fpm's plain-text answer. What to
//! know when reading the numbers:
//!
//! - The status request is itself one accepted connection and one active
//!   process while it is served: `accepted conn` counts it, and `active
//!   processes` includes it (an idle pool answers 1, not 0). Two queries
//!   with nothing else in between differ by exactly 1 in `accepted conn`.
//! - A worker is active until the client of its request closed the
//!   connection (php-fpm reads it to its end after the answer): for a
//!   moment after an answer, the previous query's worker included, `active
//!   processes` may count it, and a client that keeps its connection open
//!   keeps a worker active.
//! - Just after php-fpm starts, a worker still starting is in no count
//!   (`total processes` below `pm.max_children` for a moment).
//! - The page is served by a worker like any request: when every worker is
//!   busy the query waits in the listen queue behind the others and, with a
//!   short timeout, ends in [`StatusError::Timeout`].
//! - php-fpm measures `listen queue` only for a TCP listener (`TCP_INFO`;
//!   `fpm_pctl_perform_idle_server_maintenance` skips any other): on a unix
//!   socket it is always 0, even while connections wait to be accepted (PHP
//!   bug #80739, php-src issue #9943). It cannot tell "nothing queued".
//!
//! The socket's directory is the container's, so the connect goes through
//! [`crate::upstream::connect`] (the name opened `O_PATH|O_NOFOLLOW`,
//! checked to be a socket, connected through `/proc/self/fd`): a symlink
//! is refused, never followed. `SCRIPT_FILENAME` is the status path itself,
//! which has no `.php`: a pool without that status path answers 404 (or
//! 403 from `security.limit_extensions`) and never runs a tenant's file.
//! The peer may be hostile: the whole exchange is bounded by a timeout and
//! by [`RESPONSE_LIMIT`] bytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::fastcgi;
use crate::upstream::{self, Outcome};

/// The status path fleet asks for when none is configured.
pub const DEFAULT_STATUS_PATH: &str = "/status";

/// Most bytes read from php-fpm for one status page (its real answer is
/// about 500 bytes).
pub const RESPONSE_LIMIT: usize = 64 * 1024;

/// The pool's numbers fleet uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmStatus {
    pub pool: String,
    /// Connections accepted since php-fpm started (the status request's
    /// own included).
    pub accepted_conn: u64,
    /// Connections waiting to be accepted (always 0 on a unix socket, see
    /// the module notes).
    pub listen_queue: u64,
    pub idle_processes: u64,
    /// Workers serving a request (the status request's own included).
    pub active_processes: u64,
    pub total_processes: u64,
}

/// Why a status page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no {field:?} line")]
    Missing { field: &'static str },
    #[error("{field:?} is {value:?}, not a whole number that fits 64 bits")]
    Number { field: &'static str, value: String },
}

/// Why php-fpm's status could not be had. Every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The socket cannot be connected (absent, refusing, not a socket, a
    /// symlink, backlog full: `reason` says which).
    #[error("php-fpm status: cannot connect to {}: {reason}", path.display())]
    Connect { path: PathBuf, reason: String },
    #[error("php-fpm status: I/O on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("php-fpm status: no whole answer on {} within {after:?}", path.display())]
    Timeout { path: PathBuf, after: Duration },
    /// php-fpm answered, but not with its status page: the pool's
    /// `pm.status_path` is not `status_path`.
    #[error(
        "php-fpm status: {} answers {status_path} with {answer:?}, not a status page (is `pm.status_path = {status_path}` in the pool?)",
        path.display()
    )]
    NotEnabled {
        path: PathBuf,
        status_path: String,
        answer: String,
    },
    #[error("php-fpm status: {} sent a page that is not php-fpm's status", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    /// The answer broke FastCGI's framing or CGI's headers.
    #[error("php-fpm status: {} broke the protocol", path.display())]
    Protocol {
        path: PathBuf,
        #[source]
        source: fastcgi::DecodeError,
    },
    #[error("php-fpm status: {} sent more than {RESPONSE_LIMIT} bytes", path.display())]
    TooLarge { path: PathBuf },
}

impl StatusError {
    /// True when php-fpm answers but has no status page at that path.
    pub fn is_not_enabled(&self) -> bool {
        matches!(self, StatusError::NotEnabled { .. })
    }
}

/// Reads php-fpm's plain-text status page (the first occurrence of each
/// line counts; unknown lines are ignored).
pub fn parse(body: &str) -> Result<FpmStatus, ParseError> {
    let field = |name: &'static str| -> Result<&str, ParseError> {
        body.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim())
            .ok_or(ParseError::Missing { field: name })
    };
    let number = |name: &'static str| -> Result<u64, ParseError> {
        let value = field(name)?;
        value.parse().map_err(|_| ParseError::Number {
            field: name,
            // A hostile page's value is quoted in logs: keep it short.
            value: value.chars().take(64).collect(),
        })
    };
    Ok(FpmStatus {
        pool: field("pool")?.chars().take(256).collect(),
        accepted_conn: number("accepted conn")?,
        listen_queue: number("listen queue")?,
        idle_processes: number("idle processes")?,
        active_processes: number("active processes")?,
        total_processes: number("total processes")?,
    })
}

/// Asks php-fpm at `socket` (any path, e.g. a renamed
/// `php-fpm.sock.sleeping`) for its status page at `status_path`, all of
/// it within `timeout`.
pub async fn query(
    socket: &Path,
    status_path: &str,
    timeout: Duration,
) -> Result<FpmStatus, StatusError> {
    match tokio::time::timeout(timeout, exchange(socket, status_path)).await {
        Ok(r) => r,
        Err(_) => Err(StatusError::Timeout {
            path: socket.to_path_buf(),
            after: timeout,
        }),
    }
}

/// The FastCGI request [`query`] sends: a `GET` of `status_path` whose
/// `SCRIPT_FILENAME` is the status path itself (no `.php`).
pub fn encode_query(status_path: &str) -> Result<Vec<u8>, fastcgi::EncodeError> {
    let params = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", status_path),
        ("SCRIPT_FILENAME", status_path),
        ("REQUEST_URI", status_path),
        ("QUERY_STRING", ""),
        ("SERVER_SOFTWARE", "fleet"),
    ];
    fastcgi::encode_request(&params, &[], false)
}

async fn exchange(socket: &Path, status_path: &str) -> Result<FpmStatus, StatusError> {
    let path = || socket.to_path_buf();
    let io = |source| StatusError::Io {
        path: path(),
        source,
    };
    let connect = |reason: String| StatusError::Connect {
        path: path(),
        reason,
    };
    let stream = match upstream::connect(socket, None, None) {
        Outcome::Connected(c) => c.stream,
        Outcome::Absent => return Err(connect("nothing is there".into())),
        Outcome::Refused => return Err(connect("nobody listens on it".into())),
        Outcome::Busy => return Err(connect("its listen backlog is full".into())),
        Outcome::Rejected { why, .. } => return Err(connect(why.to_string())),
        Outcome::Failed(e) => return Err(connect(e.to_string())),
    };
    let mut stream = tokio::net::UnixStream::from_std(stream).map_err(io)?;
    let request = encode_query(status_path)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    stream.write_all(&request).await.map_err(io)?;

    let mut decoder = fastcgi::Decoder::new(RESPONSE_LIMIT);
    let mut buf = [0u8; 4096];
    let mut read = 0usize;
    while !decoder.is_done() {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        // Records of other requests are skipped by the decoder, not kept:
        // the bytes on the wire are bounded too.
        read += n;
        if read > RESPONSE_LIMIT {
            return Err(StatusError::TooLarge { path: path() });
        }
        decoder.feed(&buf[..n]).map_err(|e| match e {
            fastcgi::DecodeError::TooLarge { .. } => StatusError::TooLarge { path: path() },
            source => StatusError::Protocol {
                path: path(),
                source,
            },
        })?;
    }
    let protocol = |source| StatusError::Protocol {
        path: path(),
        source,
    };
    let response = decoder.finish().map_err(protocol)?;
    let cgi = response.cgi().map_err(protocol)?;
    let body = String::from_utf8_lossy(cgi.body);
    if cgi.status != 200 {
        let first = body.lines().next().unwrap_or("").trim();
        return Err(StatusError::NotEnabled {
            path: path(),
            status_path: status_path.to_string(),
            answer: format!("{} {first}", cgi.status)
                .trim_end()
                .chars()
                .take(200)
                .collect(),
        });
    }
    parse(&body).map_err(|source| StatusError::Malformed {
        path: path(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// php-fpm 8.2's answer to `GET /status` (Debian's php8.2-fpm, a static
    /// pool of 4, just after two requests).
    const PHP_FPM_82: &str = "pool:                 site
process manager:      static
start time:           30/Nov/2026:02:57:13 +0000
start since:          1
accepted conn:        3
listen queue:         0
max listen queue:     0
listen queue len:     0
idle processes:       3
active processes:     1
total processes:      4
max active processes: 1
max children reached: 0
slow requests:        0
";

    #[test]
    fn php_fpm_82_page_is_read() {
        assert_eq!(
            parse(PHP_FPM_82),
            Ok(FpmStatus {
                pool: "site".into(),
                accepted_conn: 3,
                listen_queue: 0,
                idle_processes: 3,
                active_processes: 1,
                total_processes: 4,
            })
        );
        // `?full` repeats per-process lines after the pool's: the first
        // occurrence (the pool's) counts.
        let full = format!(
            "{PHP_FPM_82}\n************************\npid:                  7\nstate:                Idle\nstart time:           30/Nov/2026:02:57:13 +0000\nrequests:             1\n"
        );
        assert_eq!(parse(&full).map(|s| s.accepted_conn), Ok(3));
    }

    #[test]
    fn missing_fields_and_garbage_are_named() {
        let without = PHP_FPM_82.replace("active processes:     1\n", "");
        assert_eq!(
            parse(&without),
            Err(ParseError::Missing {
                field: "active processes"
            })
        );
        assert_eq!(
            parse("<html><body>File not found.</body></html>"),
            Err(ParseError::Missing { field: "pool" })
        );
        assert_eq!(parse(""), Err(ParseError::Missing { field: "pool" }));
        let words = PHP_FPM_82.replace("listen queue:         0", "listen queue: none");
        assert_eq!(
            parse(&words),
            Err(ParseError::Number {
                field: "listen queue",
                value: "none".into()
            })
        );
        let negative = PHP_FPM_82.replace("idle processes:       3", "idle processes: -3");
        assert!(matches!(parse(&negative), Err(ParseError::Number { .. })));
    }

    #[test]
    fn huge_numbers_are_refused_and_quoted_short() {
        let max = PHP_FPM_82.replace(
            "accepted conn:        3",
            "accepted conn: 18446744073709551615",
        );
        assert_eq!(parse(&max).map(|s| s.accepted_conn), Ok(u64::MAX));
        let over = PHP_FPM_82.replace(
            "accepted conn:        3",
            "accepted conn: 18446744073709551616",
        );
        assert!(matches!(parse(&over), Err(ParseError::Number { .. })));
        let long = PHP_FPM_82.replace(
            "accepted conn:        3",
            &format!("accepted conn: {}", "9".repeat(10_000)),
        );
        match parse(&long) {
            Err(ParseError::Number { value, .. }) => assert_eq!(value.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    /// A fake php-fpm on a socket of a temp dir that answers `answer`.
    async fn serve_once(
        answer: Vec<u8>,
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("php-fpm.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = vec![0u8; 4096];
            let mut got = Vec::new();
            // The request ends with an empty STDIN record.
            while !got.ends_with(&fastcgi::record(fastcgi::STDIN, 1, &[])) {
                let n = s.read(&mut req).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&req[..n]);
            }
            let _ = s.write_all(&answer).await;
            got
        });
        (dir, path, task)
    }

    fn answer(stdout: &[u8]) -> Vec<u8> {
        let mut out = fastcgi::record(fastcgi::STDOUT, 1, stdout);
        out.extend(fastcgi::record(fastcgi::STDOUT, 1, &[]));
        out.extend(fastcgi::record(fastcgi::END_REQUEST, 1, &[0; 8]));
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn query_reads_a_page_and_names_the_path_in_every_error() {
        let page = format!("Content-type: text/plain;charset=UTF-8\r\n\r\n{PHP_FPM_82}");
        let (_dir, path, task) = serve_once(answer(page.as_bytes())).await;
        let got = query(&path, "/status", Duration::from_secs(5)).await;
        assert_eq!(got.expect("status").total_processes, 4);
        let sent = task.await.expect("join");
        let text = String::from_utf8_lossy(&sent);
        assert!(text.contains("SCRIPT_FILENAME/status"), "{text:?}");
        assert!(text.contains("SERVER_SOFTWAREfleet"), "{text:?}");

        let (_dir, path, _task) = serve_once(answer(
            b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n",
        ))
        .await;
        let e = query(&path, "/status", Duration::from_secs(5))
            .await
            .expect_err("no page");
        assert!(e.is_not_enabled());
        let shown = e.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(shown.contains("404 File not found."), "{shown}");

        // Oversize: one header claiming more than the limit is refused.
        let mut big = Vec::new();
        for _ in 0..2 {
            big.extend(fastcgi::record(fastcgi::STDOUT, 1, &vec![b'x'; 40_000]));
        }
        let (_dir, path, _task) = serve_once(big).await;
        let e = query(&path, "/status", Duration::from_secs(5))
            .await
            .expect_err("too large");
        assert!(matches!(e, StatusError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()));

        // Never answering: the timeout.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("php-fpm.sock");
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let e = query(&path, "/status", Duration::from_millis(50))
            .await
            .expect_err("timeout");
        assert!(matches!(e, StatusError::Timeout { .. }), "{e:?}");

        // A symlink is refused, never followed; nothing there is absent.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let e = query(&link, "/status", Duration::from_secs(5))
            .await
            .expect_err("symlink");
        match &e {
            StatusError::Connect { path, reason } => {
                assert_eq!(path, &link);
                assert!(reason.contains("symlink"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let e = query(&dir.path().join("none"), "/status", Duration::from_secs(5))
            .await
            .expect_err("absent");
        assert!(matches!(e, StatusError::Connect { .. }), "{e:?}");
    }
}
