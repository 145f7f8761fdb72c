//! The fleet on one host (issue 15), waker side: host-wide wake admission,
//! crash-loop back-off, the waker's idle exit under a real systemd, and a
//! Docker API version that changes under a running waker.

use std::time::{Duration, Instant, SystemTime};

use xtask::wakes::{peak_overlap, slot_window};

use crate::support::assert::says_hello;
use crate::support::docker_proxy::{DockerProxy, Mode};
use crate::support::nsystemd::boot_for;
use crate::support::wake::{is_retry_later, listening_quiet, stopped_site};
use crate::support::{
    FcgiRequest, SiteExt as _, SiteOptions, Spawned, TestSite, count_docker_events, exchange,
    fastcgi, note, require, temp_dir, wait_until,
};

/// 30 stopped sites, K = 3 slots shared through one state directory, one
/// request to every site at once: every request answered by its own site,
/// and never more than 3 sites between admission and letting the slot go
/// (when Docker's start call returned).
/// Docker's own `start` events fall inside those windows, so the windows
/// are where the starts happened.
#[test]
fn thirty_sites_never_more_than_three_starting() {
    require!(Docker, PhpFpm, Root);
    const N: usize = 30;
    const K: usize = 3;
    let shared = temp_dir("slots");
    let state = format!("--state-dir={}", shared.path().display());
    let sites: Vec<TestSite> = (0..N).map(|_| TestSite::new()).collect();
    let k = format!("--max-concurrent-wakes={K}");
    let args = [&state, &k, "--start-timeout=60s"];
    let wakers: Vec<Spawned> = sites
        .iter()
        .map(|s| listening_quiet(s, &args, &[]))
        .collect();
    let t0 = SystemTime::now();
    std::thread::scope(|scope| {
        for s in &sites {
            scope.spawn(|| says_hello(s, s.name(), String::new));
        }
    });
    let took = t0.elapsed().unwrap_or_default();
    let mut windows = Vec::new();
    for (w, s) in wakers.iter().zip(&sites) {
        let logs = w.logs();
        let (a, b) = slot_window(&logs)
            .unwrap_or_else(|| panic!("{}: no admission or wake in the log:\n{logs}", s.name()));
        let starts = s.event_times("start", t0);
        assert_eq!(starts.len(), 1, "{}: {starts:?}", s.name());
        let at = starts[0];
        // Log stamps have microseconds; allow for the rounding.
        let slack = Duration::from_millis(2);
        assert!(
            at + slack >= a && at <= b + slack,
            "{}: Docker started it outside its slot window",
            s.name()
        );
        windows.push((a, b));
    }
    let peak = peak_overlap(&windows);
    assert!(peak <= K, "{peak} wakes held slots at once (K = {K})");
    assert!(
        peak >= 2,
        "no concurrency at all ({peak}): the test proves nothing"
    );
    note!("{N} sites, K = {K}: all answered in {took:?}, peak {peak} starting at once");
}

/// With K = 1 slot, a site whose container runs but whose php-fpm never
/// accepts where the waker looks (its socket moved aside, as a tenant can
/// do) keeps waking, and each wake waits for php-fpm until its start
/// timeout: it holds the host's one slot for `--slot-hold-max` at most (2 s
/// here), so a stopped site wakes soon after.
#[test]
fn a_running_site_whose_php_fpm_never_accepts_holds_its_wake_slot_briefly() {
    require!(Docker, PhpFpm);
    let shared = temp_dir("slots");
    let state = format!("--state-dir={}", shared.path().display());
    let stuck = TestSite::started(SiteOptions::default());
    let moved = stuck.fpm_socket().with_file_name("php-fpm.sock.moved");
    std::fs::rename(stuck.fpm_socket(), &moved).expect("move php-fpm's socket aside");
    let asleep = stopped_site(SiteOptions::default());
    let one = "--max-concurrent-wakes=1";
    let hold = "--slot-hold-max=2s";
    let ws = listening_quiet(&stuck, &[&state, one, hold, "--start-timeout=15s"], &[]);
    let wa = listening_quiet(&asleep, &[&state, one], &[]);
    let request = fastcgi::encode_request(&FcgiRequest::get("hello.php", ""));
    let socket = stuck.waker_socket();
    let held = std::thread::spawn(move || exchange(&socket, &request, Duration::from_secs(30)));
    assert!(
        ws.wait_for_log("admitted to a wake slot", Duration::from_secs(10)),
        "{}",
        ws.logs()
    );
    let t = Instant::now();
    says_hello(&asleep, "the stopped site, K = 1", || wa.logs());
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the stopped site waited {took:?} for the slot:\n{}\n{}",
        ws.logs(),
        wa.logs()
    );
    let got = held.join().expect("thread");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(ws.logs().contains("did not accept"), "{}", ws.logs());
    note!("K = 1, a running site whose php-fpm never accepts: a stopped site woke in {took:?}");
}

/// A container that dies at every start, under 200 requests in 10 s: a
/// handful of `start`s (the back-off doubles from 1 s after the second
/// failure), every request answered at once (closed, or the waker's own 503
/// with Retry-After while it backs off), each back-off logged once.
#[test]
fn crash_looping_container_is_started_a_handful_of_times() {
    require!(Docker, PhpFpm);
    let site = TestSite::with_options(SiteOptions::default().fpm_children(0));
    let w = listening_quiet(&site, &["--start-timeout", "10s"], &[]);
    let t0 = SystemTime::now();
    let start = Instant::now();
    let (mut closed, mut retry_later, mut slowest) = (0, 0, Duration::ZERO);
    let request = fastcgi::encode_request(&FcgiRequest::get("hello.php", ""));
    for i in 0..200u32 {
        // 200 requests spread over 10 s.
        let due = Duration::from_millis(50) * i;
        std::thread::sleep(due.saturating_sub(start.elapsed()));
        let t = Instant::now();
        let got = exchange(&site.waker_socket(), &request, Duration::from_secs(15));
        slowest = slowest.max(t.elapsed());
        if got.is_empty() {
            closed += 1;
        } else {
            assert!(is_retry_later(&got), "{:?}", String::from_utf8_lossy(&got));
            retry_later += 1;
        }
    }
    let starts = count_docker_events(site.container(), "start", t0, SystemTime::now());
    let backoffs = w.logs().matches("backing off").count();
    assert!(
        (2..=6).contains(&starts),
        "{starts} starts in 10 s:\n{}",
        w.logs()
    );
    assert!(
        backoffs >= 1 && backoffs <= starts,
        "{backoffs} back-off lines for {starts} starts"
    );
    // No request is held for the start timeout (10 s): a start's failure
    // is seen at the container's death, a back-off answers at once.
    assert!(
        slowest < Duration::from_secs(6),
        "a request waited {slowest:?}"
    );
    note!(
        "crash loop, 200 requests in 10 s: {starts} starts, {closed} closed by a failed wake, {retry_later} answered 503 Retry-After, {backoffs} back-off lines, slowest {slowest:?}"
    );
}

/// A waker that settled on an API version the engine refuses (as after an
/// engine upgrade under a running waker) still wakes the site. (bollard
/// 0.21 sends unversioned paths, so the engine answers in its own version;
/// should a request be refused for its version, `Engine::make_running`
/// settles the version again and retries once.)
#[test]
fn a_refused_api_version_does_not_stop_wakes() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let sock = site.temp_dir().join("docker.sock");
    let proxy = DockerProxy::start(&sock, Mode::Forward, Duration::ZERO);
    proxy.fake_version_once();
    let host = format!("unix://{}", sock.display());
    let w = listening_quiet(&site, &[], &[("DOCKER_HOST", host)]);
    says_hello(&site, "woken", || w.logs());
    assert!(proxy.faked(), "the waker never asked /_ping");
    assert_eq!(proxy.starts(), 1);
}

/// Under the namespaced systemd, with the shipped units: an idle waker
/// exits (its memory is freed, systemd keeps the socket) and the next
/// request starts a new one. Then requests sent around the moment the waker
/// exits, again and again: every one is answered (a connection that arrives
/// while it exits waits in systemd's socket for the next waker).
#[test]
fn idle_waker_exits_and_the_next_request_reactivates_it() {
    require!(Docker, PhpFpm, Root, Systemd);
    let site = TestSite::started(SiteOptions::default());
    let ns = boot_for(&site);
    // 1 s instead of the shipped 5 min, so the waker starts far more often
    // than systemd's default start limit (5 in 10 s) allows; lift it here.
    ns.write_unit(
        "fleet-waker@.service.d/idle.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nEnvironment=FLEET_WAKER_EXIT_IDLE_TIME=1s\n",
    );
    ns.systemctl_ok(&["daemon-reload"]);
    let service = format!("fleet-waker@{}.service", site.name());
    ns.systemctl_ok(&["start", &format!("fleet-waker@{}.socket", site.name())]);
    // Polled, so a failed systemctl call (a busy host) means "not yet", not a panic.
    let show = |property: &str| {
        let out = ns.systemctl(&["show", "-p", property, "--value", &service]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let active = |want: &str| wait_until(Duration::from_secs(10), || show("ActiveState") == want);
    // A waker answered, so one was started: its start time changed. (Polling
    // for "active" could miss a waker that has already exited, idle for 1 s.)
    let started = || {
        let mut at = String::new();
        let prop = "ExecMainStartTimestampMonotonic";
        wait_until(Duration::from_secs(10), || {
            at = show(prop);
            !at.is_empty()
        });
        at
    };
    let answers = |what: &str| says_hello(&site, what, || ns.log_text());
    let wakes = |what: &str| {
        let before = started();
        answers(what);
        assert_ne!(started(), before, "{what}: no waker was started");
    };
    wakes("first");
    assert!(active("inactive"), "the idle waker did not exit");
    let result = ns.systemctl_ok(&["show", "-p", "Result", "-p", "ExecMainStatus", &service]);
    assert!(result.contains("Result=success"), "{result}");
    wakes("after the exit");

    // The race: a request just before, at and just after the exit.
    let mut served = 0;
    for i in 0..12u64 {
        assert!(active("inactive"), "round {i}: did not exit");
        wakes(&format!("round {i}, reactivating"));
        // The waker exits 1 s after this request ended: aim around it.
        std::thread::sleep(Duration::from_millis(850 + 25 * i));
        answers(&format!("round {i}"));
        served += 2;
    }
    note!("{served} requests around the idle exit, all answered");
}
