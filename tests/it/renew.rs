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

use std::time::Duration;

use crate::support::assert::{output_text, says_hello};
use crate::support::nsystemd::{
    FAILING_SERVICE_DROPIN, NsSystemd, boot_for, drive_socket_into_limit, install_reaper,
    run_renew, unit_dir, unit_text,
};
use crate::support::{SiteOptions, TestSite, note, require, wait_until};

#[test]
fn units_verify_start_wake_and_report_status() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();

    // 1. systemd-analyze verify passes for every unit (man pages are not
    //    installed in a test, so their existence is not checked).
    let reaper_units = ["fleet-reaper.service", "fleet-reaper.timer"];
    for unit in reaper_units {
        ns.write_unit(unit, &unit_text(unit));
    }
    let waker_units = ["fleet-waker@.socket", "fleet-waker@.service"];
    let paths: Vec<String> = (waker_units.into_iter().chain(reaper_units))
        .map(|u| format!("/run/systemd/system/{u}"))
        .collect();
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let verify = ns.run("systemd-analyze", &args);
    assert!(
        verify.status.success() && output_text(&verify).trim().is_empty(),
        "systemd-analyze verify: {}",
        output_text(&verify)
    );

    // Starting the socket unit creates the socket (where the host sees it).
    let socket_unit = format!("fleet-waker@{name}.socket");
    ns.systemctl_ok(&["start", &socket_unit]);
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(site.waker_socket()).expect("socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(site.state(), "created", "nothing woke the container yet");

    // A request through it wakes the real container and gets php-fpm's answer.
    says_hello(&site, "request", String::new);
    assert_eq!(site.state(), "running");

    // systemctl status shows the waker's STATUS= line.
    let service = format!("fleet-waker@{name}.service");
    let status = output_text(&ns.systemctl(&["status", "--no-pager", &service]));
    assert!(status.contains("Status: \""), "no STATUS line:\n{status}");
    let line = status.lines().find(|l| l.contains("Status:"));
    note!("status line: {}", line.unwrap_or_default().trim());

    // The sandboxed service's exposure (issue target: <= 2.5).
    ns.assert_exposure(&service, 2.5);
}

/// Debian's stock pool makes php-fpm's socket `www-data:www-data` 0660. The
/// shipped units drop every capability (no `CAP_DAC_OVERRIDE`), so root
/// reaches it only as a member of the group: the waker serves through it
/// and the reaper reads its status page and stops the idle site.
#[test]
fn units_reach_a_php_fpm_socket_of_www_data_mode_0660() {
    require!(Docker, Root, Systemd);
    let owner = format!("{}=www-data", xtask::image::LISTEN_OWNER_ENV);
    let mode = format!("{}=0660", xtask::image::LISTEN_MODE_ENV);
    let site =
        TestSite::with_options(SiteOptions::default().docker_args(["-e", &owner, "-e", &mode]));
    let ns = boot_for(&site);
    ns.systemctl_ok(&["start", &format!("fleet-waker@{}.socket", site.name())]);
    says_hello(&site, "through the sandboxed waker", || ns.log_text());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(site.fpm_socket()).expect("php-fpm.sock");
    assert_eq!(
        (meta.mode() & 0o777, meta.gid()),
        (0o660, 33),
        "not Debian's stock socket"
    );

    site.write_conf("2s");
    let stopped = timer_stops(&ns, &site);
    assert!(
        stopped,
        "the reaper did not stop the idle site:\n{}",
        ns.log_text()
    );
}

#[test]
fn renew_recovers_a_socket_that_hit_its_limit() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let socket_unit = format!("fleet-waker@{name}.socket");
    let service = format!("fleet-waker@{name}.service");

    // The service fails before the waker even runs, every time, until
    // systemd gives up on the socket.
    let show = drive_socket_into_limit(&ns, &site);
    note!("{socket_unit}: {show}");

    // The admin fixes the cause, then renews.
    ns.remove_unit(FAILING_SERVICE_DROPIN);
    ns.systemctl_ok(&["daemon-reload"]);
    let out = run_renew(&ns, &[&name]);
    let report = output_text(&out);
    note!("fleet-renew output:\n{report}");
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
        let ok = report
            .lines()
            .any(|l| l.contains(&step) && l.contains("ok"));
        assert!(ok, "step {step:?} not reported ok:\n{report}");
    }
    assert!(report.contains(&format!("{name}\tHEALTHY")), "{report}");

    // The next request succeeds.
    says_hello(&site, "request after renew", String::new);
}

#[test]
fn renew_reports_a_bad_site_and_renews_the_good_one() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let unknown = format!("unknown-{name}");
    let out = run_renew(&ns, &[&name, "../etc", &unknown]);
    let report = output_text(&out);
    note!("fleet-renew output:\n{report}");
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
    says_hello(&site, "request", String::new);
}

#[test]
fn reaper_timer_stops_an_idle_container() {
    require!(Docker, Root, Systemd);
    let timer = unit_dir().join("fleet-reaper.timer");
    assert!(timer.exists(), "systemd/fleet-reaper.timer is missing");
    let site = TestSite::new();
    let ns = boot_for(&site);
    site.write_conf("2s");
    site.start();
    let stopped = timer_stops(&ns, &site);
    let show = ns.systemctl_ok(&["show", "-p", "Result,NRestarts", "fleet-reaper.service"]);
    assert!(
        stopped,
        "the timer's reaper did not stop the idle container (state {}): {show}\n{}",
        site.state(),
        ns.log_text()
    );
}

/// The shipped reaper units pointed at the test's site list, the timer
/// firing every second instead of every minute: whether `site`'s container
/// is stopped within 30 s.
fn timer_stops(ns: &NsSystemd, site: &TestSite) -> bool {
    install_reaper(
        ns,
        // Every second is more starts than systemd's default start limit
        // allows (5 in 10 s), and the stop comes a few passes in: php-fpm's
        // connections are dated at the first pass that sees them.
        "Environment=FLEET_SITES_DIR=/run/fleet-sites\n[Unit]\nStartLimitIntervalSec=0\n",
        "[Timer]\nOnCalendar=\nOnActiveSec=1s\nOnUnitActiveSec=1s\nAccuracySec=100ms\n",
    );
    ns.systemctl_ok(&["start", "fleet-reaper.timer"]);
    wait_until(Duration::from_secs(30), || site.state() == "exited")
}
