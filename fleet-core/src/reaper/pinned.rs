//! Pins the plan's JSON and table for one report of every kind of site, so
//! that a change of the report's types cannot change what programs parse.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Action, Examination, HealMode, MemoryPick, MemorySummary, Outcome, Report, SiteProblem,
    SiteReport, SiteResult, Skip, Stage, Verdict, render_json, render_table,
};
use crate::docker::ContainerState;
use crate::docker::reap::LogProbe;
use crate::heal::{Heal, HealStatus};
use crate::state::Activity;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250)
}

fn examined(name: &str, state: ContainerState) -> SiteReport {
    let mut r = SiteReport::new(name.into(), PathBuf::from(format!("/s/{name}.conf")));
    r.examined_at = at(1_795_462_970);
    r.container = Some(format!("{name}.fpm"));
    r.container_id = Some("abc".into());
    r.state = Some(state);
    r.started_at = Some(at(1_795_400_000));
    r.timeout = Some(Duration::from_secs(1200));
    r.elapsed = Duration::from_millis(12);
    r
}

/// `r` examined with verdict `v`.
fn judged(mut r: SiteReport, v: Verdict, reason: &str, outcome: Outcome) -> SiteReport {
    r.result = SiteResult::Examined(Examination {
        verdict: v,
        reason: reason.into(),
        last_activity: None,
        outcome,
        memory_pick: None,
        memory_left: None,
    });
    r
}

fn examination(r: &mut SiteReport) -> &mut Examination {
    match &mut r.result {
        SiteResult::Examined(e) => e,
        other => panic!("not examined: {other:?}"),
    }
}

fn problem(message: &str, unreachable: bool) -> SiteProblem {
    SiteProblem {
        message: message.into(),
        unreachable,
    }
}

/// Idle and stopped; busy; an error before any verdict; a memory stop; a
/// failed stop; a log that could not be read; interrupted; skipped.
fn sites() -> Vec<SiteReport> {
    let mut idle = judged(
        examined("idle.example", ContainerState::Running),
        Verdict::Idle,
        "no connection and no log output for 20m",
        Outcome::Stopped,
    );
    examination(&mut idle).last_activity = Some(at(1_795_459_370));
    idle.activity = Some(Activity {
        wakes: 3,
        last_wake_ms: Some(1250),
        ..Activity::default()
    });
    idle.log = Some(LogProbe {
        after_cutoff: false,
        line_at: None,
        frames: 1,
        bytes: 40,
    });
    idle.heal = Some(Heal {
        status: HealStatus::Healed,
        detail: "restarted the socket unit".into(),
    });

    let mut busy = judged(
        examined("busy.example", ContainerState::Running),
        Verdict::Busy,
        "2 connections open",
        Outcome::None,
    );
    busy.heal = Some(Heal {
        status: HealStatus::Ok,
        detail: "listening".into(),
    });

    let mut bad = SiteReport::new("bad name.conf".into(), PathBuf::from("/s/bad name.conf"));
    bad.examined_at = at(1_795_462_970);
    bad.result = SiteResult::Error(problem(
        "conf file /s/bad name.conf does not name a valid site",
        false,
    ));

    let mut gone = examined("gone.example", ContainerState::Running);
    gone.state = None;
    gone.started_at = None;
    gone.result = SiteResult::Error(problem("cannot reach Docker", true));

    let mut memory = judged(
        examined("memory.example", ContainerState::Running),
        Verdict::ActiveWaker,
        "connection 1m 40s ago",
        Outcome::Stopped,
    );
    examination(&mut memory).last_activity = Some(at(1_795_462_870));
    examination(&mut memory).memory_pick = Some(MemoryPick {
        awake: 40 << 20,
        budget: 32 << 20,
        last_activity: Some(at(1_795_462_870)),
        at: at(1_795_462_970),
    });
    memory.memory = Some(30 << 20);

    let failed = judged(
        examined("failed.example", ContainerState::Running),
        Verdict::Idle,
        "no connection and no log output for 20m",
        Outcome::Failed(problem("Docker refused the stop", false)),
    );
    let unknown = judged(
        examined("unknown.example", ContainerState::Running),
        Verdict::Unknown,
        "could not read the log: Docker could not read the logs",
        Outcome::Unknown(problem("Docker could not read the logs", false)),
    );
    let unknown_state = judged(
        examined("unreadable.example", ContainerState::Running),
        Verdict::Unknown,
        "state file unreadable",
        Outcome::Unknown(problem("state file unreadable", false)),
    );
    let mut stopped_early = examined("early.example", ContainerState::Running);
    stopped_early.result = SiteResult::Interrupted(Stage::Examining);
    let late = judged(
        examined("late.example", ContainerState::Running),
        Verdict::Idle,
        "idle for 20m",
        Outcome::Interrupted,
    );
    let mut skipped = judged(
        examined("skipped.example", ContainerState::Paused),
        Verdict::Idle,
        "idle for 20m",
        Outcome::Skipped(Skip::NotIdle {
            verdict: Verdict::ActiveWaker,
            reason: "connection 2s ago".into(),
        }),
    );
    examination(&mut skipped).last_activity = Some(at(1_795_462_968));

    vec![
        idle,
        busy,
        bad,
        gone,
        memory,
        failed,
        unknown,
        unknown_state,
        stopped_early,
        late,
        skipped,
    ]
}

fn dry_sites() -> Vec<SiteReport> {
    let would = judged(
        examined("would.example", ContainerState::Running),
        Verdict::Idle,
        "idle for 20m",
        Outcome::WouldPause,
    );
    let asleep = judged(
        examined("asleep.example", ContainerState::Exited),
        Verdict::NotRunning,
        "container is exited",
        Outcome::None,
    );
    vec![would, asleep]
}

fn report() -> Report {
    Report {
        action: Action::Stop,
        dry_run: false,
        interrupted: false,
        sites: sites(),
        elapsed: Duration::from_millis(1500),
        heal: HealMode::Checked,
        memory: Some(MemorySummary {
            budget: 32 << 20,
            awake_before: 40 << 20,
            awake_after: 10 << 20,
            unreadable: 1,
        }),
        finished_at: at(1_795_462_971),
    }
}

fn dry_report() -> Report {
    Report {
        action: Action::Pause,
        dry_run: true,
        interrupted: true,
        sites: dry_sites(),
        elapsed: Duration::from_millis(20),
        heal: HealMode::Failed {
            error: "systemctl: no such file".into(),
        },
        memory: None,
        finished_at: at(1_795_462_971),
    }
}

const JSON: &str = r##"{
  "action": "stop",
  "dry_run": false,
  "elapsed_secs": 1.5,
  "exit_code": 69,
  "heal": {
    "mode": "checked"
  },
  "interrupted": false,
  "memory": {
    "awake_after_bytes": 10485760,
    "awake_before_bytes": 41943040,
    "budget_bytes": 33554432,
    "unreadable": 1
  },
  "sites": [
    {
      "action": "stopped",
      "conf": "/s/idle.example.conf",
      "container": "idle.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": {
        "detail": "restarted the socket unit",
        "status": "healed"
      },
      "last_activity": 1795459370.25,
      "last_activity_ago_secs": 3600.0,
      "last_wake_ms": 1250,
      "log_bytes_read": 40,
      "log_frames_read": 1,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "no connection and no log output for 20m",
      "site": "idle.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "idle",
      "wakes": 3
    },
    {
      "action": "none",
      "conf": "/s/busy.example.conf",
      "container": "busy.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": {
        "detail": "listening",
        "status": "ok"
      },
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "2 connections open",
      "site": "busy.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "busy",
      "wakes": null
    },
    {
      "action": "none",
      "conf": "/s/bad name.conf",
      "container": null,
      "docker_unreachable": false,
      "elapsed_secs": 0.0,
      "error": "conf file /s/bad name.conf does not name a valid site",
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "conf file /s/bad name.conf does not name a valid site",
      "site": "bad name.conf",
      "started_at": null,
      "state": null,
      "timeout_secs": null,
      "verdict": "error",
      "wakes": null
    },
    {
      "action": "none",
      "conf": "/s/gone.example.conf",
      "container": "gone.example.fpm",
      "docker_unreachable": true,
      "elapsed_secs": 0.012,
      "error": "cannot reach Docker",
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "cannot reach Docker",
      "site": "gone.example",
      "started_at": null,
      "state": null,
      "timeout_secs": 1200.0,
      "verdict": "error",
      "wakes": null
    },
    {
      "action": "stopped",
      "conf": "/s/memory.example.conf",
      "container": "memory.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": 1795462870.25,
      "last_activity_ago_secs": 100.0,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": 31457280,
      "memory_stop": true,
      "reason": "memory guard: awake sites use 40.0 MiB, over the budget of 32.0 MiB; least recently active (last activity 1m 40s ago, 30.0 MiB)",
      "site": "memory.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "active-waker",
      "wakes": null
    },
    {
      "action": "failed",
      "conf": "/s/failed.example.conf",
      "container": "failed.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": "Docker refused the stop",
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "Docker refused the stop",
      "site": "failed.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "idle",
      "wakes": null
    },
    {
      "action": "none",
      "conf": "/s/unknown.example.conf",
      "container": "unknown.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": "Docker could not read the logs",
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "could not read the log: Docker could not read the logs",
      "site": "unknown.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "unknown",
      "wakes": null
    },
    {
      "action": "none",
      "conf": "/s/unreadable.example.conf",
      "container": "unreadable.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": "state file unreadable",
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "state file unreadable",
      "site": "unreadable.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "unknown",
      "wakes": null
    },
    {
      "action": "interrupted",
      "conf": "/s/early.example.conf",
      "container": "early.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "interrupted while the site was examined",
      "site": "early.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "-",
      "wakes": null
    },
    {
      "action": "interrupted",
      "conf": "/s/late.example.conf",
      "container": "late.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "idle for 20m (interrupted before acting)",
      "site": "late.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "idle",
      "wakes": null
    },
    {
      "action": "skipped",
      "conf": "/s/skipped.example.conf",
      "container": "skipped.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": 1795462968.25,
      "last_activity_ago_secs": 2.0,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "re-check: connection 2s ago",
      "site": "skipped.example",
      "started_at": 1795400000.25,
      "state": "paused",
      "timeout_secs": 1200.0,
      "verdict": "active-waker",
      "wakes": null
    }
  ]
}"##;
const TABLE: &str = r##"SITE                STATE    LAST ACTIVITY  TIMEOUT  VERDICT       ACTION       HEAL    REASON
idle.example        running  1h ago         20m      idle          stopped      healed  no connection and no log output for 20m; heal: restarted the socket unit
busy.example        running  -              20m      busy          none         ok      2 connections open
bad name.conf       -        -              -        error         none         -       conf file /s/bad name.conf does not name a valid site
gone.example        -        -              20m      error         none         -       cannot reach Docker
memory.example      running  1m 40s ago     20m      active-waker  stopped      -       memory guard: awake sites use 40.0 MiB, over the budget of 32.0 MiB; least recently active (last activity 1m 40s ago, 30.0 MiB)
failed.example      running  -              20m      idle          failed       -       Docker refused the stop
unknown.example     running  -              20m      unknown       none         -       could not read the log: Docker could not read the logs
unreadable.example  running  -              20m      unknown       none         -       state file unreadable
early.example       running  -              20m      -             interrupted  -       interrupted while the site was examined
late.example        running  -              20m      idle          interrupted  -       idle for 20m (interrupted before acting)
skipped.example     paused   2.0s ago       20m      active-waker  skipped      -       re-check: connection 2s ago
11 sites, 2 stopped, 5 errors, 1 healed, awake memory 40.0 MiB -> 10.0 MiB (budget 32.0 MiB, 1 unreadable) in 1.5s
"##;
const DRY_JSON: &str = r##"{
  "action": "pause",
  "dry_run": true,
  "elapsed_secs": 0.02,
  "exit_code": 75,
  "heal": {
    "error": "systemctl: no such file",
    "mode": "failed"
  },
  "interrupted": true,
  "memory": null,
  "sites": [
    {
      "action": "would-pause",
      "conf": "/s/would.example.conf",
      "container": "would.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "idle for 20m",
      "site": "would.example",
      "started_at": 1795400000.25,
      "state": "running",
      "timeout_secs": 1200.0,
      "verdict": "idle",
      "wakes": null
    },
    {
      "action": "none",
      "conf": "/s/asleep.example.conf",
      "container": "asleep.example.fpm",
      "docker_unreachable": false,
      "elapsed_secs": 0.012,
      "error": null,
      "examined_at": 1795462970.25,
      "heal": null,
      "last_activity": null,
      "last_activity_ago_secs": null,
      "last_wake_ms": null,
      "log_bytes_read": null,
      "log_frames_read": null,
      "memory_bytes": null,
      "memory_stop": false,
      "reason": "container is exited",
      "site": "asleep.example",
      "started_at": 1795400000.25,
      "state": "exited",
      "timeout_secs": 1200.0,
      "verdict": "not-running",
      "wakes": null
    }
  ]
}"##;
const DRY_TABLE: &str = r##"SITE            STATE    LAST ACTIVITY  TIMEOUT  VERDICT      ACTION       HEAL  REASON
would.example   running  -              20m      idle         would-pause  -     idle for 20m
asleep.example  exited   -              20m      not-running  none         -     container is exited
2 sites, 0 paused, 0 errors, HEALING FAILED: systemctl: no such file, dry run, INTERRUPTED in 0.0s
"##;

#[test]
fn json_is_pinned() {
    let got = format!("{:#}", render_json(&report()).expect("json"));
    let dry = format!("{:#}", render_json(&dry_report()).expect("json"));
    if std::env::var_os("PIN_PRINT").is_some() {
        println!("JSON<<<{got}>>>\nDRY_JSON<<<{dry}>>>");
    }
    assert_eq!(got, JSON);
    assert_eq!(dry, DRY_JSON);
}

#[test]
fn table_is_pinned() {
    let got = render_table(&report());
    let dry = render_table(&dry_report());
    if std::env::var_os("PIN_PRINT").is_some() {
        println!("TABLE<<<{got}>>>\nDRY_TABLE<<<{dry}>>>");
    }
    assert_eq!(got, TABLE);
    assert_eq!(dry, DRY_TABLE);
}

const METRICS: &str = r##"# HELP fleet_site_state 1 for the state of the site's container after the reaper's pass (asleep, awake, paused), 0 for the others.
# TYPE fleet_site_state gauge
fleet_site_state{site="idle.example",state="asleep"} 1
fleet_site_state{site="idle.example",state="awake"} 0
fleet_site_state{site="idle.example",state="paused"} 0
fleet_site_state{site="busy.example",state="asleep"} 0
fleet_site_state{site="busy.example",state="awake"} 1
fleet_site_state{site="busy.example",state="paused"} 0
fleet_site_state{site="memory.example",state="asleep"} 1
fleet_site_state{site="memory.example",state="awake"} 0
fleet_site_state{site="memory.example",state="paused"} 0
fleet_site_state{site="failed.example",state="asleep"} 0
fleet_site_state{site="failed.example",state="awake"} 1
fleet_site_state{site="failed.example",state="paused"} 0
fleet_site_state{site="unknown.example",state="asleep"} 0
fleet_site_state{site="unknown.example",state="awake"} 1
fleet_site_state{site="unknown.example",state="paused"} 0
fleet_site_state{site="unreadable.example",state="asleep"} 0
fleet_site_state{site="unreadable.example",state="awake"} 1
fleet_site_state{site="unreadable.example",state="paused"} 0
fleet_site_state{site="early.example",state="asleep"} 0
fleet_site_state{site="early.example",state="awake"} 1
fleet_site_state{site="early.example",state="paused"} 0
fleet_site_state{site="late.example",state="asleep"} 0
fleet_site_state{site="late.example",state="awake"} 1
fleet_site_state{site="late.example",state="paused"} 0
fleet_site_state{site="skipped.example",state="asleep"} 0
fleet_site_state{site="skipped.example",state="awake"} 0
fleet_site_state{site="skipped.example",state="paused"} 1
# HELP fleet_site_seconds_since_activity Seconds since the site's last activity (waker connection or container log line) seen by the pass.
# TYPE fleet_site_seconds_since_activity gauge
fleet_site_seconds_since_activity{site="idle.example"} 3601
fleet_site_seconds_since_activity{site="memory.example"} 101
fleet_site_seconds_since_activity{site="skipped.example"} 3
# HELP fleet_site_wakes_total Wakes done by the site's current waker process (resets when the waker restarts).
# TYPE fleet_site_wakes_total counter
fleet_site_wakes_total{site="idle.example"} 3
# HELP fleet_site_last_wake_seconds Duration of the site's last wake that started or unpaused its container (a cold start), from the waker's state file.
# TYPE fleet_site_last_wake_seconds gauge
fleet_site_last_wake_seconds{site="idle.example"} 1.25
# HELP fleet_site_memory_bytes Memory of the site's awake container (cgroup usage minus inactive file cache) before the memory guard acted.
# TYPE fleet_site_memory_bytes gauge
fleet_site_memory_bytes{site="memory.example"} 31457280
# HELP fleet_site_socket_healthy 1 when the site's socket unit was active and listening before the pass or was healed by it, 0 otherwise.
# TYPE fleet_site_socket_healthy gauge
fleet_site_socket_healthy{site="idle.example"} 1
fleet_site_socket_healthy{site="busy.example"} 1
# HELP fleet_reaper_sites Listed sites by the state of their container after the pass.
# TYPE fleet_reaper_sites gauge
fleet_reaper_sites{state="asleep"} 2
fleet_reaper_sites{state="awake"} 6
fleet_reaper_sites{state="paused"} 1
# HELP fleet_reaper_actions Containers the pass stopped or paused, by reason (idle timeout or memory guard).
# TYPE fleet_reaper_actions gauge
fleet_reaper_actions{action="stopped",reason="idle"} 1
fleet_reaper_actions{action="stopped",reason="memory"} 1
fleet_reaper_actions{action="paused",reason="idle"} 0
# HELP fleet_reaper_healed Socket units the pass healed.
# TYPE fleet_reaper_healed gauge
fleet_reaper_healed 1
# HELP fleet_reaper_site_errors Conf files or sites the pass had an error with.
# TYPE fleet_reaper_site_errors gauge
fleet_reaper_site_errors 5
# HELP fleet_reaper_awake_memory_bytes Memory of the awake sites' containers, before and after the memory guard.
# TYPE fleet_reaper_awake_memory_bytes gauge
fleet_reaper_awake_memory_bytes{when="before"} 41943040
fleet_reaper_awake_memory_bytes{when="after"} 10485760
# HELP fleet_reaper_memory_budget_bytes The memory guard's budget (--memory-budget).
# TYPE fleet_reaper_memory_budget_bytes gauge
fleet_reaper_memory_budget_bytes 33554432
# HELP fleet_reaper_pass_duration_seconds How long the reaper's last pass took.
# TYPE fleet_reaper_pass_duration_seconds gauge
fleet_reaper_pass_duration_seconds 1.5
# HELP fleet_reaper_last_pass_timestamp_seconds When the reaper's last pass ended (Unix time).
# TYPE fleet_reaper_last_pass_timestamp_seconds gauge
fleet_reaper_last_pass_timestamp_seconds 1795462971.25
# HELP fleet_reaper_interrupted 1 when the last pass was interrupted before it finished.
# TYPE fleet_reaper_interrupted gauge
fleet_reaper_interrupted 0
"##;

#[test]
fn metrics_are_pinned() {
    let got = crate::metrics::render(&report());
    if std::env::var_os("PIN_PRINT").is_some() {
        println!("METRICS<<<{got}>>>");
    }
    assert_eq!(got, METRICS);
}
