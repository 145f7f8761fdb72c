//! The reaper's fleet duties (issue 15, items 4–6): self-healing of socket
//! units under a real systemd, the host memory guard against real
//! containers' cgroups, and the metrics file read by a real Prometheus
//! text-format parser.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use serde_json::Value;

use crate::reaper::{List, assert_outcome, new_sites};
use crate::support::assert::{plan_entry, says_hello};
use crate::support::nsystemd::{
    FAILING_SERVICE_DROPIN, REAPER_LOG, RECORD_REAPER_RUNS, boot_for, drive_socket_into_limit,
    install_reaper, reaper_runs,
};
use crate::support::reaper::{ReaperExt as _, RunExt as _};
use crate::support::wake::sleep_request;
use crate::support::{self, SiteOptions, TestSite, note, require, wait_until};

// ---------------------------------------------------------------------------
// Self-healing
// ---------------------------------------------------------------------------

/// Inside the namespace: the plan (stdout) of the reaper runs (their stderr
/// goes to `REAPER_LOG`).
const PLAN: &str = "/run/fleet-reaper.plan";

#[test]
fn one_timer_run_heals_a_socket_that_hit_its_limit_without_touching_the_container() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let socket_unit = format!("fleet-waker@{name}.socket");
    site.write_conf("1h");
    // The container runs (warm traffic of nginx's direct mode could be
    // reaching it): healing must leave it exactly as it is.
    site.start();
    let run_before = site.started_at();

    let show = drive_socket_into_limit(&ns, &site);
    note!("{socket_unit}: {show}");
    // The cause goes away, but nobody runs fleet-renew: the site stays dark.
    ns.remove_unit(FAILING_SERVICE_DROPIN);
    ns.systemctl_ok(&["daemon-reload"]);
    assert!(
        support::wake::hello(&site.waker_socket()).is_err(),
        "still dark before the reaper runs"
    );

    // The shipped units, the timer made to fire once, right away.
    install_reaper(
        &ns,
        &format!(
            "Environment=FLEET_SITES_DIR=/run/fleet-sites\nStandardOutput=append:{PLAN}\n\
             StandardError=append:{REAPER_LOG}\n{RECORD_REAPER_RUNS}"
        ),
        "[Timer]\nOnCalendar=\nOnActiveSec=1ms\nAccuracySec=10ms\n",
    );
    ns.systemctl_ok(&["start", "fleet-reaper.timer"]);
    let read = |p: &str| std::fs::read_to_string(ns.path(Path::new(p))).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(60), || !reaper_runs(&ns).is_empty()),
        "the timer never ran the reaper; systemd:\n{}",
        ns.log_text()
    );
    let (plan, log) = (read(PLAN), read(REAPER_LOG));
    note!("the timer's run:\n{plan}{log}");
    assert_eq!(
        reaper_runs(&ns),
        ["success exited 0"],
        "plan:\n{plan}\nlog:\n{log}"
    );
    let line = plan
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no plan line for {name}:\n{plan}"));
    assert!(line.contains(" healed "), "{line}");
    assert!(line.contains("socket unit was failed"), "{line}");
    assert!(plan.contains("1 healed"), "{plan}");

    // Healed: active and listening, by that one run.
    assert_eq!(ns.show(&socket_unit, "ActiveState"), "active");
    assert_eq!(site.state(), "running");
    assert_eq!(site.started_at(), run_before, "the container was restarted");
    // The next request succeeds, with no human in between.
    says_hello(&site, "request after healing", String::new);
    assert_eq!(reaper_runs(&ns).len(), 1, "one run healed it");

    // A healthy socket is left alone by the next pass (no systemctl step),
    // and its sandbox keeps a reasonable exposure.
    let reaper = support::bin("fleet-reaper").display().to_string();
    let args = ["--sites-dir", "/run/fleet-sites", "--format", "json"];
    let out = ns.run(&reaper, &args);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan is JSON");
    assert_eq!(plan["sites"][0]["heal"]["status"], "ok", "{plan}");
    assert_eq!(plan["heal"]["mode"], "checked", "{plan}");
    ns.assert_exposure("fleet-reaper.service", 2.5);
}

// ---------------------------------------------------------------------------
// The memory guard
// ---------------------------------------------------------------------------

/// `docker stats`' memory use of `container`, in bytes.
fn docker_stats_bytes(container: &str) -> u64 {
    let format = "{{.MemUsage}}";
    let out = support::docker_ok(&["stats", "--no-stream", "--format", format, container]);
    let used = out.split('/').next().unwrap_or_default().trim();
    let (num, unit) = used.split_at(used.find(char::is_alphabetic).unwrap_or(used.len()));
    let num: f64 = num.trim().parse().unwrap_or_else(|_| panic!("{out}"));
    let power = ["B", "KiB", "MiB", "GiB"]
        .iter()
        .position(|u| *u == unit)
        .unwrap_or_else(|| panic!("unit in {out:?}"));
    (num * 1024f64.powi(power as i32)) as u64
}

#[test]
fn memory_budget_stops_the_least_recently_active_never_a_busy_one() {
    require!(Docker, PhpFpm);
    let [busy, a, b, c] = new_sites();
    let all = [&busy, &a, &b, &c];
    // Far from idle by the timeout: only the memory guard may stop them.
    let list = List::of(&all, "1h");
    let run_dir = support::temp_dir("run");
    for s in all {
        s.start();
    }
    let now = SystemTime::now();
    let ago = |s: u64| Some(now - Duration::from_secs(s));
    // The busy one is the least recently active of all (a connection open
    // for an hour, through a waker that lives: this test process).
    let me = std::process::id();
    list.store_state(&busy, me, 1, ago(3600), None);
    list.store_state(&a, me, 0, ago(601), ago(600));
    list.store_state(&b, me, 0, ago(301), ago(300));
    list.store_state(&c, me, 0, ago(121), ago(120));
    // Quiet for --memory-min-idle since the containers started: the elapsed
    // time is the very condition the guard checks.
    std::thread::sleep(Duration::from_millis(1100));
    let guard = |budget: &str| {
        let r = list.reaper().json().arg("--run-dir").arg(run_dir.path());
        r.args(["--memory-min-idle", "1s", "--memory-budget", budget])
    };

    // A dry run with a budget of one byte measures every awake container
    // and would stop every idle-enough one, not the busy one.
    let dry = guard("1").arg("--dry-run").exits(0);
    let plan = dry.plan();
    let mem = all.map(|s| {
        let e = plan_entry(&plan, s.name());
        e["memory_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no memory for {}: {e}", s.name()))
    });
    let total = plan["memory"]["awake_before_bytes"]
        .as_u64()
        .expect("total");
    assert_eq!(total, mem.iter().sum::<u64>(), "{plan}");
    let mut compared = 0;
    for (s, m) in all.iter().zip(&mem) {
        // An idle php-fpm with its workers: a few MiB, never nothing, never
        // the whole host.
        assert!((1 << 20..64 << 20).contains(m), "php-fpm's memory: {m}");
        // The cgroup figure is the one docker stats shows (same rule:
        // usage minus inactive file cache), within what changes between two
        // reads. Under load Docker's stats collector sometimes answers 0 for
        // a container for many seconds (seen with engine 20.10); such a
        // container is not compared.
        let mut docker = 0;
        wait_until(Duration::from_secs(10), || {
            docker = docker_stats_bytes(s.container());
            docker > 0
        });
        note!(
            "{}: fleet-reaper {m} B, docker stats {docker} B",
            s.container()
        );
        if docker == 0 {
            continue;
        }
        compared += 1;
        assert!(
            m.abs_diff(docker) <= (docker / 4).max(2 << 20),
            "{}: reaper {m} vs docker stats {docker}",
            s.container()
        );
    }
    note!("{compared} of 4 compared with docker stats");
    assert_outcome(&dry, busy.name(), ("busy", "none"));
    for s in [&a, &b, &c] {
        let e = dry.site(s.name());
        assert_eq!(e["action"], "would-stop", "{e}");
        assert_eq!(e["memory_stop"], true, "{e}");
    }
    assert!(
        all.iter().all(|s| s.state() == "running"),
        "a dry run stops nothing"
    );

    // A budget that needs a and half of b freed: a and b (least recently
    // active first) are stopped, c is not, and never the busy one.
    let budget = total - mem[1] - mem[2] / 2;
    let run = guard(&budget.to_string()).exits(0);
    for s in [&a, &b] {
        let e = run.site(s.name());
        assert_eq!(
            (e["action"].as_str(), e["memory_stop"].as_bool()),
            (Some("stopped"), Some(true)),
            "{e}"
        );
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("memory guard:"), "{reason}");
        assert!(reason.contains("least recently active"), "{reason}");
        assert_eq!(s.state(), "exited", "{}", s.name());
    }
    for s in [&busy, &c] {
        let e = run.site(s.name());
        assert_eq!(e["action"], "none", "{e}");
        assert_eq!(s.state(), "running", "{}", s.name());
    }
    assert_eq!(run.site(busy.name())["verdict"], "busy");
    let m = &run.plan()["memory"];
    note!("budget {budget} B; memory guard: {m}");
    let after = m["awake_after_bytes"].as_u64().expect("after");
    assert!(after <= budget, "{m}");
    assert!(
        m["awake_before_bytes"].as_u64().expect("before") > budget,
        "{m}"
    );
}

/// In direct mode nginx sends requests straight to php-fpm, so a pool with
/// no status page gives the reaper no way to see them or wait for them: over
/// its budget, the memory guard still leaves such a site running (and says
/// why), and a request at php-fpm meanwhile is answered, not cut.
#[test]
fn memory_guard_never_stops_a_direct_mode_site_without_a_status_page() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default().status_page(false));
    // Far from idle by the timeout: only the memory guard could stop it.
    site.write_conf("1h");
    let run_before = site.started_at();
    // Quiet for --memory-min-idle since the container started.
    std::thread::sleep(Duration::from_millis(1100));
    // A request as nginx's direct mode sends it, in flight during the pass.
    let request = sleep_request(&site.fpm_socket(), "3");
    std::thread::sleep(Duration::from_millis(300));
    let run = support::reaper::over(&site)
        .args([
            "--no-heal",
            "--memory-min-idle",
            "1s",
            "--memory-budget",
            "1",
        ])
        .exits(0);
    let e = run.site(site.name());
    assert_eq!(e["action"], "none", "{e}");
    assert_eq!(e["memory_stop"], false, "{e}");
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("memory guard") && reason.contains("status page"),
        "the plan says why the guard left it: {reason}"
    );
    let answer = request
        .join()
        .expect("request thread")
        .unwrap_or_else(|err| panic!("the request in flight was cut: {err}\n{run}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(site.state(), "running");
    assert_eq!(site.started_at(), run_before, "the container was restarted");
    let m = &run.plan()["memory"];
    assert!(m["awake_after_bytes"].as_u64() > Some(1), "still over: {m}");
}

// ---------------------------------------------------------------------------
// The metrics file
// ---------------------------------------------------------------------------

type Metrics = MetricsExposition<PrometheusType, PrometheusValue>;

fn gauge(m: &Metrics, family: &str, labels: &[&str]) -> f64 {
    let labels: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
    let f = m
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family} among {:?}", m.families.keys()));
    let sample = f
        .get_sample_by_label_values(&labels)
        .unwrap_or_else(|| panic!("no sample {family}{labels:?}"));
    match &sample.value {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        other => panic!("{family}: {other:?}"),
    }
}

#[test]
fn metrics_file_parses_as_prometheus_text_and_is_replaced_atomically() {
    require!(Docker, PhpFpm);
    let [awake, asleep] = new_sites();
    let list = List::of(&[&awake, &asleep], "1h");
    awake.start();
    let now = SystemTime::now();
    fleet_core::state::store(
        &list.state_file(&awake),
        &fleet_core::state::Activity {
            pid: Some(std::process::id()),
            last_start: Some(now - Duration::from_secs(31)),
            last_end: Some(now - Duration::from_secs(30)),
            wakes: 3,
            last_wake_ms: Some(1250),
            ..Default::default()
        },
    )
    .expect("state file");
    let dir = support::temp_dir("metrics");
    let path = dir.path().join("fleet.prom");
    let metrics = list
        .reaper()
        .args(["--memory-budget", "64G", "--metrics-file"])
        .arg(&path);
    let run = metrics.exits(0);
    let text = std::fs::read_to_string(&path).expect("metrics file");
    note!("metrics file:\n{text}");
    let m = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("not Prometheus text format ({e:?}):\n{text}"));
    let kind = |family: &str| &m.families[family].family_type;
    assert_eq!(kind("fleet_site_state"), &PrometheusType::Gauge);
    assert_eq!(kind("fleet_site_wakes_total"), &PrometheusType::Counter);
    let (up, down) = (awake.name(), asleep.name());
    assert_eq!(gauge(&m, "fleet_site_state", &[up, "awake"]), 1.0);
    assert_eq!(gauge(&m, "fleet_site_state", &[up, "asleep"]), 0.0);
    assert_eq!(gauge(&m, "fleet_site_state", &[down, "asleep"]), 1.0);
    assert_eq!(gauge(&m, "fleet_site_state", &[down, "paused"]), 0.0);
    assert_eq!(gauge(&m, "fleet_site_wakes_total", &[up]), 3.0);
    assert_eq!(gauge(&m, "fleet_site_last_wake_seconds", &[up]), 1.25);
    let since = gauge(&m, "fleet_site_seconds_since_activity", &[up]);
    assert!((30.0..120.0).contains(&since), "{since}");
    assert!(gauge(&m, "fleet_site_memory_bytes", &[up]) > f64::from(1u32 << 20));
    assert_eq!(gauge(&m, "fleet_reaper_sites", &["awake"]), 1.0);
    assert_eq!(gauge(&m, "fleet_reaper_sites", &["asleep"]), 1.0);
    assert_eq!(gauge(&m, "fleet_reaper_site_errors", &[]), 0.0);
    let took = gauge(&m, "fleet_reaper_pass_duration_seconds", &[]);
    assert!(took > 0.0 && took < run.elapsed.as_secs_f64(), "{took}");
    let when = gauge(&m, "fleet_reaper_last_pass_timestamp_seconds", &[]);
    let when = SystemTime::UNIX_EPOCH
        + Duration::try_from_secs_f64(when).unwrap_or_else(|e| panic!("{when}: {e}"));
    assert!((now..=SystemTime::now()).contains(&when), "{when:?}");
    // The parser is strict: a broken line is refused.
    assert!(openmetrics_parser::prometheus::parse_prometheus("fleet_x{site=\"a} 1\n").is_err());

    // The next pass replaces the file (a new inode: renamed over, never
    // rewritten in place), readable by the collector, with no temp file left.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let inode = std::fs::metadata(&path).expect("meta").ino();
    metrics.exits(0);
    let meta = std::fs::metadata(&path).expect("meta");
    assert_ne!(meta.ino(), inode, "replaced by rename");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(names, std::slice::from_ref(&path), "only the metrics file");

    // A symlink at the path is refused and its target left alone.
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep").expect("write");
    std::fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    let refused = metrics.exits(1);
    assert!(
        refused.stderr.contains("fleet.prom") && refused.stderr.contains("symlink"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
}
