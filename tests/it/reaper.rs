//! fleet-reaper against real containers (issue 5, "Must show" 1–6), plus
//! its exit codes and SIGTERM handling.
//!
//! Every test runs the real `fleet-reaper` binary with `--format json` on a
//! sites directory of its own ([`List`]), against `<site>.fpm` containers of
//! the harness's php-fpm image, and checks both what the plan says and what
//! Docker says afterwards.
//!
//! A site reaped over its own layout ([`support::reaper::over`]) is reaped
//! as in production: `--run-dir` is the site's, so the reaper reads
//! php-fpm's status page and drains before acting. A [`List`] gathering
//! several test sites has no single run directory (each test site has its
//! own), so it is reaped with `--proxy-only`: the waker's state and the
//! container's log are the signals. Direct mode, the status page as a
//! signal and the drain under load are `sleep.rs`'s.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::support::assert::{fpm_says_hello, says_hello};
use crate::support::reaper::{Reaper, ReaperExt as _, Run, RunExt as _};
use crate::support::site::fingerprint;
use crate::support::wake::{activated, dead_pid, open_at, sleep_request};
use crate::support::{self, FcgiRequest, SiteExt as _, SiteOptions, TestSite, require};

/// A sites directory and a state directory shared by several test sites,
/// so that one reaper pass sees them all.
pub(crate) struct List {
    sites: PathBuf,
    state: PathBuf,
    /// Holds both, and the test's other files.
    dir: tempfile::TempDir,
}

impl List {
    pub(crate) fn new() -> List {
        // The kit's temp dir: swept by a later run if this one dies.
        let dir = support::temp_dir("reaper");
        let (sites, state) = (dir.path().join("sites"), dir.path().join("state"));
        std::fs::create_dir(&sites).expect("mkdir sites");
        std::fs::create_dir(&state).expect("mkdir state");
        List { sites, state, dir }
    }

    /// A new list of `sites`, each with idle timeout `timeout`.
    pub(crate) fn of(sites: &[&TestSite], timeout: &str) -> List {
        let list = List::new();
        for s in sites {
            list.add(s, timeout);
        }
        list
    }

    /// This build's fleet-reaper over the list, `--proxy-only` (see the
    /// module notes).
    pub(crate) fn reaper(&self) -> Reaper {
        support::reaper::reaper()
            .dirs(&self.sites, &self.state)
            .arg("--proxy-only")
    }

    /// Lists `site` with idle timeout `timeout` (old format line 1).
    fn add(&self, site: &TestSite, timeout: &str) {
        self.write(
            &format!("{}.conf", site.name()),
            format!("# Amount of time to pause the container after: {timeout}\n").as_bytes(),
        )
    }

    fn write(&self, file: &str, content: &[u8]) {
        std::fs::write(self.sites.join(file), content).expect("write conf");
    }

    pub(crate) fn state_file(&self, site: &TestSite) -> PathBuf {
        self.state.join(format!("{}.state", site.name()))
    }

    /// Writes `site`'s state file in the waker's format, through
    /// fleet_core::state (the contract between waker and reaper): a waker
    /// `pid` with `open` connections, and its last start and end.
    pub(crate) fn store_state(
        &self,
        site: &TestSite,
        pid: u32,
        open: u64,
        last_start: Option<SystemTime>,
        last_end: Option<SystemTime>,
    ) {
        let activity = fleet_core::state::Activity {
            pid: Some(pid),
            open,
            last_start,
            last_end,
            ..Default::default()
        };
        fleet_core::state::store(&self.state_file(site), &activity).expect("store");
    }
}

/// `N` new test sites (containers created, not started).
pub(crate) fn new_sites<const N: usize>() -> [TestSite; N] {
    std::array::from_fn(|_| TestSite::new())
}

/// Runs `fleet-reaper --sites-dir … --state-dir … <args>` to completion,
/// asserted to exit with `code`.
#[track_caller]
fn reaper(list: &List, args: &[&str], code: i32) -> Run {
    list.reaper().args(args).exits(code)
}

/// Longer than the 2 s idle timeout most tests here list their sites with.
/// The reaper's decisions are about time since the last activity, so the
/// tests here sleep: elapsed time is the very condition waited for.
const PAST_TIMEOUT: Duration = Duration::from_millis(2500);

/// A started site whose start-up log is older than `quiet`.
fn started_quiet(sites: &[&TestSite], quiet: Duration) {
    for s in sites {
        s.start();
    }
    sleep(quiet);
}

/// A new site whose php-fpm ignores its stop signal (SIGWINCH), so that
/// `docker stop` lasts its whole grace period before SIGKILL. (With SIGTERM
/// php-fpm is gone in milliseconds.)
fn slow_to_stop() -> TestSite {
    TestSite::with_options(SiteOptions::default().docker_args(["--stop-signal", "SIGWINCH"]))
}

/// The plan entry of `site` (a site's name or a conf file's), asserted to
/// say this verdict and action.
#[track_caller]
pub(crate) fn assert_outcome(run: &Run, site: &str, (verdict, action): (&str, &str)) -> Value {
    let e = run.site(site);
    let got = (field(&e, "verdict"), field(&e, "action"));
    assert_eq!(got, (verdict, action), "{e}");
    e
}

/// An entry's text field `key` ("" for none).
fn field<'a>(e: &'a Value, key: &str) -> &'a str {
    e[key].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Must show 1
// ---------------------------------------------------------------------------

#[test]
fn idle_site_is_stopped_recent_site_keeps_running_and_pause_pauses() {
    require!(Docker, PhpFpm);
    let [idle, recent, to_pause, unlisted] = new_sites();
    let list = List::of(&[&idle, &recent], "2s");
    // This one through its own layout (the directories its waker would use).
    to_pause.write_conf("2s");
    // Not in any list: idle too, but the reaper must never touch it.
    started_quiet(&[&idle, &recent, &to_pause, &unlisted], PAST_TIMEOUT);
    fpm_says_hello(&recent, "hello.php");
    sleep(Duration::from_secs(1));

    let run = reaper(&list, &["--format", "json", "--stop-timeout", "5s"], 0);
    let e = assert_outcome(&run, idle.name(), ("idle", "stopped"));
    assert_eq!(e["log_frames_read"], 0, "{e}");
    let e = assert_outcome(&run, recent.name(), ("active-logs", "none"));
    assert!(field(&e, "reason").contains("logged output"), "{e}");
    assert_eq!(idle.state(), "exited");
    assert_eq!(recent.state(), "running");
    assert_eq!(unlisted.state(), "running");

    // Its own layout: the status page is read, and php-fpm's connections
    // (the readiness check's) are dated at the first pass that sees them,
    // so passes follow each other as the timer's would until it pauses.
    let pause = support::reaper::over(&to_pause).args(["--action", "pause"]);
    let acted = pause.passes(Duration::from_secs(15), Duration::from_millis(300), |run| {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let e = run.entry(to_pause.name())?;
        if e["action"] == "none" {
            assert_eq!(e["verdict"], "active-fpm", "{e}");
        }
        Ok(e["action"] != "none")
    });
    let acted = acted.expect("a pass acted");
    assert_outcome(&acted, to_pause.name(), ("idle", "paused"));
    assert_eq!(to_pause.state(), "paused");

    // A second pass leaves the paused and the stopped alone (never unpauses,
    // never starts): nothing to do.
    let run = pause.pass();
    assert_eq!(run.site(to_pause.name())["verdict"], "not-running");
    assert_eq!(to_pause.state(), "paused");
    let run = reaper(&list, &["--format", "json"], 0);
    assert_eq!(run.site(idle.name())["verdict"], "not-running");
    assert_eq!(idle.state(), "exited");
    assert_eq!(unlisted.state(), "running");
}

#[test]
fn waker_state_decides_busy_active_and_unknown() {
    require!(Docker, PhpFpm);
    let [busy, active, unknown, stale] = new_sites();
    let sites = [&busy, &active, &unknown, &stale];
    let list = List::of(&sites, "2s");
    started_quiet(&sites, PAST_TIMEOUT);
    let now = SystemTime::now();
    let me = std::process::id();
    let ago = |ms: u64| Some(now - Duration::from_millis(ms));
    // Written in the waker's format by fleet_core::state (its contract).
    list.store_state(&busy, me, 1, ago(3_600_000), None);
    list.store_state(&active, me, 0, ago(1500), ago(1000));
    // A symlink where the state file should be: unreadable, so unknown.
    let target = list.dir.path().join("elsewhere");
    std::fs::write(&target, "open=0\n").expect("write");
    std::os::unix::fs::symlink(&target, list.state_file(&unknown)).expect("symlink");
    // A state file of a waker that is gone: its open count is stale.
    list.store_state(&stale, dead_pid(), 3, ago(3_600_000), None);

    // Unknown state is a site error: exit 1.
    let run = reaper(&list, &["--format", "json", "--stop-timeout", "5s"], 1);
    assert_outcome(&run, busy.name(), ("busy", "none"));
    let e = run.site(active.name());
    assert_eq!(e["verdict"], "active-waker", "{e}");
    let e = run.site(unknown.name());
    assert_eq!(e["verdict"], "unknown", "{e}");
    assert!(field(&e, "error").contains("symlink"), "{e}");
    let e = assert_outcome(&run, stale.name(), ("idle", "stopped"));
    assert!(field(&e, "reason").contains("gone"), "{e}");
    assert_eq!(busy.state(), "running");
    assert_eq!(active.state(), "running");
    assert_eq!(unknown.state(), "running");
    assert_eq!(stale.state(), "exited");
    // The symlink's target was not touched.
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "open=0\n");
}

// ---------------------------------------------------------------------------
// Must show 3
// ---------------------------------------------------------------------------

#[test]
fn malformed_conf_files_are_each_reported_and_the_others_handled() {
    require!(Docker, PhpFpm);
    let good = TestSite::new();
    let list = List::of(&[&good], "2s");
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    elf.extend_from_slice(&[0u8; 64]);
    let long = format!("# {}: 20m\n", "a".repeat(5000));
    // (file name stem, content, what the report must say)
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("empty", b"", "is empty"),
        ("blank", b"\n# x: 20m\n", "line 1 is blank"),
        ("nocolon", b"# Amount of time 20m\n", "no colon"),
        (
            "noduration",
            b"# pause after:\n",
            "nothing after its first colon",
        ),
        (
            "badduration",
            b"# pause after: twenty minutes\n",
            "bad duration",
        ),
        ("zero", b"# pause after: 0s\n", "is zero"),
        (
            "absurd",
            b"# pause after: 400days\n",
            "longer than the maximum",
        ),
        ("binary", &elf, "binary"),
        ("nul", b"# pause after: 2\0m\n", "NUL"),
        ("long", long.as_bytes(), "bytes long"),
    ];
    for (stem, content, _) in &cases {
        list.write(&format!("{stem}.fleet.test.conf"), content);
    }
    list.write("bad_name.conf", b"# pause after: 2s\n");
    std::fs::create_dir(list.sites.join("dir.fleet.test.conf")).expect("mkdir");
    // A link planted in the list must not make root read (and quote) another file.
    std::os::unix::fs::symlink("/etc/passwd", list.sites.join("link.fleet.test.conf"))
        .expect("symlink");
    list.write("README", b"not a conf file, ignored\n");
    list.write("notes.conf.bak", b"ignored\n");
    started_quiet(&[&good], PAST_TIMEOUT);

    let run = reaper(&list, &["--format", "json", "--stop-timeout", "5s"], 1);
    let entries = run.plan()["sites"].as_array().expect("sites").len();
    // Every conf file has exactly one entry; README and .bak are ignored.
    assert_eq!(entries, cases.len() + 4, "{}", run.stdout);
    for (stem, _, why) in &cases {
        let site = format!("{stem}.fleet.test");
        let file = format!("{site}.conf");
        let e = assert_outcome(&run, &site, ("error", "none"));
        let err = field(&e, "error");
        assert!(
            err.contains(why),
            "{file}: {err:?} does not say {why:?}: {e}"
        );
        assert!(
            err.contains(&list.sites.join(&file).display().to_string()),
            "{file}: {err:?} lacks the path"
        );
        // And the log names it too.
        assert!(run.stderr.contains(&file), "stderr does not name {file}");
    }
    for (conf, why) in [
        ("bad_name.conf", "does not name a valid site"),
        ("link.fleet.test", "symlink"),
        ("dir.fleet.test", "not a regular file"),
    ] {
        let e = run.site(conf);
        assert!(field(&e, "error").contains(why), "{e}");
    }
    assert!(
        !run.stdout.contains("root:") && !run.stderr.contains("root:"),
        "/etc/passwd was read"
    );
    // The one good site was still handled.
    assert_outcome(&run, good.name(), ("idle", "stopped"));
    assert_eq!(good.state(), "exited");

    // The table says the same, one line per file, reason included.
    let run = reaper(&list, &[], 1);
    for (stem, _, why) in &cases {
        let site = format!("{stem}.fleet.test");
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{site} ")))
            .unwrap_or_else(|| panic!("no table line for {site}:\n{}", run.stdout));
        assert!(line.contains("error") && line.contains(why), "{line}");
    }
}

// ---------------------------------------------------------------------------
// Must show 4
// ---------------------------------------------------------------------------

#[test]
fn log_check_reads_one_frame_however_much_the_site_logged() {
    require!(Docker, PhpFpm);
    // This host's daemon keeps at most 3 × 10 MB of log per container;
    // give the loud one room for all 50 MiB.
    let loud =
        TestSite::with_options(SiteOptions::default().docker_args(["--log-opt", "max-size=200m"]));
    let quiet = TestSite::new();
    let list = List::new();
    // The containers' age bounds the timeout below, and the timeout bounds
    // how late the pass may come after the quiet site's last log line: 5 s
    // leaves room for a reaper that starts slowly on a loaded host.
    let age = Duration::from_secs(5);
    started_quiet(&[&loud, &quiet], age);
    // 50 MiB of log, through php-fpm's own stderr, as a chatty site would.
    let t = Instant::now();
    let mut req = FcgiRequest::get("log.php", "kb=51200");
    req.timeout = Duration::from_secs(120);
    let resp = loud.fcgi(&req).expect("log.php");
    assert_eq!(resp.text(), "logged 51200 KiB\n");
    eprintln!("50 MiB of log written in {:?}", t.elapsed());
    fpm_says_hello(&quiet, "hello.php");
    // Both containers are older than the timeout (not "young"), both logged
    // within it: the verdict needs the log check.
    let started = t.elapsed() + age;
    let timeout = format!("{}ms", started.as_millis() - 200);
    list.add(&loud, &timeout);
    list.add(&quiet, &timeout);
    let cutoff_hint = SystemTime::now() - started + Duration::from_millis(200);

    let run = reaper(&list, &["--format", "json"], 0);
    let [(loud_bytes, loud_secs), (quiet_bytes, quiet_secs)] = [&loud, &quiet].map(|s| {
        let e = run.site(s.name());
        assert_eq!(e["verdict"], "active-logs", "{e}");
        assert_eq!(e["log_frames_read"], 1, "{e}");
        // One frame: a log line (≤ 16 KiB, Docker's line limit) plus its header.
        let bytes = e["log_bytes_read"].as_u64().expect("bytes");
        assert!(bytes <= 8 + 16 * 1024, "{e}");
        (bytes, e["elapsed_secs"].as_f64().expect("secs"))
    });

    // What reading everything since the cutoff costs (the old script's way).
    let since = cutoff_hint
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs()
        .to_string();
    let t = Instant::now();
    let all = support::docker(&["logs", "--since", &since, loud.container()]);
    let full_secs = t.elapsed().as_secs_f64();
    let full_bytes = all.stdout.len() + all.stderr.len();
    eprintln!(
        "log check: loud site {loud_bytes} B in {loud_secs:.4}s, quiet site {quiet_bytes} B in \
         {quiet_secs:.4}s; `docker logs --since` of the loud site: {full_bytes} B in {full_secs:.3}s"
    );
    let text = String::from_utf8_lossy(&all.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("log line")).collect();
    assert!(
        full_bytes >= 50 << 20,
        "the loud site logged {full_bytes} B, {} lines, first {:?}, last {:?}",
        lines.len(),
        lines.first().map(|l| &l[..l.len().min(120)]),
        lines.last().map(|l| &l[..l.len().min(120)])
    );
    assert!(
        loud_bytes * 1000 < full_bytes as u64,
        "{loud_bytes} B read of {full_bytes}"
    );
    // And the time does not grow with the volume: the loud site's check
    // takes about what the quiet one's does, far less than reading it all.
    assert!(
        loud_secs < full_secs / 5.0,
        "loud site took {loud_secs}s, reading its log {full_secs}s"
    );
    assert!(
        loud_secs < quiet_secs * 5.0 + 0.1,
        "loud {loud_secs}s vs quiet {quiet_secs}s"
    );
}

// ---------------------------------------------------------------------------
// Must show 5
// ---------------------------------------------------------------------------

#[test]
fn dry_run_changes_nothing_and_predicts_the_real_run() {
    require!(Docker, PhpFpm);
    // `stopped` is created, never started.
    let [idle, idle2, active, stopped, paused] = new_sites();
    let list = List::of(&[&idle, &idle2, &stopped, &paused], "3s");
    // The active site has a wider window (5 s from its request to the real
    // run) so a loaded machine cannot turn it idle between the two runs; it
    // starts first so that it is not young either.
    list.add(&active, "5s");
    list.write("broken.fleet.test.conf", b"no colon\n");
    active.start();
    sleep(Duration::from_millis(2500));
    started_quiet(&[&idle, &idle2, &paused], Duration::from_millis(3500));
    paused.pause();
    let young = TestSite::new();
    list.add(&young, "1h");
    young.start();
    fpm_says_hello(&active, "hello.php");

    let all = [&idle, &idle2, &active, &stopped, &paused, &young];
    let before = all.map(fingerprint);
    let t0 = SystemTime::now();
    let dry = list.reaper().args(["--format", "json", "--dry-run"]).pass();
    let t1 = SystemTime::now();
    let after = all.map(fingerprint);
    // The real run right away; Docker's event history of the dry run's
    // window is checked afterwards.
    let real = list
        .reaper()
        .args(["--format", "json", "--stop-timeout", "5s"])
        .pass();
    assert_eq!(before, after, "a dry run changed container states");
    let events = support::docker_events(t0, t1, &["type=container"]);
    for s in all {
        let name = format!("\"name\":\"{}\"", s.container());
        let touched: Vec<&String> = events.iter().filter(|e| e.contains(&name)).collect();
        assert!(
            touched.is_empty(),
            "Docker events on {} during the dry run: {touched:?}",
            s.container()
        );
    }
    assert_eq!(
        dry.code,
        Some(1),
        "the broken conf is an error, also in a dry run: {dry}"
    );
    assert_eq!(dry.plan()["dry_run"], true);
    assert_eq!(real.code, Some(1), "{real}");

    let expected = [
        (&idle, "idle", "would-stop", "stopped", "exited"),
        (&idle2, "idle", "would-stop", "stopped", "exited"),
        (&active, "active-logs", "none", "none", "running"),
        (&stopped, "not-running", "none", "none", "created"),
        (&paused, "not-running", "none", "none", "paused"),
        (&young, "young", "none", "none", "running"),
    ];
    for (site, verdict, dry_action, real_action, state) in expected {
        let d = assert_outcome(&dry, site.name(), (verdict, dry_action));
        let r = real.site(site.name());
        assert_eq!(r["verdict"], d["verdict"], "real run disagrees: {r} vs {d}");
        assert_eq!(r["action"], real_action, "{r}");
        assert_eq!(site.state(), state, "{}", site.name());
    }
    assert_eq!(
        dry.site("broken.fleet.test")["error"],
        real.site("broken.fleet.test")["error"]
    );
}

// ---------------------------------------------------------------------------
// Exit codes and signals
// ---------------------------------------------------------------------------

#[test]
fn docker_unreachable_is_69_and_bad_usage_64() {
    let list = List::new();
    let nowhere = format!("unix://{}", list.dir.path().join("docker.sock").display());
    list.write("a.fleet.test.conf", b"# pause after: 20m\n");
    let run = list.reaper().json().env("DOCKER_HOST", &nowhere).exits(69);
    assert!(run.stderr.contains("docker.sock"), "{}", run.stderr);
    assert_eq!(run.stdout, "", "no plan without Docker");

    // Usage errors.
    for args in [
        &["--jobs", "0"][..],
        &["--action", "remove"],
        &["--format", "yaml"],
        &["--stop-timeout", "soon"],
        &["--stop-timeout", "1h"],
        &["--bogus"],
    ] {
        reaper(&list, args, 64);
    }
    // A missing sites directory is an empty list with one warning (issue
    // 16: the timer must not fail every minute); a file where the
    // directory should be cannot be read: usage error.
    let missing = List::new();
    std::fs::remove_dir(&missing.sites).expect("rmdir");
    let run = reaper(&missing, &[], 0);
    assert!(
        run.stderr.contains("sites directory does not exist"),
        "{}",
        run.stderr
    );
    std::fs::write(&missing.sites, b"not a directory").expect("file");
    let run = reaper(&missing, &[], 64);
    assert!(run.stderr.contains("sites directory"), "{}", run.stderr);

    // An empty list needs no Docker at all: nothing to do, success.
    let empty = List::new();
    empty.reaper().json().env("DOCKER_HOST", &nowhere).exits(0);

    // --help documents the exit codes; --version works.
    let run = reaper(&empty, &["--help"], 0);
    for code in ["0 ", "1 ", "64", "69", "75"] {
        assert!(
            run.stdout.contains(&format!("  {code}")),
            "{code} in {}",
            run.stdout
        );
    }
    let run = reaper(&empty, &["--version"], 0);
    assert!(run.stdout.starts_with("fleet-reaper "), "{}", run.stdout);
}

#[test]
fn sigterm_mid_pass_finishes_the_stop_under_way_and_exits_75() {
    require!(Docker, PhpFpm);
    // `docker stop` waits out the whole grace period: the pass is reliably
    // in the middle of a stop when SIGTERM comes.
    let [first, second] = [slow_to_stop(), slow_to_stop()];
    let list = List::of(&[&first, &second], "2s");
    started_quiet(&[&first, &second], PAST_TIMEOUT);
    let t0 = SystemTime::now();
    let mut proc = list
        .reaper()
        .args(["--jobs", "1", "--stop-timeout", "3s", "--format", "json"])
        .launch()
        .spawn();
    // Docker's stop sends the stop signal first ("kill" event): from then on
    // the stop is under way for its 3 s grace. Interrupt now.
    let under_way = support::wait_until(Duration::from_secs(15), || {
        [&first, &second]
            .iter()
            .any(|s| support::count_docker_events(s.container(), "kill", t0, SystemTime::now()) > 0)
    });
    assert!(under_way, "no stop began: {}", proc.logs());
    proc.kill(nix::sys::signal::Signal::SIGTERM);
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .expect("fleet-reaper exits after SIGTERM");
    assert_eq!(status.code(), Some(75), "{}", proc.logs());
    let json: Value = serde_json::from_str(&proc.stdout()).expect("plan on stdout");
    assert_eq!(json["interrupted"], true);
    let entries = json["sites"].as_array().expect("sites");
    let acted = |action: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| field(e, "action") == action)
            .collect()
    };
    // With --jobs 1 exactly one site was under way: it was stopped to the
    // end; the other was never acted on.
    let stopped = acted("stopped");
    let interrupted = acted("interrupted").len();
    assert_eq!((stopped.len(), interrupted), (1, 1), "{json}");
    let (done, left) = if stopped[0]["site"] == first.name() {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert_eq!(done.state(), "exited");
    assert_eq!(left.state(), "running");
}

// ---------------------------------------------------------------------------
// Must show 2 and 6: with the real fleet-waker under socket activation
// ---------------------------------------------------------------------------

#[test]
fn request_in_flight_through_the_waker_is_not_stopped() {
    require!(Docker, PhpFpm, SocketActivate);
    let site = TestSite::new();
    site.write_conf("2s");
    let reap = support::reaper::over(&site).args(["--stop-timeout", "5s"]);
    let waker = activated(&site, &[]);
    started_quiet(&[&site], PAST_TIMEOUT);
    // A request that takes 5 s and logs nothing until it ends.
    let slow = sleep_request(&site.waker_socket(), "5");
    assert!(
        support::wait_until(Duration::from_secs(10), || open_at(&site.state_file()) == 1),
        "the waker never reported the open connection: {}",
        waker.logs()
    );
    // Past the timeout since the request began: only the open connection
    // keeps the site awake now (no log, no recent start, last start > 2 s).
    sleep(PAST_TIMEOUT);
    assert_outcome(&reap.exits(0), site.name(), ("busy", "none"));
    assert_eq!(site.state(), "running");
    let resp = slow
        .join()
        .expect("request thread")
        .expect("the slow request is answered");
    assert_eq!((resp.status, resp.text()), (200, "slept 5\n".to_owned()));

    // Once it is over and quiet for the timeout, the same site is idle.
    sleep(PAST_TIMEOUT);
    assert_outcome(&reap.pass(), site.name(), ("idle", "stopped"));
    assert_eq!(site.state(), "exited");
    drop(waker);
}

#[test]
fn request_arriving_while_the_reaper_stops_the_container_is_answered() {
    require!(Docker, PhpFpm, SocketActivate);
    // Docker's stop lasts its whole grace period (2 s) before SIGKILL, a
    // window wide enough to send requests into for certain.
    let site = slow_to_stop();
    site.write_conf("2s");
    let waker = activated(&site, &[]);
    // One request through the waker so that it runs (socket activation),
    // then quiet for longer than the timeout.
    site.start();
    says_hello(&site, "first request", || waker.logs());
    // A pass that sees that request (as the timer's would), then quiet for
    // longer than the timeout.
    let seen = support::reaper::over(&site).pass();
    assert_eq!(seen.site(site.name())["action"], "none", "{}", seen.stdout);
    sleep(PAST_TIMEOUT);

    let t0 = SystemTime::now();
    let mut pass = support::reaper::over(&site)
        .args(["--stop-timeout", "2s"])
        .launch()
        .spawn();
    let event_times = |event: &str| site.event_times(event, t0);
    let ask = |n: usize| says_hello(&site, &format!("request {n}"), || waker.logs());
    // Docker has sent the stop signal: the stop is under way.
    let mut kill = Vec::new();
    assert!(
        support::wait_until(Duration::from_secs(15), || {
            kill = event_times("kill");
            !kill.is_empty()
        }),
        "the reaper never stopped the container: {}",
        pass.logs()
    );
    // Requests while the stop is under way, keeping clear of the SIGKILL at
    // the end of the grace period.
    let mut sent = 0;
    while SystemTime::now() < kill[0] + Duration::from_millis(1200) {
        assert!(pass.try_status().is_none(), "the reaper finished too early");
        ask(sent);
        sent += 1;
        sleep(Duration::from_millis(50));
    }
    let during_stop = sent;
    assert!(sent > 0, "no request was sent while the stop was under way");
    // The container dies (SIGKILL after the grace); requests now need the
    // waker to wake it again.
    assert!(
        support::wait_until(Duration::from_secs(15), || !event_times("die").is_empty()),
        "the container never died"
    );
    for _ in 0..3 {
        ask(sent);
        sent += 1;
    }
    let status = pass
        .wait_exit(Duration::from_secs(30))
        .expect("the reaper finishes");
    assert_eq!(status.code(), Some(0), "{}", pass.logs());
    let plan: Value = serde_json::from_str(&pass.stdout()).expect("plan");
    assert_eq!(plan["sites"][0]["action"], "stopped", "{plan}");
    // The waker woke it again.
    assert!(!event_times("start").is_empty(), "no start after the stop");
    assert_eq!(site.state(), "running");
    eprintln!(
        "{sent} requests, {during_stop} while the stop was under way, 3 after the container \
         died: all answered"
    );
}
