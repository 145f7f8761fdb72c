//! The plan output: a table for people, JSON for programs. Pure.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{HealMode, Report, SiteReport, human};
use crate::memory::human_size;

fn verdict_word(s: &SiteReport) -> &'static str {
    match s.verdict {
        Some(v) => v.as_str(),
        None if s.problem.is_some() => "error",
        None => "-",
    }
}

fn heal_word(s: &SiteReport) -> &'static str {
    s.heal.as_ref().map_or("-", |h| h.status.as_str())
}

/// The reason column: the verdict's (or the memory guard's) reason, then
/// what healing found when it found anything to say.
fn reason_text(s: &SiteReport) -> String {
    let mut reason = s.reason.clone();
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
    match s.last_activity {
        Some(t) => super::ago(s.examined_at, t),
        None => "-".to_owned(),
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
                s.outcome.as_str().to_owned(),
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
        .filter(|s| matches!(s.outcome, super::Outcome::Stopped | super::Outcome::Paused))
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
        HealMode::Failed(e) => format!(", HEALING FAILED: {e}"),
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

fn site_json(s: &SiteReport) -> Value {
    json!({
        "site": s.site,
        "conf": s.conf.display().to_string(),
        "container": s.container,
        "state": s.state,
        "started_at": s.started_at.map(unix),
        "last_activity": s.last_activity.map(unix),
        "last_activity_ago_secs": s.last_activity.map(|t| {
            s.examined_at.duration_since(t).map(|d| d.as_secs_f64()).unwrap_or(0.0)
        }),
        "timeout_secs": s.timeout.map(|t| t.as_secs_f64()),
        "verdict": verdict_word(s),
        "reason": s.reason,
        "action": s.outcome.as_str(),
        "error": s.problem.as_ref().map(|p| p.message.clone()),
        "heal": s.heal.as_ref().map(|h| json!({"status": h.status, "detail": h.detail})),
        "memory_bytes": s.memory,
        "memory_stop": s.memory_stop,
        "wakes": s.activity.map(|a| a.wakes),
        "last_wake_ms": s.activity.and_then(|a| a.last_wake_ms),
        "docker_unreachable": s.problem.as_ref().is_some_and(|p| p.unreachable),
        "log_frames_read": s.log.map(|l| l.frames),
        "log_bytes_read": s.log.map(|l| l.bytes),
        "examined_at": unix(s.examined_at),
        "elapsed_secs": s.elapsed.as_secs_f64(),
    })
}

/// The plan as one JSON object: the pass's settings, `exit_code`, and
/// `sites`, one object per conf file. Times are Unix seconds (fractional).
pub fn render_json(report: &Report) -> Value {
    json!({
        "action": report.action,
        "dry_run": report.dry_run,
        "interrupted": report.interrupted,
        "exit_code": report.exit_code(),
        "elapsed_secs": report.elapsed.as_secs_f64(),
        "heal": match &report.heal {
            HealMode::Off => json!({"mode": "off"}),
            HealMode::NoSystemd => json!({"mode": "no-systemd"}),
            HealMode::Checked => json!({"mode": "checked"}),
            HealMode::Failed(e) => json!({"mode": "failed", "error": e}),
        },
        "memory": report.memory.map(|m| json!({
            "budget_bytes": m.budget,
            "awake_before_bytes": m.awake_before,
            "awake_after_bytes": m.awake_after,
            "unreadable": m.unreadable,
        })),
        "sites": report.sites.iter().map(site_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Outcome, SiteProblem, Verdict};
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
        idle.last_activity = Some(now - Duration::from_secs(3600));
        idle.verdict = Some(Verdict::Idle);
        idle.reason = "no connection and no log output for 20m".into();
        idle.outcome = Outcome::Stopped;
        let mut bad = SiteReport::new("bad name.conf".into(), PathBuf::from("/s/bad name.conf"));
        bad.examined_at = now;
        bad.reason = "conf file /s/bad name.conf does not name a valid site".into();
        bad.problem = Some(SiteProblem {
            message: bad.reason.clone(),
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
        let v = render_json(&r);
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

    #[test]
    fn exit_codes() {
        let mut r = sample();
        r.sites.truncate(1);
        assert_eq!(r.exit_code(), exit::OK);
        r.sites[0].problem = Some(SiteProblem {
            message: "cannot reach".into(),
            unreachable: true,
        });
        assert_eq!(r.exit_code(), exit::UNAVAILABLE);
        r.interrupted = true;
        assert_eq!(r.exit_code(), exit::TEMPFAIL);
    }
}
