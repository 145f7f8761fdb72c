//! Reading wakes out of fleet-waker logs, for the fleet benchmark and the
//! admission tests: when each wake held its host-wide slot.

use std::time::SystemTime;

/// The time stamp at the start of a log line (tracing's RFC 3339 UTC stamp).
pub fn stamp(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(line.split_whitespace().next()?.trim_end_matches('Z')).ok()
}

/// From one waker's log: (admitted to a wake slot, wake slot let go) of its
/// first wake: the slot is held for Docker's call that makes the container
/// run, and let go after logging the second.
pub fn slot_window(log: &str) -> Option<(SystemTime, SystemTime)> {
    let at = |needle: &str| log.lines().find(|l| l.contains(needle)).and_then(stamp);
    Some((at("admitted to a wake slot")?, at("wake slot let go")?))
}

/// The most intervals that overlap at any moment (an end and a start at
/// the same instant do not overlap).
pub fn peak_overlap(intervals: &[(SystemTime, SystemTime)]) -> usize {
    let mut edges: Vec<(SystemTime, i32)> = intervals
        .iter()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn overlaps_and_stamps() {
        let t = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(peak_overlap(&[]), 0);
        assert_eq!(
            peak_overlap(&[(t(0), t(10)), (t(5), t(15)), (t(20), t(30))]),
            2
        );
        assert_eq!(peak_overlap(&[(t(0), t(10)), (t(10), t(20))]), 1);
        assert_eq!(
            stamp("2026-11-30T00:30:48.930289Z  INFO x"),
            Some(UNIX_EPOCH + Duration::from_micros(1_795_998_648_930_289))
        );
        let log = "2026-11-30T00:30:48.000000Z  INFO a: admitted to a wake slot site=x\n\
                   2026-11-30T00:30:49.000000Z  INFO a: wake slot let go site=x\n";
        let (a, b) = slot_window(log).expect("window");
        assert_eq!(b.duration_since(a).ok(), Some(Duration::from_secs(1)));
        assert_eq!(slot_window("nothing"), None);
    }
}
