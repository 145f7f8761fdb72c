//! The site's activity state file: the waker writes it, the reaper reads it.
//!
//! `<state_dir>/<site>.state`, a few `key=value` lines:
//!
//! ```text
//! # fleet-waker activity state
//! pid=1234
//! open=1
//! connections=3
//! last_start=1795462970.123
//! last_end=1795462969.870
//! wakes=3
//! last_wake_ms=412
//! ```
//!
//! `open` is what keeps the site busy: FastCGI requests in flight (from
//! `BEGIN_REQUEST` to `END_REQUEST`) plus connections that carry anything
//! else; `last_start` and `last_end` are when the latest of those began and
//! ended. An idle connection a front end keeps in its pool counts only in
//! `connections` (every client connection open, written by wakers since
//! requests were counted; absent from older files), so it does not keep a
//! site awake. A reaper that knows only `open`, `last_start` and `last_end`
//! reads a newer file correctly, and a newer reaper reads an older file
//! (where `open` counted connections) on the safe side.
//!
//! `wakes` (wakes done by this waker process) and `last_wake_ms` (how long
//! the last wake that started or unpaused the container took) are optional:
//! a file without them is valid and reads as 0 wakes, no duration.
//!
//! Times are Unix seconds with milliseconds. The file is replaced atomically
//! (a temp file in the same directory, then `rename`), so a reader sees either
//! the old or the new content, never a mix. Neither side follows a symlink at
//! the file's path: the writer refuses to replace one, the reader refuses to
//! open one.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest state file a reader accepts.
const MAX_STATE_LEN: u64 = 4096;

/// What the waker last said about a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// The waker process that wrote the file.
    pub pid: Option<u32>,
    /// FastCGI requests in flight plus open connections that are not
    /// FastCGI: what keeps the site busy.
    pub open: u64,
    /// Client connections open, idle pooled ones included (`None` from a
    /// waker that did not write it).
    pub connections: Option<u64>,
    /// When the most recent request (or other connection) started.
    pub last_start: Option<SystemTime>,
    /// When the most recent request (or other connection) ended.
    pub last_end: Option<SystemTime>,
    /// Wakes done by this waker process (0 when the file does not say).
    pub wakes: u64,
    /// Duration in milliseconds of the last wake that started or unpaused
    /// the container, when there was one.
    pub last_wake_ms: Option<u64>,
}

impl Activity {
    /// The latest of `last_start` and `last_end`.
    pub fn last_activity(&self) -> Option<SystemTime> {
        match (self.last_start, self.last_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A state file whose content does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: expected key=value, found {text:?}")]
    NotKeyValue { line: usize, text: String },
    #[error("line {line}: bad value {value:?} for {key}")]
    BadValue {
        line: usize,
        key: String,
        value: String,
    },
    #[error("missing the required key `open`")]
    MissingOpen,
}

/// Reading or writing a state file failed. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path} is a symlink; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("state file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("state file {path} is larger than {MAX_STATE_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is malformed")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `secs.mmm`, as fleet's small state files keep a time.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// [`fmt_time`]'s text (any fraction up to nanoseconds) back to a time.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    if secs.is_empty() || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    if !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Renders `a` in the file format.
pub fn render(a: &Activity) -> String {
    let mut out = String::from("# fleet-waker activity state\n");
    if let Some(pid) = a.pid {
        out.push_str(&format!("pid={pid}\n"));
    }
    out.push_str(&format!("open={}\n", a.open));
    if let Some(n) = a.connections {
        out.push_str(&format!("connections={n}\n"));
    }
    if let Some(t) = a.last_start {
        out.push_str(&format!("last_start={}\n", fmt_time(t)));
    }
    if let Some(t) = a.last_end {
        out.push_str(&format!("last_end={}\n", fmt_time(t)));
    }
    out.push_str(&format!("wakes={}\n", a.wakes));
    if let Some(ms) = a.last_wake_ms {
        out.push_str(&format!("last_wake_ms={ms}\n"));
    }
    out
}

/// Parses the file format. Unknown keys are ignored (newer writers may add
/// some); `open` is required.
pub fn parse(text: &str) -> Result<Activity, ParseError> {
    let mut a = Activity::default();
    let mut seen_open = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (key, value) = l.split_once('=').ok_or_else(|| ParseError::NotKeyValue {
            line,
            text: l.to_owned(),
        })?;
        let bad = || ParseError::BadValue {
            line,
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match key {
            "pid" => a.pid = Some(value.parse().map_err(|_| bad())?),
            "open" => {
                a.open = value.parse().map_err(|_| bad())?;
                seen_open = true;
            }
            "connections" => a.connections = Some(value.parse().map_err(|_| bad())?),
            "last_start" => a.last_start = Some(parse_time(value).ok_or_else(bad)?),
            "last_end" => a.last_end = Some(parse_time(value).ok_or_else(bad)?),
            "wakes" => a.wakes = value.parse().map_err(|_| bad())?,
            "last_wake_ms" => a.last_wake_ms = Some(value.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    if !seen_open {
        return Err(ParseError::MissingOpen);
    }
    Ok(a)
}

/// A small state file's bytes (at most 4 KiB), never through a symlink and
/// only from a regular file; `Ok(None)` when there is none. The reaper's
/// php-fpm record is read the same way.
pub(crate) fn read_small(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StateError::Symlink {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| StateError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(StateError::NotRegular {
            path: path.to_owned(),
        });
    }
    let mut buf = Vec::new();
    (&mut file)
        .take(MAX_STATE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|source| StateError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_STATE_LEN {
        return Err(StateError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(Some(buf))
}

/// Reads the state file at `path`. `Ok(None)` when it does not exist (no
/// waker has recorded anything); any other failure is an error, which the
/// reaper treats as "unknown" and never stops on.
pub fn load(path: &Path) -> Result<Option<Activity>, StateError> {
    let Some(buf) = read_small(path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf);
    parse(&text).map(Some).map_err(|source| StateError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Atomically replaces the state file at `path` with `a`: writes a temp file
/// beside it (created exclusively, mode 0644) and renames it over. Refuses
/// when something other than a regular file (a symlink, a directory) sits at
/// `path`, and leaves that thing alone.
pub fn store(path: &Path, a: &Activity) -> Result<(), StateError> {
    use crate::atomic::ReplaceError as R;
    crate::atomic::replace(path, render(a).as_bytes(), false).map_err(|e| match e {
        R::Symlink => StateError::Symlink {
            path: path.to_owned(),
        },
        R::NotRegular => StateError::NotRegular {
            path: path.to_owned(),
        },
        R::Io(source) => StateError::Write {
            path: path.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn round_trip() {
        let a = Activity {
            pid: Some(42),
            open: 3,
            connections: Some(5),
            last_start: Some(at(1_795_462_970, 123)),
            last_end: Some(at(1_795_462_969, 870)),
            wakes: 5,
            last_wake_ms: Some(412),
        };
        assert_eq!(parse(&render(&a)), Ok(a));
        assert_eq!(a.last_activity(), Some(at(1_795_462_970, 123)));
    }

    /// The file of a waker from before requests were counted (no
    /// `connections`) still parses, and an older reader, which ignores
    /// unknown keys, finds in a newer file the same `open`, `last_start` and
    /// `last_end` it always read.
    #[test]
    fn older_and_newer_files() {
        let old = "# fleet-waker activity state\npid=9\nopen=2\nlast_start=100.5\n";
        let a = parse(old).expect("old file");
        assert_eq!((a.open, a.connections), (2, None));
        assert_eq!(a.last_start, Some(at(100, 500)));
        let new = render(&Activity {
            pid: Some(9),
            open: 0,
            connections: Some(4),
            last_start: Some(at(100, 500)),
            last_end: Some(at(101, 0)),
            ..Activity::default()
        });
        assert!(
            new.contains("\nopen=0\n") && new.contains("\nconnections=4\n"),
            "{new}"
        );
        let known: String = new
            .lines()
            .filter(|l| !l.starts_with("connections="))
            .map(|l| format!("{l}\n"))
            .collect();
        let older_view = parse(&known).expect("without the new key");
        assert_eq!(
            (older_view.open, older_view.last_start, older_view.last_end),
            (0, Some(at(100, 500)), Some(at(101, 0)))
        );
        assert!(matches!(
            parse("open=0\nconnections=many\n"),
            Err(ParseError::BadValue { line: 2, .. })
        ));
    }

    #[test]
    fn wake_keys_are_optional() {
        // A file of a waker from before these keys: still valid.
        let old = parse("pid=1\nopen=0\nlast_end=10.000\n").expect("old file");
        assert_eq!((old.wakes, old.last_wake_ms), (0, None));
        let new = parse("open=0\nwakes=7\nlast_wake_ms=1500\nfuture_key=x\n").expect("new file");
        assert_eq!((new.wakes, new.last_wake_ms), (7, Some(1500)));
        assert!(matches!(
            parse("open=0\nwakes=-1\n"),
            Err(ParseError::BadValue { line: 2, .. })
        ));
        assert!(matches!(
            parse("open=0\nlast_wake_ms=1.5\n"),
            Err(ParseError::BadValue { line: 2, .. })
        ));
        let rendered = render(&Activity::default());
        assert!(rendered.contains("wakes=0\n"), "{rendered}");
        assert!(!rendered.contains("last_wake_ms"), "{rendered}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(parse("pid=1\n"), Err(ParseError::MissingOpen));
        assert!(matches!(
            parse("open=1\nlast_end=yesterday\n"),
            Err(ParseError::BadValue { line: 2, .. })
        ));
        assert!(matches!(
            parse("open\n"),
            Err(ParseError::NotKeyValue { line: 1, .. })
        ));
        assert!(matches!(
            parse("open=-1\n"),
            Err(ParseError::BadValue { line: 1, .. })
        ));
        assert!(matches!(
            parse("open=0\nlast_start=1.2.3\n"),
            Err(ParseError::BadValue { .. })
        ));
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("example.com.state");
        assert!(load(&path).expect("missing is fine").is_none());
        let a = Activity {
            pid: Some(7),
            open: 1,
            connections: None,
            last_start: Some(at(100, 5)),
            last_end: None,
            ..Activity::default()
        };
        store(&path, &a).expect("store");
        assert_eq!(load(&path).expect("load"), Some(a));
        let b = Activity { open: 0, ..a };
        store(&path, &b).expect("store again");
        assert_eq!(load(&path).expect("load"), Some(b));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::write(&target, "precious").expect("write");
        let path = dir.path().join("example.com.state");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = store(&path, &Activity::default()).expect_err("must refuse");
        assert!(matches!(err, StateError::Symlink { .. }), "{err:?}");
        assert!(err.to_string().contains("example.com.state"));
        assert_eq!(fs::read_to_string(&target).expect("read"), "precious");
        assert!(
            fs::symlink_metadata(&path)
                .expect("still there")
                .file_type()
                .is_symlink()
        );
        assert!(matches!(load(&path), Err(StateError::Symlink { .. })));
    }

    #[test]
    fn load_rejects_directories_and_huge_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("d.state");
        fs::create_dir(&d).expect("mkdir");
        assert!(matches!(load(&d), Err(StateError::NotRegular { .. })));
        let big = dir.path().join("big.state");
        fs::write(&big, "open=0\n".repeat(1000)).expect("write");
        assert!(matches!(load(&big), Err(StateError::TooLarge { .. })));
    }
}
