//! Self-healing: the reaper's pass finds on-demand sites whose socket unit
//! (`fleet-waker@<site>.socket`) is failed or not listening, and brings it
//! back with the socket-side steps of `fleet-renew` ([`renew::socket_plan`]).
//!
//! A site whose socket unit hit systemd's trigger or start limit is dark
//! (nginx gets `ECONNREFUSED` or `ENOENT`) until someone resets it. One
//! `systemctl list-units` per pass gives the state of every waker unit, and
//! the kernel's table of listening unix sockets (read once per pass) tells
//! whether each socket listens, so a healthy fleet costs two reads, whatever
//! its size; only a site that needs healing costs `systemctl` calls.
//!
//! **Invariants.** Healing never stops a container, never touches php-fpm's
//! socket or the runtime directory, and never stops a socket unit whose
//! waker runs (that would cut its connections): a unit that is active but
//! not listening while its waker runs is reported for `fleet-renew`. A site
//! whose socket unit systemd has not loaded (not enabled, never started) is
//! not ours to start: it is reported, nothing is enabled or started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::docker::Engine;
use crate::renew::{self, UnixSocketEntry};
use crate::site::{Layout, Site};

/// Where systemd, when it is PID 1, keeps its runtime unit directory; its
/// existence is `sd_booted(3)`'s test.
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// The kernel's unix socket table, as seen through the process's own
/// network namespace: `/proc/net` itself is hidden by the reaper unit's
/// `ProcSubset=pid`, while `/proc/self/net` is not.
const PROC_SELF_NET_UNIX: &str = "/proc/self/net/unix";

/// One line of `systemctl list-units --plain --no-legend --full`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRow {
    pub name: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load: String,
    /// `active`, `inactive`, `failed`, `activating`, …
    pub active: String,
    /// `listening`, `running`, `dead`, `failed`, …
    pub sub: String,
}

/// Parses `systemctl list-units --plain --no-legend --full` output. Some
/// systemd versions put a `●` (or `*` without UTF-8) before a failed unit
/// even with `--plain`; it is skipped. Lines that do not parse are skipped.
fn parse_list_units(text: &str) -> Vec<UnitRow> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().peekable();
            if matches!(words.peek(), Some(&"●") | Some(&"*")) {
                words.next();
            }
            let name = words.next()?;
            let load = words.next()?;
            let active = words.next()?;
            let sub = words.next()?;
            Some(UnitRow {
                name: name.to_owned(),
                load: load.to_owned(),
                active: active.to_owned(),
                sub: sub.to_owned(),
            })
        })
        .collect()
}

/// What a site's socket unit needs. Pure result of `assess`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Active and listening.
    Nothing,
    /// systemd has not loaded the unit: not ours to start.
    NotLoaded(String),
    /// Starting or stopping right now: left to systemd.
    InTransition(String),
    /// Failed or inactive: reset-failed and start (the why).
    Start(String),
    /// Active, not listening, no waker behind it: stop, then start.
    Restart(String),
    /// Active, not listening, and its waker runs: stopping the socket unit
    /// would stop the waker and cut its connections, so it is left alone.
    Blocked(String),
}

fn running(row: Option<&UnitRow>) -> bool {
    row.is_some_and(|r| {
        matches!(
            r.active.as_str(),
            "active" | "activating" | "deactivating" | "reloading"
        )
    })
}

/// Decides what the socket unit `socket` needs, given its service's row and
/// whether its socket file listens.
fn assess(socket: Option<&UnitRow>, service: Option<&UnitRow>, listening: bool) -> Need {
    let Some(row) = socket.filter(|r| r.load == "loaded") else {
        let load = socket.map_or("not loaded", |r| r.load.as_str());
        return Need::NotLoaded(format!(
            "socket unit is {load}: not enabled or started here, so not started by the reaper"
        ));
    };
    match row.active.as_str() {
        "active" if listening => Need::Nothing,
        "active" if running(service) => Need::Blocked(format!(
            "socket unit is active ({}) but its socket does not listen while its waker runs; \
             left alone so no connection is cut: run fleet-renew",
            row.sub
        )),
        "active" => Need::Restart(format!(
            "socket unit is active ({}) but its socket does not listen",
            row.sub
        )),
        "failed" | "inactive" => {
            Need::Start(format!("socket unit was {} ({})", row.active, row.sub))
        }
        other => Need::InTransition(format!(
            "socket unit is {other} ({}); left to systemd",
            row.sub
        )),
    }
}

/// How a site's healing ended, for the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealStatus {
    /// Nothing to heal.
    Ok,
    /// Healed: the socket unit listens again.
    Healed,
    /// Dry run: would have healed.
    WouldHeal,
    /// Needed healing, and a step failed (an error of the site).
    Failed,
    /// Needs `fleet-renew`; left alone on purpose (an error of the site).
    Blocked,
    /// Not loaded: reported only.
    NotLoaded,
    /// Starting or stopping: left to systemd.
    InTransition,
}

impl HealStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealStatus::Ok => "ok",
            HealStatus::Healed => "healed",
            HealStatus::WouldHeal => "would-heal",
            HealStatus::Failed => "failed",
            HealStatus::Blocked => "blocked",
            HealStatus::NotLoaded => "not-loaded",
            HealStatus::InTransition => "in-transition",
        }
    }

    /// True when the site counts as an error of the pass.
    pub fn is_error(self) -> bool {
        matches!(self, HealStatus::Failed | HealStatus::Blocked)
    }
}

/// A site's healing: the status and what was found and done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heal {
    pub status: HealStatus,
    pub detail: String,
}

/// The pass's view of systemd, taken once: every waker unit and the kernel's
/// listening sockets.
#[derive(Debug, Clone)]
pub struct Snapshot {
    units: HashMap<String, UnitRow>,
    table: Vec<UnixSocketEntry>,
}

impl Snapshot {
    /// A snapshot from already-read parts (tests, or a caller that read them).
    pub fn new(rows: Vec<UnitRow>, table: Vec<UnixSocketEntry>) -> Snapshot {
        Snapshot {
            units: rows.into_iter().map(|r| (r.name.clone(), r)).collect(),
            table,
        }
    }

    /// What `site` needs, judged from the snapshot and its socket file.
    pub fn need(&self, cfg: &renew::Config, site: &Site) -> Need {
        let socket = self.units.get(&cfg.socket_unit.for_site(site));
        let service = self.units.get(&cfg.service_unit.for_site(site));
        let path = cfg.layout.waker_socket(site);
        assess(socket, service, listens(&self.table, &path))
    }
}

/// A socket file at `path` (not a symlink or anything else: a tenant could
/// replace it) and a listening socket bound to that name in the kernel's
/// table. The file itself is never opened or connected to: a connect would
/// wake the site.
fn listens(table: &[UnixSocketEntry], path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket && renew::is_listening(table, path)
}

/// True when systemd runs as the system manager (`sd_booted(3)`).
pub fn systemd_booted() -> bool {
    Path::new(SYSTEMD_RUN_DIR).is_dir()
}

/// Takes the pass's [`Snapshot`]: one `systemctl list-units` for both unit
/// templates of `cfg`, and one read of the unix socket table.
pub async fn snapshot(cfg: &renew::Config) -> Result<Snapshot, renew::RenewError> {
    let socket_pattern = cfg.socket_unit.pattern();
    let service_pattern = cfg.service_unit.pattern();
    let listed = renew::systemctl(
        cfg,
        &[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager",
            "--full",
            socket_pattern.as_str(),
            service_pattern.as_str(),
        ],
    )
    .await?;
    Ok(Snapshot::new(
        parse_list_units(&listed),
        renew::read_unix_table(cfg)?,
    ))
}

/// The renew configuration healing uses: the default units, the pass's
/// layout, and the unix table through `/proc/self/net`.
pub fn renew_config(layout: &Layout, dry_run: bool) -> renew::Config {
    let mut cfg = renew::Config::new(layout.clone());
    cfg.proc_net_unix = PathBuf::from(PROC_SELF_NET_UNIX);
    cfg.dry_run = dry_run;
    cfg
}

/// Heals `site` if the snapshot says it needs it. Never fails: the outcome
/// and its reason are in the returned [`Heal`].
pub async fn heal_site(
    cfg: &renew::Config,
    engine: &Engine,
    snapshot: &Snapshot,
    site: &Site,
) -> Heal {
    let (why, restart) = match snapshot.need(cfg, site) {
        Need::Nothing => {
            return Heal {
                status: HealStatus::Ok,
                detail: "socket unit active and listening".to_owned(),
            };
        }
        Need::NotLoaded(d) => {
            return Heal {
                status: HealStatus::NotLoaded,
                detail: d,
            };
        }
        Need::InTransition(d) => {
            return Heal {
                status: HealStatus::InTransition,
                detail: d,
            };
        }
        Need::Blocked(d) => {
            return Heal {
                status: HealStatus::Blocked,
                detail: d,
            };
        }
        Need::Start(d) => (d, false),
        Need::Restart(d) => (d, true),
    };
    let steps = renew::socket_plan(cfg, site, restart);
    let report = renew::run_steps(cfg, engine, site, steps).await;
    let done: Vec<String> = report
        .steps
        .iter()
        .map(|s| match &s.outcome {
            renew::Outcome::Done(t) => format!("{}: {t}", s.step),
            renew::Outcome::DryRun => format!("{}: dry run", s.step),
            renew::Outcome::Skipped(t) => format!("{}: skipped, {t}", s.step),
            renew::Outcome::Failed(e) => format!("{}: FAILED, {}", s.step, crate::exit::chain(e)),
        })
        .collect();
    let status = if cfg.dry_run {
        HealStatus::WouldHeal
    } else if report.healthy() {
        HealStatus::Healed
    } else {
        HealStatus::Failed
    };
    Heal {
        status,
        detail: format!("{why}; {}", done.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, load: &str, active: &str, sub: &str) -> UnitRow {
        UnitRow {
            name: name.into(),
            load: load.into(),
            active: active.into(),
            sub: sub.into(),
        }
    }

    #[test]
    fn list_units_parses_with_and_without_bullets() {
        let text = "\
fleet-waker@a.example.socket loaded active listening fleet waker socket for a.example
● fleet-waker@b.example.socket loaded failed failed fleet waker socket for b.example
* fleet-waker@c.example.service loaded active running fleet waker for c.example
fleet-waker@d.example.socket not-found inactive dead fleet-waker@d.example.socket
short line

";
        let rows = parse_list_units(text);
        assert_eq!(
            rows,
            vec![
                row(
                    "fleet-waker@a.example.socket",
                    "loaded",
                    "active",
                    "listening"
                ),
                row("fleet-waker@b.example.socket", "loaded", "failed", "failed"),
                row(
                    "fleet-waker@c.example.service",
                    "loaded",
                    "active",
                    "running"
                ),
                row(
                    "fleet-waker@d.example.socket",
                    "not-found",
                    "inactive",
                    "dead"
                ),
            ]
        );
    }

    #[test]
    fn assess_covers_every_state() {
        let sock = |active: &str, sub: &str| row("s", "loaded", active, sub);
        let svc = |active: &str| row("v", "loaded", active, "x");
        assert_eq!(
            assess(Some(&sock("active", "listening")), None, true),
            Need::Nothing
        );
        assert!(matches!(assess(None, None, false), Need::NotLoaded(_)));
        assert!(matches!(
            assess(Some(&row("s", "not-found", "inactive", "dead")), None, false),
            Need::NotLoaded(d) if d.contains("not-found")
        ));
        assert!(matches!(
            assess(Some(&row("s", "masked", "inactive", "dead")), None, false),
            Need::NotLoaded(_)
        ));
        assert!(matches!(
            assess(Some(&sock("failed", "failed")), Some(&svc("failed")), false),
            Need::Start(d) if d.contains("failed")
        ));
        assert!(matches!(
            assess(Some(&sock("inactive", "dead")), None, false),
            Need::Start(_)
        ));
        // Active but not listening: restart only with no waker behind it.
        assert!(matches!(
            assess(
                Some(&sock("active", "listening")),
                Some(&svc("inactive")),
                false
            ),
            Need::Restart(_)
        ));
        assert!(matches!(
            assess(Some(&sock("active", "listening")), None, false),
            Need::Restart(_)
        ));
        for running in ["active", "activating", "deactivating"] {
            assert!(matches!(
                assess(Some(&sock("active", "running")), Some(&svc(running)), false),
                Need::Blocked(d) if d.contains("fleet-renew")
            ));
        }
        assert!(matches!(
            assess(Some(&sock("activating", "start-pre")), None, false),
            Need::InTransition(_)
        ));
    }

    #[test]
    fn listening_needs_the_file_and_the_kernel_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vhost-waker.sock");
        let entry = UnixSocketEntry {
            listening: true,
            path: path.to_string_lossy().into_owned(),
        };
        // In the table but no file (a tenant unlinked it): not listening.
        assert!(!listens(std::slice::from_ref(&entry), &path));
        let _l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(listens(std::slice::from_ref(&entry), &path));
        assert!(!listens(&[], &path), "a file but no listener");
        // A symlink to a listening socket is not the socket.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let link_entry = UnixSocketEntry {
            listening: true,
            path: link.to_string_lossy().into_owned(),
        };
        assert!(!listens(&[link_entry], &link));
    }

    #[test]
    fn snapshot_judges_each_site_by_its_own_units() {
        let layout = Layout {
            run_dir: "/nonexistent-run".into(),
            ..Layout::default()
        };
        let cfg = renew_config(&layout, false);
        let a = Site::new("a.example").expect("valid");
        let b = Site::new("b.example").expect("valid");
        let snap = Snapshot::new(
            vec![
                row("fleet-waker@a.example.socket", "loaded", "failed", "failed"),
                row(
                    "fleet-waker@b.example.socket",
                    "loaded",
                    "active",
                    "running",
                ),
                row(
                    "fleet-waker@b.example.service",
                    "loaded",
                    "active",
                    "running",
                ),
            ],
            vec![],
        );
        assert!(matches!(snap.need(&cfg, &a), Need::Start(_)));
        assert!(matches!(snap.need(&cfg, &b), Need::Blocked(_)));
        let c = Site::new("c.example").expect("valid");
        assert!(matches!(snap.need(&cfg, &c), Need::NotLoaded(_)));
        assert_eq!(cfg.proc_net_unix, PathBuf::from(PROC_SELF_NET_UNIX));
    }

    #[test]
    fn proc_self_net_unix_is_the_table() {
        // The path healing reads exists and parses on this kernel.
        let text = std::fs::read_to_string(PROC_SELF_NET_UNIX).expect("read");
        assert!(text.starts_with("Num"), "{text}");
    }
}
