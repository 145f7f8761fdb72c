//! The plan output: a table for people, JSON for programs. Pure.
//!
//! The JSON is [`Report`]'s `serde::Serialize`; the helpers here give its
//! fields their JSON form (Unix seconds, seconds, flat keys).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{
    Examination, HealMode, MemoryExempt, MemoryLeft, MemoryPick, NotDrained, NotQuiet, Outcome,
    Report, SiteProblem, SiteReport, SiteResult, Skip, Stage, Verdict, ago, human,
};
use crate::docker::reap::LogProbe;
use crate::memory::human_size;
use crate::state::Activity;

/// The last verdict: the re-check's when it changed the examination's.
fn verdict(e: &Examination) -> Verdict {
    match &e.outcome {
        Outcome::Skipped(Skip::NotIdle { verdict, .. }) => *verdict,
        _ => e.verdict,
    }
}

impl SiteReport {
    /// Nothing to tell: examined and left alone, nothing healed.
    pub fn is_quiet(&self) -> bool {
        let left_alone =
            matches!(&self.result, SiteResult::Examined(e) if e.outcome == Outcome::None);
        let healed = self
            .heal
            .as_ref()
            .is_some_and(|h| h.status != crate::heal::HealStatus::Ok);
        left_alone && !healed
    }
}

impl Report {
    /// This report with only the sites that are not [quiet](SiteReport::is_quiet)
    /// (`--changes-only`: a pass over 300 sites where nothing happened prints
    /// nothing to the journal).
    pub fn changes_only(&self) -> Report {
        let mut shown = self.clone();
        shown.sites.retain(|s| !s.is_quiet());
        shown
    }
}

fn verdict_word(s: &SiteReport) -> &'static str {
    match &s.result {
        SiteResult::Examined(e) => verdict(e).as_str(),
        SiteResult::Error(_) => "error",
        SiteResult::Interrupted(_) => "-",
    }
}

fn action_word(s: &SiteReport) -> &'static str {
    match &s.result {
        SiteResult::Examined(e) => e.outcome.as_str(),
        SiteResult::Error(_) => "none",
        SiteResult::Interrupted(_) => "interrupted",
    }
}

/// The verdict's (or the memory guard's) reason, with what the re-check
/// found; for an error, the error.
fn reason(s: &SiteReport) -> String {
    match &s.result {
        SiteResult::Error(p)
        | SiteResult::Examined(Examination {
            outcome: Outcome::Failed(p),
            ..
        }) => p.message.clone(),
        SiteResult::Examined(e) => examined_reason(s, e),
        SiteResult::Interrupted(Stage::NotExamined) => {
            "interrupted before the site was examined".to_owned()
        }
        SiteResult::Interrupted(Stage::Examining) => {
            "interrupted while the site was examined".to_owned()
        }
    }
}

fn examined_reason(s: &SiteReport, e: &Examination) -> String {
    let why = match (e.memory_pick, e.memory_left) {
        (Some(pick), _) => memory_reason(s, pick),
        (None, Some(left)) => format!("{}; {}", e.reason, memory_left(left)),
        (None, None) => e.reason.clone(),
    };
    match &e.outcome {
        Outcome::Interrupted => format!("{why} (interrupted before acting)"),
        Outcome::Skipped(Skip::WakerRequest) => {
            format!("{why} (re-check: a request is at php-fpm through the waker; left running)")
        }
        Outcome::Skipped(Skip::NotQuiet(not)) => {
            format!("{why} (re-check: {}; left running)", not_quiet(not))
        }
        Outcome::Skipped(Skip::NotIdle { reason, .. }) => format!("re-check: {reason}"),
        Outcome::Skipped(Skip::ContainerChanged {
            state,
            started_at,
            seen_at,
        }) => format!(
            "re-check: container is {state} (started {}) since it was examined",
            started_at.map_or_else(|| "never".to_owned(), |t| ago(*seen_at, t))
        ),
        Outcome::Skipped(Skip::NotDrained(not)) => {
            format!("{why} (drain: {}; left running)", not_drained(not))
        }
        Outcome::None
        | Outcome::Unknown(_)
        | Outcome::Stopped
        | Outcome::Paused
        | Outcome::WouldStop
        | Outcome::WouldPause
        | Outcome::Failed(_) => why,
    }
}

fn not_quiet(n: &NotQuiet) -> String {
    match n {
        NotQuiet::Verdict { reason, .. } => reason.clone(),
        NotQuiet::NoStartTime => "container has no start time".to_owned(),
        NotQuiet::Recent {
            since,
            min_idle,
            at,
        } => format!(
            "active {}, less than --memory-min-idle {} ago",
            ago(*at, *since),
            human(*min_idle)
        ),
    }
}

fn not_drained(n: &NotDrained) -> String {
    match n {
        NotDrained::StillServing {
            serving,
            queued,
            timeout,
        } => format!(
            "php-fpm still serving {serving} request(s), {queued} queued, after --drain-timeout {}",
            human(*timeout)
        ),
        NotDrained::Failed(error) => error.clone(),
        NotDrained::NoStatusPage => {
            format!("php-fpm's status page was not read, so {NO_STATUS_PAGE}")
        }
        NotDrained::PausedInPlace => {
            "paused with php-fpm's socket in place (not by fleet-reaper): \
             connections may wait in its queue and a stop would cut them; unpause it \
             (docker unpause) and the next pass drains and stops it"
                .to_owned()
        }
    }
}

/// Why a running site without a status reading is never stopped or paused
/// unless `--proxy-only`, and the fix.
const NO_STATUS_PAGE: &str = "nothing tells when php-fpm has finished the requests nginx's direct \
     mode sends straight to it. Fix: add `pm.status_path = /status` to the pool (or run with \
     --proxy-only when nginx only talks to the waker)";

/// A site the memory guard left out of its choice while over its budget.
fn memory_left(left: MemoryLeft) -> String {
    let why = match left.why {
        MemoryExempt::NoStatusPage => {
            format!("php-fpm's status page gives nothing, so {NO_STATUS_PAGE}")
        }
    };
    format!(
        "memory guard: awake sites use {}, over the budget of {}, but this site is never \
         stopped for memory: {why}",
        human_size(left.awake),
        human_size(left.budget)
    )
}

/// The memory guard's reason: the pass's memory over the budget, and the
/// site's last activity and memory.
fn memory_reason(s: &SiteReport, pick: MemoryPick) -> String {
    let quiet = pick.last_activity.map_or_else(
        || "no activity seen".to_owned(),
        |t| format!("last activity {}", ago(pick.at, t)),
    );
    format!(
        "memory guard: awake sites use {}, over the budget of {}; least recently active ({quiet}, {})",
        human_size(pick.awake),
        human_size(pick.budget),
        human_size(s.memory.unwrap_or(0))
    )
}

fn heal_word(s: &SiteReport) -> &'static str {
    s.heal.as_ref().map_or("-", |h| h.status.as_str())
}

/// The reason column: the reason, then what healing found when it found
/// anything to say.
fn reason_text(s: &SiteReport) -> String {
    let mut reason = reason(s);
    if let Some(h) = s
        .heal
        .as_ref()
        .filter(|h| h.status != crate::heal::HealStatus::Ok)
    {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str(&format!("heal: {}", h.detail));
    }
    reason.replace(['\n', '\r', '\t'], " ")
}

fn last_activity_text(s: &SiteReport) -> String {
    match s.last_activity() {
        Some(t) => super::ago(s.examined_at, t),
        None => "-".to_owned(),
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(super) fn unix<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unix_secs(*t))
}

pub(super) fn unix_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    t.map(unix_secs).serialize(s)
}

pub(super) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(super) fn secs_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs_f64()).serialize(s)
}

/// As people read it: a path that is not UTF-8 is still printed.
pub(super) fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&p.display())
}

/// The waker's numbers, as keys of the site (null when not read).
pub(super) fn activity<S: Serializer>(a: &Option<Activity>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Keys {
        wakes: Option<u64>,
        last_wake_ms: Option<u64>,
    }
    Keys {
        wakes: a.map(|a| a.wakes),
        last_wake_ms: a.and_then(|a| a.last_wake_ms),
    }
    .serialize(s)
}

/// The log check's cost, as keys of the site (null when not made).
pub(super) fn log<S: Serializer>(l: &Option<LogProbe>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Keys {
        log_frames_read: Option<u32>,
        log_bytes_read: Option<u64>,
    }
    Keys {
        log_frames_read: l.map(|l| l.frames),
        log_bytes_read: l.map(|l| l.bytes),
    }
    .serialize(s)
}

/// A site's JSON: its own fields, and the keys of its [`SiteResult`], which
/// programs read flat (`verdict`, `action`, `error`, ...).
#[derive(Serialize)]
struct SiteJson<'a> {
    #[serde(flatten)]
    site: &'a SiteReport,
    verdict: &'static str,
    reason: String,
    action: &'static str,
    error: Option<&'a str>,
    docker_unreachable: bool,
    memory_stop: bool,
    #[serde(serialize_with = "unix_opt")]
    last_activity: Option<SystemTime>,
    last_activity_ago_secs: Option<f64>,
}

impl<'a> SiteJson<'a> {
    fn of(s: &'a SiteReport) -> Self {
        let problem = s.problem();
        SiteJson {
            site: s,
            verdict: verdict_word(s),
            reason: reason(s),
            action: action_word(s),
            error: problem.map(|p: &SiteProblem| p.message.as_str()),
            docker_unreachable: problem.is_some_and(|p| p.unreachable),
            memory_stop: s.memory_stop(),
            last_activity: s.last_activity(),
            last_activity_ago_secs: s.last_activity().map(|t| {
                s.examined_at
                    .duration_since(t)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            }),
        }
    }
}

pub(super) fn sites<S: Serializer>(sites: &[SiteReport], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(sites.iter().map(SiteJson::of))
}

/// The plan as an aligned table, one site a line, reason last.
pub fn render_table(report: &Report) -> String {
    let header = [
        "SITE",
        "STATE",
        "LAST ACTIVITY",
        "TIMEOUT",
        "VERDICT",
        "ACTION",
        "HEAL",
        "REASON",
    ];
    let rows: Vec<[String; 8]> = report
        .sites
        .iter()
        .map(|s| {
            [
                s.site.clone(),
                s.state.map_or_else(|| "-".to_owned(), |st| st.to_string()),
                last_activity_text(s),
                s.timeout.map_or_else(|| "-".to_owned(), human),
                verdict_word(s).to_owned(),
                action_word(s).to_owned(),
                heal_word(s).to_owned(),
                reason_text(s),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    let mode = if report.dry_run { ", dry run" } else { "" };
    let errors = report.sites.iter().filter(|s| s.is_error()).count();
    let acted = report
        .sites
        .iter()
        .filter(|s| matches!(s.outcome(), Some(Outcome::Stopped | Outcome::Paused)))
        .count();
    let healed = report
        .sites
        .iter()
        .filter(|s| {
            s.heal
                .as_ref()
                .is_some_and(|h| h.status == crate::heal::HealStatus::Healed)
        })
        .count();
    let heal = match &report.heal {
        HealMode::Off => ", healing off".to_owned(),
        HealMode::NoSystemd => ", no systemd to heal".to_owned(),
        HealMode::Checked => format!(", {healed} healed"),
        HealMode::Failed { error } => format!(", HEALING FAILED: {error}"),
    };
    let memory = report.memory.map_or_else(String::new, |m| {
        format!(
            ", awake memory {} -> {} (budget {}{})",
            human_size(m.awake_before),
            human_size(m.awake_after),
            human_size(m.budget),
            if m.unreadable > 0 {
                format!(", {} unreadable", m.unreadable)
            } else {
                String::new()
            }
        )
    });
    out.push_str(&format!(
        "{} sites, {} {}, {} errors{heal}{memory}{}{} in {}\n",
        report.sites.len(),
        acted,
        match report.action {
            super::Action::Stop => "stopped",
            super::Action::Pause => "paused",
        },
        errors,
        mode,
        if report.interrupted {
            ", INTERRUPTED"
        } else {
            ""
        },
        human(report.elapsed),
    ));
    out
}

/// The plan as one JSON object: the pass's settings, `exit_code`, and
/// `sites`, one object per conf file. Times are Unix seconds (fractional).
pub fn render_json(report: &Report) -> Result<Value, serde_json::Error> {
    #[derive(Serialize)]
    struct Plan<'a> {
        #[serde(flatten)]
        report: &'a Report,
        exit_code: u8,
    }
    serde_json::to_value(Plan {
        report,
        exit_code: report.exit_code(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Examination, Verdict};
    use super::*;
    use crate::docker::ContainerState;
    use crate::exit;
    use std::path::PathBuf;
    use std::time::Duration;

    fn sample() -> Report {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_462_970);
        let mut idle = SiteReport::new("a.example".into(), PathBuf::from("/s/a.example.conf"));
        idle.examined_at = now;
        idle.container = Some("a.example.fpm".into());
        idle.state = Some(ContainerState::Running);
        idle.timeout = Some(Duration::from_secs(1200));
        idle.result = SiteResult::Examined(Examination {
            verdict: Verdict::Idle,
            reason: "no connection and no log output for 20m".into(),
            last_activity: Some(now - Duration::from_secs(3600)),
            outcome: Outcome::Stopped,
            memory_pick: None,
            memory_left: None,
        });
        let mut bad = SiteReport::new("bad name.conf".into(), PathBuf::from("/s/bad name.conf"));
        bad.examined_at = now;
        bad.result = SiteResult::Error(SiteProblem {
            message: "conf file /s/bad name.conf does not name a valid site".into(),
            unreachable: false,
        });
        Report {
            action: Action::Stop,
            dry_run: false,
            interrupted: false,
            sites: vec![idle, bad],
            elapsed: Duration::from_millis(1500),
            heal: HealMode::Checked,
            memory: None,
            finished_at: now,
        }
    }

    #[test]
    fn changes_only_leaves_out_the_sites_left_alone() {
        let mut report = sample();
        let mut busy = report.sites[0].clone();
        busy.site = "busy.example".into();
        if let SiteResult::Examined(e) = &mut busy.result {
            e.verdict = Verdict::ActiveWaker;
            e.outcome = Outcome::None;
        }
        assert!(busy.is_quiet() && !report.sites[0].is_quiet() && !report.sites[1].is_quiet());
        report.sites.push(busy);
        let names = |r: &Report| r.sites.iter().map(|s| s.site.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&report.changes_only()),
            ["a.example", "bad name.conf"]
        );
        assert_eq!(report.changes_only().exit_code(), report.exit_code());
    }

    #[test]
    fn table() {
        let t = render_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("SITE "), "{t}");
        assert!(lines[1].contains("running"), "{t}");
        assert!(lines[1].contains("1h ago"), "{t}");
        assert!(lines[1].contains("20m"), "{t}");
        assert!(lines[1].contains("idle"), "{t}");
        assert!(lines[1].contains("stopped"), "{t}");
        assert!(lines[2].contains("error"), "{t}");
        assert!(lines[3].contains("2 sites, 1 stopped, 1 errors"), "{t}");
        // Columns line up: VERDICT starts at the same offset in every row.
        let col = lines[0].find("VERDICT").expect("header");
        assert_eq!(&lines[1][col..col + 4], "idle", "{t}");
        assert_eq!(&lines[2][col..col + 5], "error", "{t}");
    }

    #[test]
    fn json() {
        let r = sample();
        assert_eq!(r.exit_code(), exit::FAILURE);
        let v = render_json(&r).expect("json");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["action"], "stop");
        assert_eq!(v["sites"][0]["verdict"], "idle");
        assert_eq!(v["sites"][0]["action"], "stopped");
        assert_eq!(v["sites"][0]["state"], "running");
        assert_eq!(v["sites"][0]["timeout_secs"], 1200.0);
        assert_eq!(v["sites"][0]["last_activity_ago_secs"], 3600.0);
        assert_eq!(v["sites"][0]["error"], Value::Null);
        assert_eq!(v["sites"][1]["verdict"], "error");
        assert!(
            v["sites"][1]["error"]
                .as_str()
                .expect("string")
                .contains("bad name.conf")
        );
    }

    /// Each outcome's reason, as the pass wrote it as text before outcomes
    /// carried their data.
    #[test]
    fn reasons_come_from_the_outcome() {
        let mut r = sample();
        let now = r.sites[0].examined_at;
        let site = &mut r.sites[0];
        let cases = [
            (
                Outcome::Interrupted,
                "no connection and no log output for 20m (interrupted before acting)",
            ),
            (
                Outcome::Skipped(Skip::WakerRequest),
                "no connection and no log output for 20m (re-check: a request is at php-fpm through the waker; left running)",
            ),
            (
                Outcome::Skipped(Skip::NotQuiet(NotQuiet::Verdict {
                    verdict: Verdict::Busy,
                    reason: "2 connections open".into(),
                })),
                "no connection and no log output for 20m (re-check: 2 connections open; left running)",
            ),
            (
                Outcome::Skipped(Skip::NotQuiet(NotQuiet::NoStartTime)),
                "no connection and no log output for 20m (re-check: container has no start time; left running)",
            ),
            (
                Outcome::Skipped(Skip::NotQuiet(NotQuiet::Recent {
                    since: now - Duration::from_secs(30),
                    min_idle: Duration::from_secs(60),
                    at: now,
                })),
                "no connection and no log output for 20m (re-check: active 30.0s ago, less than --memory-min-idle 1m ago; left running)",
            ),
            (
                Outcome::Skipped(Skip::ContainerChanged {
                    state: ContainerState::Running,
                    started_at: Some(now - Duration::from_secs(3)),
                    seen_at: now,
                }),
                "re-check: container is running (started 3.0s ago) since it was examined",
            ),
            (
                Outcome::Skipped(Skip::ContainerChanged {
                    state: ContainerState::Exited,
                    started_at: None,
                    seen_at: now,
                }),
                "re-check: container is exited (started never) since it was examined",
            ),
            (
                Outcome::Skipped(Skip::NotDrained(NotDrained::StillServing {
                    serving: 2,
                    queued: 1,
                    timeout: Duration::from_secs(30),
                })),
                "no connection and no log output for 20m (drain: php-fpm still serving 2 request(s), 1 queued, after --drain-timeout 30.0s; left running)",
            ),
            (
                Outcome::Skipped(Skip::NotDrained(NotDrained::Failed("cannot move".into()))),
                "no connection and no log output for 20m (drain: cannot move; left running)",
            ),
            (
                Outcome::Skipped(Skip::NotDrained(NotDrained::NoStatusPage)),
                "no connection and no log output for 20m (drain: php-fpm's status page was not \
                 read, so nothing tells when php-fpm has finished the requests nginx's direct \
                 mode sends straight to it. Fix: add `pm.status_path = /status` to the pool (or \
                 run with --proxy-only when nginx only talks to the waker); left running)",
            ),
        ];
        for (outcome, want) in cases {
            let SiteResult::Examined(e) = &mut site.result else {
                panic!("not examined");
            };
            e.outcome = outcome;
            assert_eq!(reason(site), want);
            assert_eq!(verdict_word(site), "idle");
            assert!(!site.is_error());
        }
        let SiteResult::Examined(e) = &mut site.result else {
            panic!("not examined");
        };
        e.outcome = Outcome::Skipped(Skip::NotIdle {
            verdict: Verdict::Busy,
            reason: "1 request in flight".into(),
        });
        assert_eq!(reason(site), "re-check: 1 request in flight");
        assert_eq!(
            verdict_word(site),
            "busy",
            "the re-check's verdict is shown"
        );
    }

    /// A site the memory guard could not choose says so, with the fix.
    #[test]
    fn memory_guard_says_why_it_left_a_site() {
        let mut r = sample();
        let site = &mut r.sites[0];
        let SiteResult::Examined(e) = &mut site.result else {
            panic!("not examined");
        };
        e.verdict = Verdict::Young;
        e.reason = "container started 2m ago, less than the timeout of 1h".into();
        e.outcome = Outcome::None;
        e.memory_left = Some(MemoryLeft {
            awake: 12 << 20,
            budget: 8 << 20,
            why: MemoryExempt::NoStatusPage,
        });
        assert_eq!(
            reason(site),
            "container started 2m ago, less than the timeout of 1h; memory guard: awake sites \
             use 12.0 MiB, over the budget of 8.0 MiB, but this site is never stopped for \
             memory: php-fpm's status page gives nothing, so nothing tells when php-fpm has \
             finished the requests nginx's direct mode sends straight to it. Fix: add \
             `pm.status_path = /status` to the pool (or run with --proxy-only when nginx only \
             talks to the waker)"
        );
        assert!(!site.is_error() && !site.memory_stop());
    }

    #[test]
    fn exit_codes() {
        let mut r = sample();
        r.sites.truncate(1);
        assert_eq!(r.exit_code(), exit::OK);
        r.sites[0].result = SiteResult::Error(SiteProblem {
            message: "cannot reach".into(),
            unreachable: true,
        });
        assert_eq!(r.exit_code(), exit::UNAVAILABLE);
        r.interrupted = true;
        assert_eq!(r.exit_code(), exit::TEMPFAIL);
    }
}
