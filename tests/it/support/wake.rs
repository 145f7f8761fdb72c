//! Helpers shared by the tests that drive fleet-waker (`waker`, `faults`,
//! `relay`, `tenant`, `fleet`).

use std::path::Path;
use std::sync::Barrier;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{
    FcgiRequest, FcgiResponse, Launch, SiteOptions, SocketActivated, Spawned, TestSite, bin,
    count_docker_events, exchange, fastcgi, wait_until,
};

/// fleet-waker for `site` (its name and layout) with `extra` arguments and
/// `RUST_LOG=debug`, to be run.
pub fn waker(site: &TestSite, extra: &[&str]) -> Launch {
    Launch::new(bin("fleet-waker"))
        .arg(site.name())
        .args(extra)
        .envs(site.layout_env())
        .env("RUST_LOG", "debug")
}

/// [`waker`] binding the site's socket itself (`--listen`), with `env` on
/// top (a `RUST_LOG` there must keep info lines), once it logs "accepting
/// connections". No probe connection: one the waker counts could be taken
/// for a test's own request in its state file.
pub fn listening_with(site: &TestSite, extra: &[&str], env: &[(&str, String)]) -> Spawned {
    let w = waker(site, extra)
        .arg("--listen")
        .arg(site.waker_socket())
        .envs(env.iter().cloned())
        .spawn();
    assert!(
        w.wait_for_log("accepting connections", Duration::from_secs(10)),
        "waker did not listen on {}: {}",
        site.waker_socket().display(),
        w.logs()
    );
    w
}

/// [`listening_with`] with no more environment.
pub fn listening_site(site: &TestSite, extra: &[&str]) -> Spawned {
    listening_with(site, extra, &[])
}

/// The waker `w` has already logged `needle` (for a line it writes before
/// what the test just saw happen).
pub fn has_logged(w: &Spawned, needle: &str) {
    let logs = w.logs();
    assert!(
        logs.contains(needle),
        "waker has not logged {needle:?}:\n{logs}"
    );
}

/// Waits (10 s at most) until the waker `w`'s log has `needle`.
pub fn logged(w: &Spawned, needle: &str) {
    assert!(
        w.wait_for_log(needle, Duration::from_secs(10)),
        "waker never logged {needle:?}:\n{}",
        w.logs()
    );
}

/// One `hello.php` request over FastCGI to `socket`.
pub fn hello(socket: &Path) -> std::io::Result<FcgiResponse> {
    fastcgi::request(socket, &FcgiRequest::get("hello.php", ""))
}

/// A stopped (exited) container: started once, then `docker stop`.
pub fn stopped_site(options: SiteOptions) -> TestSite {
    let site = TestSite::with_options(options);
    site.start();
    site.stop();
    assert_eq!(site.state(), "exited");
    site
}

/// Docker logged exactly one start of `site`'s container since `t0`.
pub fn assert_one_start(site: &TestSite, t0: SystemTime, logs: &str) {
    let n = count_docker_events(site.container(), "start", t0, SystemTime::now());
    assert_eq!(n, 1, "starts since t0; waker logs:\n{logs}");
}

/// The waker `w` logged that it cannot write its state file once, not per
/// connection.
pub fn assert_state_file_failure_logged_once(w: &Spawned) {
    let logs = w.logs();
    let n = logs.matches("cannot write the activity state file").count();
    assert_eq!(n, 1, "logged once, not per connection:\n{logs}");
}

/// A pid that surely is gone (a waker's, a test process's): a child we ran
/// and reaped.
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    child.wait().expect("wait true");
    child.id()
}

/// Host pids of the container's processes whose command line contains `needle`.
pub fn container_pids(site: &TestSite, needle: &str) -> Vec<i32> {
    let out = super::docker_ok(&["top", site.container(), "-o", "pid,args"]);
    out.lines()
        .skip(1)
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The waker under real socket activation on the site's vhost-waker.sock.
pub fn activated(site: &TestSite, extra: &[&str]) -> SocketActivated {
    waker(site, extra).activate(&site.waker_socket())
}

/// True for the waker's own FastCGI answer to a wake it did not try
/// (backing off, or the host's wake queue too long): a 503 with
/// `Retry-After`.
pub fn is_retry_later(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    text.contains("Status: 503 Service Unavailable\r\n") && text.contains("Retry-After: ")
}

/// `hello.php` through `socket`, retried while the waker answers "retry
/// later" (its crash-loop back-off after failed starts), for up to `max`.
pub fn hello_after_backoff(socket: &Path, max: Duration) -> std::io::Result<FcgiResponse> {
    let t = Instant::now();
    loop {
        let r = hello(socket)?;
        if r.status != 503 || r.header("Retry-After").is_none() || t.elapsed() > max {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`listening_with`] `RUST_LOG=info` (a test that reads its log).
pub fn listening_quiet(site: &TestSite, extra: &[&str], env: &[(&str, String)]) -> Spawned {
    listening_with(site, extra, &[env, &[("RUST_LOG", "info".into())]].concat())
}

/// Waits (10 s at most) until php-fpm itself runs `n` requests, so the
/// waker has relayed them: its status page, answered by one more worker,
/// shows `n + 1` active. The pool needs `n + 1` workers.
pub fn fpm_runs(site: &TestSite, n: u64, w: &Spawned) {
    let serving = || {
        super::query_within(&site.fpm_socket(), Duration::from_secs(2))
            .is_ok_and(|s| s.active_processes > n)
    };
    assert!(
        wait_until(Duration::from_secs(10), serving),
        "php-fpm never ran {n} requests at once: {}",
        w.logs()
    );
}

pub use xtask::kit::process::fd_count;

/// The open connection count in the waker's state file at `path` (0 while
/// there is no readable one).
pub fn open_at(path: &Path) -> u64 {
    let activity = fleet_core::state::load(path).ok().flatten();
    activity.map_or(0, |a| a.open)
}

/// `sleep.php?s=<secs>` through `socket`, on a thread of its own.
pub fn sleep_request(socket: &Path, secs: &str) -> JoinHandle<std::io::Result<FcgiResponse>> {
    let (socket, query) = (socket.to_path_buf(), format!("s={secs}"));
    std::thread::spawn(move || fastcgi::request(&socket, &FcgiRequest::get("sleep.php", &query)))
}

/// `f` on `n` threads at once; their results in order.
pub fn on_threads<T: Send>(n: usize, f: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..n).map(|_| s.spawn(&f)).collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    })
}

/// `n` `hello.php` requests through `site`'s waker `w`, all let go at once
/// (a barrier): each answered with the site's hello, and Docker logged
/// exactly one start of the container meanwhile. How long they took.
pub fn concurrent_hellos_one_start(site: &TestSite, w: &Spawned, n: usize) -> Duration {
    let barrier = Barrier::new(n);
    let t0 = SystemTime::now();
    let started = Instant::now();
    let answers = on_threads(n, || {
        barrier.wait();
        hello(&site.waker_socket())
    });
    let elapsed = started.elapsed();
    for r in answers {
        let r = r.expect("an answer through the waker");
        assert_eq!(
            (r.status, r.text()),
            (200, site.hello_line()),
            "{}",
            w.logs()
        );
    }
    assert_one_start(site, t0, &w.logs());
    elapsed
}

/// The waker flags of the held-connection tests: a 4 s start timeout. The
/// same waker must then recover, starting the container within it: that
/// took up to 0.84 s at a load average of 12, and 2 s was once too short.
pub const START_TIMEOUT: &[&str] = &["--start-timeout", "4s"];
/// How soon a held connection must be closed under [`START_TIMEOUT`]: the
/// timeout plus 1 s.
pub const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// Holds `k` connections at the site's waker `w`, each sending a request,
/// and returns how long each took to be closed (EOF or error, no answer):
/// each within `limit`, and the waker still up.
pub fn held_closed_within(
    site: &TestSite,
    w: &mut Spawned,
    k: usize,
    limit: Duration,
) -> Vec<Duration> {
    let request = fastcgi::encode_request(&FcgiRequest::get("hello.php", ""));
    let times = on_threads(k, || {
        let t = Instant::now();
        // Held 30 s, it is closed after `limit`: checked below.
        let buf = exchange(&site.waker_socket(), &request, Duration::from_secs(30));
        assert!(
            buf.is_empty() || is_retry_later(&buf),
            "a failed wake must not answer, except the waker's own 503 while it backs off ({} bytes: {:?})",
            buf.len(),
            String::from_utf8_lossy(&buf)
        );
        t.elapsed()
    });
    for t in &times {
        assert!(
            *t <= limit,
            "held connection closed (or still open at the 30 s read timeout) after {t:?} > {limit:?}\n{}",
            w.logs()
        );
    }
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    times
}
