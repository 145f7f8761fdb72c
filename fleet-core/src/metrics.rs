//! Fleet-wide numbers: each reaper pass as a Prometheus text-format file
//! (`fleet-reaper --metrics-file`), for node_exporter's textfile collector.
//!
//! [`render`] is pure: per site its state after the pass (`asleep`, `awake`,
//! `paused`, one gauge each, exactly one of them 1), seconds since its last
//! activity, the waker's wakes and last cold start (from the state file,
//! when the waker wrote them), its memory (with a budget) and its heal
//! status; plus the pass's duration, its time, and totals. [`write()`]
//! follows the textfile-collector convention: a temp file in the same
//! directory, then `rename`, so the collector reads the old file or the new
//! one, never half of one. The temp name starts with a dot and does not end
//! in `.prom`, so the collector never reads it.
//!
//! **Invariant.** Nothing follows a symlink at the path: a symlink or
//! anything but a regular file there is refused and left as it is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::docker::ContainerState;
use crate::heal::HealStatus;
use crate::reaper::{HealMode, Outcome, Report, SiteReport};

/// Writing the metrics file failed. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics file {path} is a symlink; refusing to replace it")]
    Symlink { path: PathBuf },
    #[error("metrics file {path} exists and is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("metrics file {path} has no file name")]
    NoName { path: PathBuf },
    #[error("cannot write metrics file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A label value escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One metric family: its `HELP` and `TYPE` lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The state word of the metrics: `asleep`, `awake` or `paused`; `None`
/// when the state is not known (the site had an error before its inspect).
fn sleep_state(s: &SiteReport) -> Option<&'static str> {
    Some(match s.state_after()? {
        ContainerState::Running | ContainerState::Restarting | ContainerState::Stopping => "awake",
        ContainerState::Paused => "paused",
        ContainerState::Created
        | ContainerState::Exited
        | ContainerState::Dead
        | ContainerState::Removing => "asleep",
        ContainerState::Unknown => return None,
    })
}

const STATES: [&str; 3] = ["asleep", "awake", "paused"];

/// The metrics of `report` in Prometheus text format (version 0.0.4).
/// Per-site samples are only for valid site names (a bad conf file name is
/// counted in `fleet_reaper_site_errors`, never turned into a label).
pub fn render(report: &Report) -> String {
    let now = report.finished_at;
    let sites: Vec<&SiteReport> = report
        .sites
        .iter()
        .filter(|s| s.container.is_some())
        .collect();
    let mut out = String::new();

    let mut f = Family::new(
        &mut out,
        "fleet_site_state",
        "gauge",
        "1 for the state of the site's container after the reaper's pass (asleep, awake, paused), 0 for the others.",
    );
    for s in &sites {
        if let Some(state) = sleep_state(s) {
            for st in STATES {
                f.sample(
                    "fleet_site_state",
                    &[("site", &s.site), ("state", st)],
                    f64::from(u8::from(st == state)),
                );
            }
        }
    }
    let mut f = Family::new(
        &mut out,
        "fleet_site_seconds_since_activity",
        "gauge",
        "Seconds since the site's last activity (waker connection or container log line) seen by the pass.",
    );
    for s in &sites {
        if let Some(t) = s.last_activity() {
            let ago = now
                .duration_since(t)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            f.sample(
                "fleet_site_seconds_since_activity",
                &[("site", &s.site)],
                ago,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "fleet_site_wakes_total",
        "counter",
        "Wakes done by the site's current waker process (resets when the waker restarts).",
    );
    for s in &sites {
        if let Some(a) = s.activity {
            f.sample(
                "fleet_site_wakes_total",
                &[("site", &s.site)],
                a.wakes as f64,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "fleet_site_last_wake_seconds",
        "gauge",
        "Duration of the site's last wake that started or unpaused its container (a cold start), from the waker's state file.",
    );
    for s in &sites {
        if let Some(ms) = s.activity.and_then(|a| a.last_wake_ms) {
            f.sample(
                "fleet_site_last_wake_seconds",
                &[("site", &s.site)],
                ms as f64 / 1000.0,
            );
        }
    }
    if report.memory.is_some() {
        let mut f = Family::new(
            &mut out,
            "fleet_site_memory_bytes",
            "gauge",
            "Memory of the site's awake container (cgroup usage minus inactive file cache) before the memory guard acted.",
        );
        for s in &sites {
            if let Some(b) = s.memory {
                f.sample("fleet_site_memory_bytes", &[("site", &s.site)], b as f64);
            }
        }
    }
    if report.heal == HealMode::Checked {
        let mut f = Family::new(
            &mut out,
            "fleet_site_socket_healthy",
            "gauge",
            "1 when the site's socket unit was active and listening before the pass or was healed by it, 0 otherwise.",
        );
        for s in &sites {
            if let Some(h) = &s.heal {
                let ok = matches!(h.status, HealStatus::Ok | HealStatus::Healed);
                f.sample(
                    "fleet_site_socket_healthy",
                    &[("site", &s.site)],
                    f64::from(u8::from(ok)),
                );
            }
        }
    }

    let mut f = Family::new(
        &mut out,
        "fleet_reaper_sites",
        "gauge",
        "Listed sites by the state of their container after the pass.",
    );
    for st in STATES {
        let n = sites.iter().filter(|s| sleep_state(s) == Some(st)).count();
        f.sample("fleet_reaper_sites", &[("state", st)], n as f64);
    }
    let mut f = Family::new(
        &mut out,
        "fleet_reaper_actions",
        "gauge",
        "Containers the pass stopped or paused, by reason (idle timeout or memory guard).",
    );
    for (action, outcome) in [("stopped", Outcome::Stopped), ("paused", Outcome::Paused)] {
        for (reason, memory) in [("idle", false), ("memory", true)] {
            if outcome == Outcome::Paused && memory {
                continue; // the memory guard only stops
            }
            let n = sites
                .iter()
                .filter(|s| s.outcome() == Some(&outcome) && s.memory_stop() == memory)
                .count();
            f.sample(
                "fleet_reaper_actions",
                &[("action", action), ("reason", reason)],
                n as f64,
            );
        }
    }
    let healed = sites
        .iter()
        .filter(|s| {
            s.heal
                .as_ref()
                .is_some_and(|h| h.status == HealStatus::Healed)
        })
        .count();
    Family::new(
        &mut out,
        "fleet_reaper_healed",
        "gauge",
        "Socket units the pass healed.",
    )
    .sample("fleet_reaper_healed", &[], healed as f64);
    let errors = report.sites.iter().filter(|s| s.is_error()).count();
    Family::new(
        &mut out,
        "fleet_reaper_site_errors",
        "gauge",
        "Conf files or sites the pass had an error with.",
    )
    .sample("fleet_reaper_site_errors", &[], errors as f64);
    if let Some(m) = report.memory {
        let mut f = Family::new(
            &mut out,
            "fleet_reaper_awake_memory_bytes",
            "gauge",
            "Memory of the awake sites' containers, before and after the memory guard.",
        );
        f.sample(
            "fleet_reaper_awake_memory_bytes",
            &[("when", "before")],
            m.awake_before as f64,
        );
        f.sample(
            "fleet_reaper_awake_memory_bytes",
            &[("when", "after")],
            m.awake_after as f64,
        );
        Family::new(
            &mut out,
            "fleet_reaper_memory_budget_bytes",
            "gauge",
            "The memory guard's budget (--memory-budget).",
        )
        .sample("fleet_reaper_memory_budget_bytes", &[], m.budget as f64);
    }
    Family::new(
        &mut out,
        "fleet_reaper_pass_duration_seconds",
        "gauge",
        "How long the reaper's last pass took.",
    )
    .sample(
        "fleet_reaper_pass_duration_seconds",
        &[],
        report.elapsed.as_secs_f64(),
    );
    Family::new(
        &mut out,
        "fleet_reaper_last_pass_timestamp_seconds",
        "gauge",
        "When the reaper's last pass ended (Unix time).",
    )
    .sample("fleet_reaper_last_pass_timestamp_seconds", &[], secs(now));
    Family::new(
        &mut out,
        "fleet_reaper_interrupted",
        "gauge",
        "1 when the last pass was interrupted before it finished.",
    )
    .sample(
        "fleet_reaper_interrupted",
        &[],
        f64::from(u8::from(report.interrupted)),
    );
    out
}

/// Atomically replaces the file at `path` with `text` (mode 0644): a temp
/// file created exclusively beside it, then `rename`. A symlink or a
/// non-regular file at `path` is refused and left alone.
pub fn write(path: &Path, text: &str) -> Result<(), MetricsError> {
    use crate::atomic::ReplaceError as R;
    if path.file_name().is_none() {
        return Err(MetricsError::NoName {
            path: path.to_owned(),
        });
    }
    crate::atomic::replace(path, text.as_bytes(), true).map_err(|e| match e {
        R::Symlink => MetricsError::Symlink {
            path: path.to_owned(),
        },
        R::NotRegular => MetricsError::NotRegular {
            path: path.to_owned(),
        },
        R::Io(source) => MetricsError::Write {
            path: path.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heal::Heal;
    use crate::reaper::{Action, Examination, MemoryPick, MemorySummary, SiteResult, Verdict};
    use crate::state::Activity;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn site(name: &str, state: ContainerState, outcome: Outcome) -> SiteReport {
        let mut s = crate::reaper::SiteReport::new(name.to_owned(), PathBuf::from("/s"));
        s.container = Some(format!("{name}.fpm"));
        s.state = Some(state);
        s.result = SiteResult::Examined(Examination {
            verdict: Verdict::Idle,
            reason: String::new(),
            last_activity: None,
            outcome,
            memory_pick: None,
            memory_left: None,
        });
        s
    }

    fn examination(s: &mut SiteReport) -> &mut Examination {
        match &mut s.result {
            SiteResult::Examined(e) => e,
            other => panic!("not examined: {other:?}"),
        }
    }

    fn sample() -> Report {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_462_970);
        let mut a = site("a.example", ContainerState::Running, Outcome::Stopped);
        examination(&mut a).last_activity = Some(now - Duration::from_secs(90));
        a.activity = Some(Activity {
            open: 0,
            wakes: 4,
            last_wake_ms: Some(1250),
            ..Activity::default()
        });
        a.memory = Some(30 << 20);
        examination(&mut a).memory_pick = Some(MemoryPick {
            awake: 40 << 20,
            budget: 32 << 20,
            last_activity: None,
            at: now,
        });
        a.heal = Some(Heal {
            status: HealStatus::Healed,
            detail: "x".into(),
        });
        let mut b = site("b.example", ContainerState::Running, Outcome::None);
        b.memory = Some(10 << 20);
        b.activity = Some(Activity::default());
        b.heal = Some(Heal {
            status: HealStatus::Ok,
            detail: "x".into(),
        });
        let c = site("c.example", ContainerState::Exited, Outcome::None);
        let mut bad =
            crate::reaper::SiteReport::new("bad \"name\".conf".to_owned(), PathBuf::from("/s"));
        bad.result = SiteResult::Error(crate::reaper::SiteProblem {
            message: "bad".into(),
            unreachable: false,
        });
        Report {
            action: Action::Stop,
            dry_run: false,
            interrupted: false,
            sites: vec![a, b, c, bad],
            elapsed: Duration::from_millis(250),
            heal: HealMode::Checked,
            memory: Some(MemorySummary {
                budget: 32 << 20,
                awake_before: 40 << 20,
                awake_after: 10 << 20,
                unreadable: 0,
            }),
            finished_at: now,
        }
    }

    #[test]
    fn renders_every_family_once_with_help_and_type() {
        let text = render(&sample());
        assert!(
            text.contains("fleet_site_state{site=\"a.example\",state=\"asleep\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_state{site=\"a.example\",state=\"awake\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_state{site=\"b.example\",state=\"awake\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_state{site=\"c.example\",state=\"asleep\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_seconds_since_activity{site=\"a.example\"} 90\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_wakes_total{site=\"a.example\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_last_wake_seconds{site=\"a.example\"} 1.25\n"),
            "{text}"
        );
        assert!(
            !text.contains("fleet_site_last_wake_seconds{site=\"b.example\""),
            "{text}"
        );
        assert!(
            text.contains("fleet_site_socket_healthy{site=\"a.example\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_reaper_sites{state=\"asleep\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_reaper_sites{state=\"awake\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_reaper_actions{action=\"stopped\",reason=\"memory\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("fleet_reaper_healed 1\n"), "{text}");
        assert!(text.contains("fleet_reaper_site_errors 1\n"), "{text}");
        assert!(
            text.contains("fleet_reaper_pass_duration_seconds 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_reaper_last_pass_timestamp_seconds 1795462970\n"),
            "{text}"
        );
        assert!(
            !text.contains("bad"),
            "an invalid name never becomes a label:\n{text}"
        );
        // Each family: HELP and TYPE exactly once, before its samples.
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types, unique, "{text}");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let family = l.split(['{', ' ']).next().unwrap_or_default();
            assert!(types.contains(&family), "sample of no family: {l}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn write_is_atomic_and_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.prom");
        write(&path, "a 1\n").expect("write");
        write(&path, "a 2\n").expect("rewrite");
        assert_eq!(fs::read_to_string(&path).expect("read"), "a 2\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");

        let target = dir.path().join("precious");
        fs::write(&target, "keep").expect("write");
        let link = dir.path().join("link.prom");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = write(&link, "x 1\n").expect_err("symlink refused");
        assert!(matches!(e, MetricsError::Symlink { .. }), "{e:?}");
        assert!(e.to_string().contains("link.prom"));
        assert_eq!(fs::read_to_string(&target).expect("read"), "keep");
        let sub = dir.path().join("d.prom");
        fs::create_dir(&sub).expect("mkdir");
        assert!(matches!(
            write(&sub, "x 1\n"),
            Err(MetricsError::NotRegular { .. })
        ));
        let missing = dir.path().join("no/such/dir.prom");
        let e = write(&missing, "x 1\n").expect_err("no dir");
        assert!(e.to_string().contains("no/such/dir.prom"), "{e}");
    }
}
