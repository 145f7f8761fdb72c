//! `fleet-reaper.timer` under a real systemd (PID 1 in private namespaces)
//! on a host where the sites directory does not exist yet: every run the
//! timer starts succeeds and says, once, which directory it reads.

use std::path::Path;
use std::time::Duration;

use crate::support::nsystemd::{
    REAPER_LOG, RECORD_REAPER_RUNS, boot_for, install_reaper, reaper_runs,
};
use crate::support::{TestSite, note, require, wait_until};

#[test]
fn timer_without_a_sites_directory_has_no_failed_runs() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    // Inside the namespace, /run/fleet-sites is the site's (existing) sites
    // directory; the reaper is pointed at a child of it that does not exist.
    let missing = "/run/fleet-sites/on-demand";
    assert!(!ns.path(Path::new(missing)).exists());
    // The shipped timer fires every minute; the test makes it fire every
    // second after the previous run ended, so several runs fit in a test.
    install_reaper(
        &ns,
        &format!(
            "Environment=FLEET_SITES_DIR={missing}\nStandardError=append:{REAPER_LOG}\n{RECORD_REAPER_RUNS}"
        ),
        "[Timer]\nOnCalendar=\nOnActiveSec=1ms\nOnUnitInactiveSec=1s\nAccuracySec=10ms\n",
    );
    ns.systemctl_ok(&["start", "fleet-reaper.timer"]);

    assert!(
        wait_until(Duration::from_secs(60), || reaper_runs(&ns).len() >= 3),
        "the timer did not start three runs within 60 s; runs: {:?}\nsystemd:\n{}",
        reaper_runs(&ns),
        ns.log_text()
    );
    ns.systemctl_ok(&["stop", "fleet-reaper.timer"]);
    let runs = reaper_runs(&ns);
    note!("{} timer-started runs: {runs:?}", runs.len());
    for run in &runs {
        assert_eq!(run, "success exited 0", "a failed run; all runs: {runs:?}");
    }
    let log = std::fs::read_to_string(ns.path(Path::new(REAPER_LOG))).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the sites directory does not exist"))
        .collect();
    assert!(
        warnings.len() >= runs.len() && warnings.iter().all(|l| l.contains(missing)),
        "each run warns, naming {missing}:\n{log}"
    );
    assert!(
        !log.contains("cannot read the sites directory"),
        "a missing directory is not an error:\n{log}"
    );
    note!("its warning: {}", warnings[0].trim());
    assert_eq!(ns.show("fleet-reaper.service", "Result"), "success");
}
