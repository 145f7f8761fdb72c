//! fleet-renew and the systemd units, under a real systemd booted as PID 1
//! in private PID and mount namespaces ([`NsSystemd`]).
//!
//! The units are the repository's own (`systemd/`), installed into the
//! namespace's `/run/systemd/system` with `/usr/bin/` rewritten to the
//! directory of the binaries under test, as `cargo xtask install --prefix`
//! would. The test site's runtime and state directories are bound to
//! `/run/docker-apps` and `/run/fleet` inside, so the units' default paths
//! are used unchanged while the host (the test, the container) sees the
//! test's own temp directories.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::nsystemd::{Bind, NsSystemd};
use crate::support::{FcgiRequest, TestSite, bin, fastcgi, note, require, wait_until};

/// The repository's systemd unit directory.
pub(crate) fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// Where the binaries under test appear inside the namespace for the units.
/// Not their own path: a checkout under /tmp would be hidden from services
/// by their `PrivateTmp=yes`.
const NS_BIN_DIR: &str = "/run/fleet-test-bin";

/// A unit file of the repository with binaries pointed at the ones under test.
pub(crate) fn unit_text(name: &str) -> String {
    let text = std::fs::read_to_string(unit_dir().join(name)).expect("read unit");
    text.replace("/usr/bin/", &format!("{NS_BIN_DIR}/"))
}

/// Boots systemd with the site's directories and the binaries bound in, and
/// the units installed.
pub(crate) fn boot_for(site: &TestSite) -> NsSystemd {
    let layout = site.layout();
    let bin_dir = bin("fleet-waker").parent().expect("bin dir").to_owned();
    let ns = NsSystemd::boot(&[
        Bind {
            host: PathBuf::from("/run/docker.sock"),
            inside: PathBuf::from("/run/docker.sock"),
        },
        Bind {
            host: layout.run_dir.clone(),
            inside: PathBuf::from("/run/docker-apps"),
        },
        Bind {
            host: layout.state_dir.clone(),
            inside: PathBuf::from("/run/fleet"),
        },
        Bind {
            host: layout.sites_dir.clone(),
            inside: PathBuf::from("/run/fleet-sites"),
        },
        // The binaries stay where they are for commands run with nsenter,
        // even when the checkout is under /tmp (hidden by the namespace's
        // tmpfs otherwise), and appear at NS_BIN_DIR for the units.
        Bind {
            host: bin_dir.clone(),
            inside: bin_dir.clone(),
        },
        Bind {
            host: bin_dir,
            inside: PathBuf::from(NS_BIN_DIR),
        },
    ]);
    for unit in ["fleet-waker@.socket", "fleet-waker@.service"] {
        ns.write_unit(unit, &unit_text(unit));
    }
    ns.systemctl_ok(&["daemon-reload"]);
    ns
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hello(site: &TestSite) -> std::io::Result<String> {
    fastcgi::request(&site.waker_socket(), &FcgiRequest::get("hello.php", "")).map(|r| r.text())
}

fn run_renew(ns: &NsSystemd, args: &[&str]) -> Output {
    ns.command(bin("fleet-renew"))
        .args(args)
        .output()
        .expect("run fleet-renew")
}

#[test]
fn units_verify_start_wake_and_report_status() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();

    // 1. systemd-analyze verify passes for every unit (man pages are not
    //    installed in a test, so their existence is not checked).
    let mut units: Vec<String> = vec!["fleet-waker@.socket".into(), "fleet-waker@.service".into()];
    for extra in ["fleet-reaper.service", "fleet-reaper.timer"] {
        if unit_dir().join(extra).exists() {
            ns.write_unit(extra, &unit_text(extra));
            units.push(extra.into());
        }
    }
    let paths: Vec<String> = units
        .iter()
        .map(|u| format!("/run/systemd/system/{u}"))
        .collect();
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let verify = ns.run("systemd-analyze", &args);
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    // Starting the socket unit creates the socket (where the host sees it).
    let socket_unit = format!("fleet-waker@{name}.socket");
    ns.systemctl_ok(&["start", &socket_unit]);
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(site.waker_socket()).expect("socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(site.state(), "created", "nothing woke the container yet");

    // A request through it wakes the real container and gets php-fpm's answer.
    assert_eq!(hello(&site).expect("request"), site.hello_line());
    assert_eq!(site.state(), "running");

    // systemctl status shows the waker's STATUS= line.
    let service = format!("fleet-waker@{name}.service");
    let status = text(&ns.systemctl(&["status", "--no-pager", &service]));
    assert!(status.contains("Status: \""), "no STATUS line:\n{status}");
    note(&format!(
        "status line: {}",
        status
            .lines()
            .find(|l| l.contains("Status:"))
            .unwrap_or_default()
            .trim()
    ));

    // The sandboxed service's exposure (issue target: <= 2.5).
    let security = text(&ns.run("systemd-analyze", &["security", "--no-pager", &service]));
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    note(&format!(
        "systemd-analyze security {service}: exposure {exposure}"
    ));
    assert!(exposure <= 2.5, "exposure {exposure} > 2.5:\n{security}");
}

#[test]
fn renew_recovers_a_socket_that_hit_its_limit() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let socket_unit = format!("fleet-waker@{name}.socket");
    let service = format!("fleet-waker@{name}.service");

    // The service fails before the waker even runs, every time.
    ns.write_unit(
        "fleet-waker@.service.d/fail.conf",
        "[Service]\nExecStartPre=/bin/false\n",
    );
    ns.systemctl_ok(&["daemon-reload"]);
    ns.systemctl_ok(&["start", &socket_unit]);

    // Each connection triggers a start that fails, until systemd gives up
    // on the socket (service-start-limit-hit or trigger-limit-hit).
    let failed = wait_until(Duration::from_secs(60), || {
        let _ = hello(&site);
        let state = ns.systemctl(&["is-failed", &socket_unit]);
        String::from_utf8_lossy(&state.stdout).trim() == "failed"
    });
    let show = ns.systemctl_ok(&["show", "-p", "Result", "-p", "ActiveState", &socket_unit]);
    assert!(failed, "socket never failed: {show}");
    note(&format!("{socket_unit}: {}", show.replace('\n', " ")));
    assert!(
        show.contains("limit-hit"),
        "socket failed for another reason: {show}"
    );
    assert!(hello(&site).is_err(), "a failed socket must not answer");

    // The admin fixes the cause, then renews.
    ns.remove_unit("fleet-waker@.service.d/fail.conf");
    ns.systemctl_ok(&["daemon-reload"]);
    let out = run_renew(&ns, &[&name]);
    let report = text(&out);
    note(&format!("fleet-renew output:\n{report}"));
    assert!(out.status.success(), "fleet-renew failed:\n{report}");
    for step in [
        format!("stop {socket_unit}"),
        format!("stop {service}"),
        format!("stop container {}", site.container()),
        format!("reset-failed {socket_unit}"),
        format!("reset-failed {service}"),
        format!("start {socket_unit}"),
        format!("verify {socket_unit} is active"),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.contains(&step) && l.contains("ok")),
            "step {step:?} not reported ok:\n{report}"
        );
    }
    assert!(report.contains(&format!("{name}\tHEALTHY")), "{report}");

    // The next request succeeds.
    assert_eq!(
        hello(&site).expect("request after renew"),
        site.hello_line()
    );
}

#[test]
fn renew_reports_a_bad_site_and_renews_the_good_one() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let unknown = format!("unknown-{name}");
    let out = run_renew(&ns, &[&name, "../etc", &unknown]);
    let report = text(&out);
    note(&format!("fleet-renew output:\n{report}"));
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("\"../etc\""), "{report}");
    assert!(
        report.contains("rule:"),
        "the error names the rule:\n{report}"
    );
    assert!(
        report.contains(&format!("container {unknown}.fpm does not exist")),
        "{report}"
    );
    assert!(report.contains(&format!("{unknown}\tFAILED")), "{report}");
    assert!(report.contains(&format!("{name}\tHEALTHY")), "{report}");
    // The good one listens again and serves.
    assert_eq!(hello(&site).expect("request"), site.hello_line());
}

#[test]
fn reaper_timer_stops_an_idle_container() {
    require!(Docker, Root, Systemd);
    if !unit_dir().join("fleet-reaper.timer").exists() {
        panic!("systemd/fleet-reaper.timer is missing");
    }
    let site = TestSite::new();
    let ns = boot_for(&site);
    site.write_conf("2s");
    site.start();
    for unit in ["fleet-reaper.service", "fleet-reaper.timer"] {
        ns.write_unit(unit, &unit_text(unit));
    }
    // Point the reaper at the test's site list, and make the timer fire
    // every second instead of every minute.
    ns.write_unit(
        "fleet-reaper.service.d/test.conf",
        "[Service]\nEnvironment=FLEET_SITES_DIR=/run/fleet-sites\n",
    );
    ns.write_unit(
        "fleet-reaper.timer.d/test.conf",
        "[Timer]\nOnCalendar=\nOnActiveSec=1s\nOnUnitActiveSec=1s\nAccuracySec=100ms\n",
    );
    ns.systemctl_ok(&["daemon-reload"]);
    ns.systemctl_ok(&["start", "fleet-reaper.timer"]);
    let stopped = wait_until(Duration::from_secs(30), || site.state() == "exited");
    let show = ns.systemctl_ok(&[
        "show",
        "-p",
        "Result",
        "-p",
        "NRestarts",
        "fleet-reaper.service",
    ]);
    assert!(
        stopped,
        "the timer's reaper did not stop the idle container (state {}): {show}\n{}",
        site.state(),
        ns.log_text()
    );
}
