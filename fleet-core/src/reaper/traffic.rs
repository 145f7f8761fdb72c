//! php-fpm's own activity signal, kept across passes.
//!
//! A stock php-fpm pool logs nothing per request, and in direct mode nginx's
//! requests never pass the waker; php-fpm's status page counts every
//! connection it accepted (`accepted conn`). The reaper reads it once per
//! pass for each running site and keeps the reading in
//! `<state_dir>/<site>.fpm` ([`crate::site::Layout::fpm_record`]):
//!
//! ```text
//! # fleet-reaper: php-fpm's accepted connections
//! started=1795462970.123
//! accepted=1234
//! traffic=1795462990.500
//! ```
//!
//! The counter grows by exactly one between two passes when only the
//! reaper's own request came; anything more is traffic, dated at the pass
//! that saw it (the safe side: the real time is earlier). A new container
//! run (`started` differs), a counter that went back or a record that cannot
//! be read start over with traffic dated now (unless the counter holds only
//! the reaper's own request): unknown history never makes a site look idle.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::atomic;
use crate::state::{fmt_time, parse_time};

/// What the reaper remembers of one site's php-fpm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The container run the counter belongs to (Docker's start time).
    pub started: Option<SystemTime>,
    /// `accepted conn` at the last reading, the reaper's own request
    /// included.
    pub accepted: u64,
    /// When the counter was last seen to grow by more than the reaper's
    /// own requests.
    pub traffic: Option<SystemTime>,
}

/// The file's text.
pub fn render(r: &Record) -> String {
    let mut out = String::from("# fleet-reaper: php-fpm's accepted connections\n");
    if let Some(t) = r.started {
        out.push_str(&format!("started={}\n", fmt_time(t)));
    }
    out.push_str(&format!("accepted={}\n", r.accepted));
    if let Some(t) = r.traffic {
        out.push_str(&format!("traffic={}\n", fmt_time(t)));
    }
    out
}

/// Parses [`render`]'s text; `None` for anything else.
pub fn parse(text: &str) -> Option<Record> {
    let mut r = Record {
        started: None,
        accepted: 0,
        traffic: None,
    };
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=')?;
        match k {
            "started" => r.started = Some(parse_time(v)?),
            "accepted" => {
                r.accepted = v.parse().ok()?;
                seen = true;
            }
            "traffic" => r.traffic = Some(parse_time(v)?),
            _ => {}
        }
    }
    seen.then_some(r)
}

/// `t` to the millisecond, as the file keeps it.
fn to_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// True when `prev` was read from the container run that started at
/// `started` (compared to the millisecond the file keeps).
pub fn same_run(prev: &Record, started: Option<SystemTime>) -> bool {
    prev.started.map(to_ms) == started.map(to_ms)
}

/// The record after a new reading, `own` of whose connections since the
/// last one were the reaper's own status requests (one a pass; more after a
/// drain). Pure.
pub fn observe(
    prev: Option<&Record>,
    started: Option<SystemTime>,
    accepted: u64,
    own: u64,
    now: SystemTime,
) -> Record {
    let traffic = match prev {
        Some(p) if same_run(p, started) && accepted >= p.accepted => {
            if accepted - p.accepted > own {
                Some(now)
            } else {
                p.traffic
            }
        }
        // Only our own requests ever: no traffic in this run.
        _ if accepted <= own => None,
        _ => Some(now),
    };
    Record {
        started,
        accepted,
        traffic,
    }
}

/// Reads the record; `None` when there is none or it cannot be used (the
/// caller then starts over, on the safe side).
pub fn load(path: &Path) -> Option<Record> {
    let bytes = crate::state::read_small(path).ok().flatten()?;
    parse(std::str::from_utf8(&bytes).ok()?)
}

/// Writes the record atomically.
pub fn store(path: &Path, r: &Record) -> Result<(), atomic::ReplaceError> {
    atomic::replace(path, render(r).as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn only_growth_beyond_the_reapers_own_request_is_traffic() {
        let run = Some(at(1000) + Duration::from_nanos(123_456_789));
        let first = observe(None, run, 50, 1, at(2000));
        assert_eq!(
            first.traffic,
            Some(at(2000)),
            "unknown history is traffic now"
        );
        // Read back from the file, which keeps milliseconds.
        let first = parse(&render(&first)).expect("round trip");
        let quiet = observe(Some(&first), run, 51, 1, at(2060));
        assert_eq!(quiet.traffic, Some(at(2000)), "our own request only");
        let busy = observe(Some(&quiet), run, 60, 1, at(2120));
        assert_eq!(busy.traffic, Some(at(2120)));
        let restarted = observe(Some(&busy), Some(at(3000)), 3, 1, at(3100));
        assert_eq!(restarted.traffic, Some(at(3100)));
        let went_back = observe(Some(&busy), run, 10, 1, at(2180));
        assert_eq!(went_back.traffic, Some(at(2180)));
        assert_eq!(
            observe(None, run, 1, 1, at(2000)).traffic,
            None,
            "only ours"
        );
        // A drain's readings: growth by its own requests is no traffic.
        let drained = observe(Some(&quiet), run, 55, 4, at(2070));
        assert_eq!(drained.traffic, Some(at(2000)), "the drain's own requests");
        let served = observe(Some(&quiet), run, 56, 4, at(2070));
        assert_eq!(served.traffic, Some(at(2070)), "one more than the drain's");
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let r = Record {
            started: Some(at(1000) + Duration::from_millis(123)),
            accepted: 42,
            traffic: Some(at(2000)),
        };
        assert_eq!(parse(&render(&r)), Some(r));
        assert_eq!(parse("accepted=x\n"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("# only a comment\n"), None);
    }
}
