//! The on-demand site list: `<sites_dir>/<site>.conf`, one file per site.
//!
//! Line 1 holds the idle timeout after its first colon, as in the old
//! setup's files:
//!
//! ```text
//! # Amount of time to pause the container after: 20m
//! ```
//!
//! The duration is [humantime] syntax (`90s`, `20m`, `1h 30m`).
//!
//! Line 2 may give a second, longer timeout for tiered sleep: a comment
//! that names "stop" and "after" before its colon (`parse_stop_line`):
//!
//! ```text
//! # Amount of time to pause the container after: 20m
//! # Amount of time to stop the container after: 6h
//! ```
//!
//! Any other line 2 (an nginx directive, another comment) is ignored, as is
//! everything after line 2, so one-line files keep working.
//!
//! Rules, each with its own [`ConfError`] variant:
//!
//! - a UTF-8 byte order mark before line 1 and a trailing `\r` (a file
//!   saved with CRLF line ends) are tolerated and stripped;
//! - line 1 must be valid UTF-8 without NUL or other control characters
//!   (a tab is allowed), else the file is "binary";
//! - line 1 is at most [`MAX_LINE_LEN`] bytes;
//! - it must contain a colon, and the text after the first colon (trimmed)
//!   must be a humantime duration, not zero and at most [`MAX_TIMEOUT`].
//!
//! [`parse_conf`] is pure; [`load_conf`] adds the file system (a regular
//! file, not a symlink, read only up to line 1); [`list_sites`] finds every `<site>.conf`
//! in a directory and validates the site names. Nothing here is fatal for
//! more than the one file it concerns.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::site::{Site, SiteError};

/// Longest first line accepted, in bytes (without the line end).
pub const MAX_LINE_LEN: usize = 4096;

/// Longest idle timeout accepted: 30 days. Anything longer is almost
/// certainly a typo (`20h` meant as `20m` is fine, `2000d` is not), and a
/// site that should never sleep belongs outside the on-demand list.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// File name suffix of a site's conf file.
const CONF_SUFFIX: &str = ".conf";

const BOM: &str = "\u{feff}";

/// Why line 1 of a conf file does not give a timeout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfError {
    #[error(
        "the file is empty (line 1 must hold the idle timeout after a colon, e.g. \"# …: 20m\")"
    )]
    Empty,
    #[error("line 1 is blank (it must hold the idle timeout after a colon, e.g. \"# …: 20m\")")]
    BlankLine,
    #[error("line 1 is {len} bytes long (at most {MAX_LINE_LEN})")]
    LineTooLong { len: usize },
    #[error("line 1 looks binary: {what} at byte {index}")]
    Binary { what: &'static str, index: usize },
    #[error("line 1 has no colon (the timeout goes after the first colon): {line:?}")]
    NoColon { line: String },
    #[error("line 1 has nothing after its first colon (expected a duration such as 20m)")]
    NoDuration,
    #[error("bad duration {text:?} after the colon on line 1 (expected e.g. 90s, 20m, 1h 30m)")]
    BadDuration {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("the duration {text:?} on line 1 is zero (a site would be stopped at once)")]
    Zero { text: String },
    #[error(
        "the duration {text:?} on line 1 is longer than the maximum of {}",
        humantime::format_duration(MAX_TIMEOUT)
    )]
    Absurd { text: String },
    #[error(
        "line 2 names a stop timeout but {reason}: {line:?} (expected e.g. \"# Amount of time to stop the container after: 6h\")"
    )]
    BadStopLine { line: String, reason: String },
}

/// A site's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteConf {
    /// Line 1: idle this long, the site is put to sleep.
    pub timeout: Duration,
    /// Line 2, when it gives one: idle this long, the site is stopped
    /// (tiered sleep: paused first, stopped later).
    pub stop_after: Option<Duration>,
}

/// Reads line 2 of a conf file: `Ok(None)` when it is not a stop line (a
/// comment naming "stop" and "after" before its colon), the duration when
/// it is one, an error when it is one with a bad duration.
fn parse_stop_line(line: &str) -> Result<Option<Duration>, ConfError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(comment) = line.trim_start().strip_prefix('#') else {
        return Ok(None);
    };
    let Some((head, after)) = comment.split_once(':') else {
        return Ok(None);
    };
    let head = head.to_ascii_lowercase();
    if !(head.contains("stop") && head.contains("after")) {
        return Ok(None);
    }
    let bad = |reason: String| ConfError::BadStopLine {
        line: excerpt(line),
        reason,
    };
    let text = after.trim();
    let d = humantime::parse_duration(text)
        .map_err(|e| bad(format!("its duration does not parse ({e})")))?;
    if d.is_zero() {
        return Err(bad("its duration is zero".to_owned()));
    }
    if d > MAX_TIMEOUT {
        return Err(bad(format!(
            "its duration is longer than the maximum of {}",
            humantime::format_duration(MAX_TIMEOUT)
        )));
    }
    Ok(Some(d))
}

/// Both timeouts from the start of a conf file's bytes.
fn parse_site_conf_bytes(bytes: &[u8]) -> Result<SiteConf, ConfError> {
    let timeout = parse_conf_bytes(bytes)?;
    let rest = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => &bytes[i + 1..],
        None => &[][..],
    };
    let line2 = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => &rest[..i],
        None => rest,
    };
    // A line 2 that is not text is not a stop line (the file may be
    // anything after line 1).
    let stop_after = match std::str::from_utf8(line2) {
        Ok(l) if l.len() <= MAX_LINE_LEN => parse_stop_line(l)?,
        _ => None,
    };
    Ok(SiteConf {
        timeout,
        stop_after,
    })
}

/// Reading a conf file failed. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfError {
    #[error("cannot open conf file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("conf file {path} is a symlink; refusing to follow it (make it a regular file)")]
    Symlink { path: PathBuf },
    #[error("conf file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("cannot read conf file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("conf file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfError,
    },
}

impl LoadConfError {
    /// The conf file concerned.
    pub fn path(&self) -> &Path {
        match self {
            LoadConfError::Open { path, .. }
            | LoadConfError::Symlink { path }
            | LoadConfError::NotRegular { path }
            | LoadConfError::Read { path, .. }
            | LoadConfError::Invalid { path, .. } => path,
        }
    }
}

/// Shortens `s` for quoting in an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses the idle timeout from the text of a conf file (only line 1 counts).
pub fn parse_conf(text: &str) -> Result<Duration, ConfError> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if text.is_empty() {
        return Err(ConfError::Empty);
    }
    let line = match text.find('\n') {
        Some(i) => &text[..i],
        None => text,
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(ConfError::LineTooLong { len: line.len() });
    }
    if let Some((index, c)) = line
        .char_indices()
        .find(|&(_, c)| c.is_control() && c != '\t')
    {
        let what = if c == '\0' {
            "NUL byte"
        } else {
            "control character"
        };
        return Err(ConfError::Binary { what, index });
    }
    if line.trim().is_empty() {
        return Err(ConfError::BlankLine);
    }
    let Some((_, after)) = line.split_once(':') else {
        return Err(ConfError::NoColon {
            line: excerpt(line),
        });
    };
    let text = after.trim();
    if text.is_empty() {
        return Err(ConfError::NoDuration);
    }
    let timeout = humantime::parse_duration(text).map_err(|source| ConfError::BadDuration {
        text: excerpt(text),
        source,
    })?;
    if timeout.is_zero() {
        return Err(ConfError::Zero {
            text: text.to_owned(),
        });
    }
    if timeout > MAX_TIMEOUT {
        return Err(ConfError::Absurd {
            text: excerpt(text),
        });
    }
    Ok(timeout)
}

/// Parses line 1 from raw bytes: checks UTF-8 on line 1 only (what follows
/// it may be anything), then [`parse_conf`]. `bytes` may be a prefix of the
/// file; a line that does not end within it is judged by its length.
pub fn parse_conf_bytes(bytes: &[u8]) -> Result<Duration, ConfError> {
    // Line 1 with its '\n' (if any), so that an empty line 1 of a
    // non-empty file is "blank", not "empty".
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => bytes,
    };
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_prefix(BOM.as_bytes()).unwrap_or(body);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.len() > MAX_LINE_LEN {
        return Err(ConfError::LineTooLong { len: body.len() });
    }
    match std::str::from_utf8(line) {
        Ok(text) => parse_conf(text),
        Err(e) => {
            // A NUL before the bad sequence is the more telling report.
            let valid = &line[..e.valid_up_to()];
            if let Some(index) = valid.iter().position(|&b| b == 0) {
                return Err(ConfError::Binary {
                    what: "NUL byte",
                    index,
                });
            }
            Err(ConfError::Binary {
                what: "invalid UTF-8",
                index: e.valid_up_to(),
            })
        }
    }
}

/// Reads the timeouts from the conf file at `path`: a regular file, read
/// no further than lines 1 and 2 could need.
///
/// A symlink is refused, not followed: the list lives in a Docker volume,
/// which containers may be able to write, and the reaper runs as root and
/// quotes the start of a bad line 1 in its report, so a link to, say,
/// `/etc/shadow` must not be read. The file is opened non-blocking, so a
/// FIFO planted there cannot hang the reaper either.
pub fn load_conf(path: &Path) -> Result<SiteConf, LoadConfError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LoadConfError::Symlink {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(LoadConfError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| LoadConfError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(LoadConfError::NotRegular {
            path: path.to_owned(),
        });
    }
    // BOM + two lines with CRLF + one byte more: enough to judge lines 1
    // and 2.
    let cap = (BOM.len() + 2 * (MAX_LINE_LEN + 2) + 1) as u64;
    let mut buf = Vec::new();
    (&mut file)
        .take(cap)
        .read_to_end(&mut buf)
        .map_err(|source| LoadConfError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse_site_conf_bytes(&buf).map_err(|source| LoadConfError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// An entry of the sites directory that is not a usable site, or the
/// directory itself that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SiteListError {
    #[error("cannot read the sites directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("conf file {path} has a name that is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("conf file {path} does not name a valid site")]
    BadName {
        path: PathBuf,
        #[source]
        source: SiteError,
    },
}

impl SiteListError {
    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            SiteListError::ReadDir { path, .. }
            | SiteListError::NotUtf8 { path }
            | SiteListError::BadName { path, .. } => path,
        }
    }
}

/// The valid sites of a sites directory and the entries that were refused.
#[derive(Debug, Default)]
pub struct SiteList {
    /// Valid sites and their conf files, sorted by site name.
    pub sites: Vec<(Site, PathBuf)>,
    /// `*.conf` entries whose name is not a valid site, sorted by path.
    pub errors: Vec<SiteListError>,
    /// The directory does not exist: no site is on the list. Set only for
    /// ENOENT; any other failure to read it is [`SiteListError::ReadDir`].
    pub missing: bool,
}

/// Decides whether a directory entry name is a conf file and, if so, the site
/// it names. `None`: not a conf file (ignored). Pure.
pub fn site_of_file_name(name: &[u8]) -> Option<Result<Site, Option<SiteError>>> {
    let stem = name.strip_suffix(CONF_SUFFIX.as_bytes())?;
    Some(match std::str::from_utf8(stem) {
        Ok(s) => Site::new(s).map_err(Some),
        Err(_) => Err(None),
    })
}

/// Lists every `<site>.conf` in `dir` (other names are ignored). A bad site
/// name is reported in [`SiteList::errors`] and never stops the others.
///
/// A directory that does not exist is an empty list with
/// [`SiteList::missing`] set: nothing creates it (it lives in Docker's volume
/// store, where the admin's tooling keeps the list), so a fresh host has
/// none, and a timer failing every minute for that would bury real failures.
/// A directory that exists but cannot be read (permissions, not a
/// directory, a loop) is an error for the whole list.
pub fn list_sites(dir: &Path) -> Result<SiteList, SiteListError> {
    let read_dir_err = |source| SiteListError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut list = SiteList::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            list.missing = true;
            return Ok(list);
        }
        Err(e) => return Err(read_dir_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read_dir_err)?;
        let name = entry.file_name();
        let path = entry.path();
        match site_of_file_name(name.as_bytes()) {
            None => {}
            Some(Ok(site)) => list.sites.push((site, path)),
            Some(Err(Some(source))) => list.errors.push(SiteListError::BadName { path, source }),
            Some(Err(None)) => list.errors.push(SiteListError::NotUtf8 { path }),
        }
    }
    list.sites.sort();
    list.errors.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_the_old_format() {
        for (text, want) in [
            (
                "# Amount of time to pause the container after: 20m\n",
                secs(1200),
            ),
            (
                "# Amount of time to pause the container after: 90s",
                secs(90),
            ),
            ("timeout: 1h 30m\nanything else\n\0\0binary", secs(5400)),
            ("a:1h30m", secs(5400)),
            ("x:   2s   \n", secs(2)),
            ("x:\t2s\t\n", secs(2)),
            ("# note: 20m", secs(1200)),
            ("x: 30days", MAX_TIMEOUT),
            ("x: 250ms", Duration::from_millis(250)),
            ("x: 1.5h", secs(5400)),
        ] {
            assert_eq!(parse_conf(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn the_first_colon_counts() {
        // "after the first colon": the rest of the line is the duration,
        // so a second colon makes it a bad duration, not a different field.
        assert!(matches!(
            parse_conf("a: b: 20m"),
            Err(ConfError::BadDuration { .. })
        ));
    }

    #[test]
    fn tolerates_bom_and_crlf() {
        assert_eq!(parse_conf("\u{feff}# pause after: 20m\r\n"), Ok(secs(1200)));
        assert_eq!(parse_conf("# pause after: 20m\r\nnext\r\n"), Ok(secs(1200)));
        assert_eq!(
            parse_conf_bytes(b"\xef\xbb\xbf# pause after: 5m\r\n"),
            Ok(secs(300))
        );
        // Only one BOM, only at the start; a lone \r inside is a control character.
        assert!(matches!(
            parse_conf("# pause\r after: 20m"),
            Err(ConfError::Binary { .. })
        ));
    }

    #[test]
    fn empty_and_blank() {
        assert_eq!(parse_conf(""), Err(ConfError::Empty));
        assert_eq!(parse_conf("\u{feff}"), Err(ConfError::Empty));
        assert_eq!(parse_conf_bytes(b""), Err(ConfError::Empty));
        assert_eq!(parse_conf("\n# x: 20m\n"), Err(ConfError::BlankLine));
        assert_eq!(parse_conf_bytes(b"\n# x: 20m\n"), Err(ConfError::BlankLine));
        assert_eq!(parse_conf_bytes(b"\r\n"), Err(ConfError::BlankLine));
        assert_eq!(parse_conf("   \r\n"), Err(ConfError::BlankLine));
    }

    #[test]
    fn no_colon() {
        let err = parse_conf("# Amount of time 20m\n").expect_err("no colon");
        assert!(matches!(err, ConfError::NoColon { .. }), "{err:?}");
        assert!(err.to_string().contains("Amount of time 20m"), "{err}");
        // The colon on line 2 does not count.
        assert!(matches!(
            parse_conf("twenty minutes\nx: 20m"),
            Err(ConfError::NoColon { .. })
        ));
    }

    #[test]
    fn nothing_after_the_colon() {
        assert_eq!(parse_conf("# pause after:"), Err(ConfError::NoDuration));
        assert_eq!(
            parse_conf("# pause after:   \n5m"),
            Err(ConfError::NoDuration)
        );
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "x: 20",
            "x: twenty minutes",
            "x: 20 m s",
            "x: -5m",
            "x: 5 lightyears",
            "x: m",
            "x: 99999999999999999999999999s",
        ] {
            let err = parse_conf(bad).expect_err(bad);
            assert!(
                matches!(err, ConfError::BadDuration { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains("bad duration"), "{err}");
        }
    }

    #[test]
    fn zero() {
        for bad in ["x: 0s", "x: 0m", "x: 0", "x: 0h 0m"] {
            assert!(
                matches!(parse_conf(bad), Err(ConfError::Zero { .. })),
                "{bad:?}: {:?}",
                parse_conf(bad)
            );
        }
    }

    #[test]
    fn absurd() {
        for bad in ["x: 31days", "x: 30days 1s", "x: 100y", "x: 2000d"] {
            let err = parse_conf(bad).expect_err(bad);
            assert!(matches!(err, ConfError::Absurd { .. }), "{bad:?}: {err:?}");
            assert!(err.to_string().contains("30days"), "{err}");
        }
    }

    #[test]
    fn binary() {
        let err = parse_conf("x: 2\0m").expect_err("nul");
        assert_eq!(
            err,
            ConfError::Binary {
                what: "NUL byte",
                index: 4
            }
        );
        assert!(matches!(
            parse_conf("x: 2m\u{1b}[31m"),
            Err(ConfError::Binary {
                what: "control character",
                ..
            })
        ));
        assert!(matches!(
            parse_conf_bytes(b"\x7fELF\x02\x01\x01\0\0\0"),
            Err(ConfError::Binary { .. })
        ));
        assert_eq!(
            parse_conf_bytes(b"x: \xff\xfe 20m"),
            Err(ConfError::Binary {
                what: "invalid UTF-8",
                index: 3
            })
        );
        assert_eq!(
            parse_conf_bytes(b"x\0: \xff"),
            Err(ConfError::Binary {
                what: "NUL byte",
                index: 1
            })
        );
        // Binary after line 1 is not our business.
        assert_eq!(parse_conf_bytes(b"x: 3s\n\xff\xfe\0"), Ok(secs(3)));
    }

    #[test]
    fn too_long() {
        let long = format!("# {}: 20m", "a".repeat(MAX_LINE_LEN));
        assert!(matches!(
            parse_conf(&long),
            Err(ConfError::LineTooLong { .. })
        ));
        assert!(matches!(
            parse_conf_bytes(long.as_bytes()),
            Err(ConfError::LineTooLong { .. })
        ));
        // Exactly the maximum is fine, with or without BOM and CRLF.
        let pad = "a".repeat(MAX_LINE_LEN - "# : 20m".len());
        let max = format!("# {pad}: 20m");
        assert_eq!(max.len(), MAX_LINE_LEN);
        assert_eq!(parse_conf(&max), Ok(secs(1200)));
        let framed = format!("\u{feff}{max}\r\n");
        assert_eq!(parse_conf(&framed), Ok(secs(1200)));
        assert_eq!(parse_conf_bytes(framed.as_bytes()), Ok(secs(1200)));
        // A long junk value is quoted shortened.
        let junk = format!("x: {}", "z".repeat(1000));
        let err = parse_conf(&junk).expect_err("junk");
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn file_names() {
        let site = |n: &str| site_of_file_name(n.as_bytes());
        assert_eq!(
            site("example.com.conf"),
            Some(Ok(Site::new("example.com").expect("valid")))
        );
        assert_eq!(site("example.com"), None);
        assert_eq!(site("example.com.conf~"), None);
        assert_eq!(site("example.com.conf.dpkg-old"), None);
        assert_eq!(site("README"), None);
        assert!(matches!(site(".conf"), Some(Err(Some(SiteError::Empty)))));
        assert!(matches!(site("..conf"), Some(Err(Some(_)))));
        assert!(matches!(site(".hidden.conf"), Some(Err(Some(_)))));
        assert!(matches!(site("a b.conf"), Some(Err(Some(_)))));
        assert_eq!(site_of_file_name(b"\xff.conf"), Some(Err(None)));
    }

    #[test]
    fn lists_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("b.example.conf"), "# pause after: 20m\n").expect("write");
        std::fs::write(d.join("a.example.conf"), "# pause after: 90s\n").expect("write");
        std::fs::write(d.join("bad name.conf"), "# pause after: 90s\n").expect("write");
        std::fs::write(d.join("notes.txt"), "ignored").expect("write");
        std::fs::write(d.join("c.example.conf.bak"), "ignored").expect("write");
        std::fs::create_dir(d.join("dir.example.conf")).expect("mkdir");
        std::fs::write(d.join("broken.example.conf"), "no colon here\n").expect("write");
        std::fs::write(d.join("big.example.conf"), "x".repeat(1 << 20)).expect("write");
        std::os::unix::fs::symlink(d.join("a.example.conf"), d.join("link.example.conf"))
            .expect("symlink");
        let fifo = d.join("fifo.example.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");

        let list = list_sites(d).expect("readable");
        let names: Vec<&str> = list.sites.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "a.example",
                "b.example",
                "big.example",
                "broken.example",
                "dir.example",
                "fifo.example",
                "link.example"
            ]
        );
        assert_eq!(list.errors.len(), 1, "{:?}", list.errors);
        assert!(matches!(list.errors[0], SiteListError::BadName { .. }));
        assert!(list.errors[0].to_string().contains("bad name.conf"));

        let load = |n: &str| load_conf(&d.join(n));
        assert_eq!(load("a.example.conf").expect("ok").timeout, secs(90));
        let err = load("link.example.conf").expect_err("symlink");
        assert!(matches!(err, LoadConfError::Symlink { .. }), "{err:?}");
        assert!(err.to_string().contains("link.example.conf"), "{err}");
        assert_eq!(load("b.example.conf").expect("ok").timeout, secs(1200));
        let err = load("broken.example.conf").expect_err("no colon");
        assert!(matches!(
            err,
            LoadConfError::Invalid {
                source: ConfError::NoColon { .. },
                ..
            }
        ));
        assert!(err.to_string().contains("broken.example.conf"), "{err}");
        assert!(matches!(
            load("big.example.conf"),
            Err(LoadConfError::Invalid {
                source: ConfError::LineTooLong { .. },
                ..
            })
        ));
        assert!(matches!(
            load("dir.example.conf"),
            Err(LoadConfError::NotRegular { .. })
        ));
        // A FIFO neither hangs nor passes.
        assert!(matches!(
            load("fifo.example.conf"),
            Err(LoadConfError::NotRegular { .. })
        ));
        let err = load("missing.example.conf").expect_err("missing");
        assert!(matches!(err, LoadConfError::Open { .. }));
        assert!(err.path().ends_with("missing.example.conf"));

        assert!(!list.missing);
        // A missing directory is an empty list, marked as missing…
        let none = list_sites(&d.join("nope")).expect("a missing dir is an empty list");
        assert!(none.missing && none.sites.is_empty() && none.errors.is_empty());
        // …but one that exists and cannot be listed is an error naming it.
        let err = list_sites(&d.join("a.example.conf")).expect_err("not a directory");
        assert!(matches!(err, SiteListError::ReadDir { .. }), "{err:?}");
        assert!(err.to_string().contains("a.example.conf"), "{err}");
    }

    #[test]
    fn line_2_may_give_a_stop_timeout() {
        let c = |t: &str| parse_site_conf_bytes(t.as_bytes());
        let one = c("# Amount of time to pause the container after: 20m\n").expect("one line");
        assert_eq!((one.timeout, one.stop_after), (secs(1200), None));
        let two = c(
            "# pause after: 20m\r\n# Amount of time to STOP the container after: 6h\r\nserver {\n",
        )
        .expect("two lines");
        assert_eq!(two.stop_after, Some(secs(6 * 3600)));
        // Any other line 2 is not a stop line.
        for other in [
            "server {",
            "# listen: 80",
            "# stop: 1h",
            "",
            "# after we stop",
        ] {
            let r = c(&format!("# x: 20m\n{other}\n")).expect(other);
            assert_eq!(r.stop_after, None, "{other:?}");
        }
        let err = c("# x: 20m\n# stop after: soon\n").expect_err("bad stop line");
        assert!(matches!(err, ConfError::BadStopLine { .. }), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(matches!(
            c("# x: 20m\n# stop after: 0s\n"),
            Err(ConfError::BadStopLine { .. })
        ));
        // Binary bytes after line 1 are nobody's business.
        let bin =
            parse_site_conf_bytes(b"# x: 20m\n\xff\x00stop after: 1h\n").expect("binary line 2");
        assert_eq!(bin.stop_after, None);
    }
}
