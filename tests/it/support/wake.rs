//! Helpers shared by the tests that drive fleet-waker (`waker`, `faults`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{
    FcgiRequest, FcgiResponse, Launch, SiteOptions, SocketActivated, Spawned, TestSite, bin,
    count_docker_events, fastcgi, wait_until,
};

/// fleet-waker for site `name` binding `listen` itself (`--listen`), with
/// `RUST_LOG=debug`; waits until it accepts.
pub fn listening(name: &str, listen: &Path, extra: &[&str], env: Vec<(String, String)>) -> Spawned {
    started(name, listen, extra, env, "debug")
}

/// fleet-waker `name --listen <listen>` with `RUST_LOG=<level>`, once it
/// logs "accepting connections". No probe connection: one the waker counts
/// could be taken for a test's own request in its state file.
fn started(
    name: &str,
    listen: &Path,
    extra: &[&str],
    env: Vec<(String, String)>,
    level: &str,
) -> Spawned {
    let w = Launch::new(bin("fleet-waker"))
        .arg(name)
        .arg("--listen")
        .arg(listen)
        .args(extra)
        .envs(env)
        // After the caller's: the wait below reads an info line.
        .env("RUST_LOG", level)
        .spawn();
    assert!(
        w.wait_for_log("accepting connections", Duration::from_secs(10)),
        "waker did not listen on {}: {}",
        listen.display(),
        w.logs()
    );
    w
}

/// [`listening`] on the site's own waker socket and layout.
pub fn listening_site(site: &TestSite, extra: &[&str]) -> Spawned {
    listening(site.name(), &site.waker_socket(), extra, site.layout_env())
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
    Launch::new(bin("fleet-waker"))
        .arg(site.name())
        .args(extra)
        .envs(site.layout_env())
        .env("RUST_LOG", "debug")
        .activate(&site.waker_socket())
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

/// fleet-waker for `site` binding the site's socket itself, with `extra`
/// arguments and environment, `RUST_LOG=info` (a test that reads its log).
pub fn listening_quiet(site: &TestSite, extra: &[&str], env: &[(&str, String)]) -> Spawned {
    let mut vars = site.layout_env();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    started(site.name(), &site.waker_socket(), extra, vars, "info")
}

/// The waker's state file at `path`, if there is a readable one.
pub fn activity(path: &Path) -> Option<fleet_core::state::Activity> {
    fleet_core::state::load(path).ok().flatten()
}

/// The open connection count in the waker's state file at `path` (0 while
/// there is none).
pub fn open_at(path: &Path) -> u64 {
    activity(path).map_or(0, |a| a.open)
}

/// `sleep.php?s=<secs>` through `socket`, on a thread of its own.
pub fn sleep_request(socket: &Path, secs: &str) -> JoinHandle<std::io::Result<FcgiResponse>> {
    let (socket, query) = (socket.to_path_buf(), format!("s={secs}"));
    std::thread::spawn(move || fastcgi::request(&socket, &FcgiRequest::get("sleep.php", &query)))
}

/// `n` `hello.php` requests through `socket`, all let go at once (a
/// barrier); their answers in order.
pub fn concurrent_hellos(socket: &Path, n: usize) -> Vec<std::io::Result<FcgiResponse>> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (b, s) = (barrier.clone(), socket.to_path_buf());
            std::thread::spawn(move || {
                b.wait();
                hello(&s)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

/// The waker flags of the held-connection tests: a 2 s start timeout.
pub const START_TIMEOUT: &[&str] = &["--start-timeout", "2s"];
/// How soon a held connection must be closed under [`START_TIMEOUT`]: the
/// timeout plus 1 s.
pub const CLOSED_WITHIN: Duration = Duration::from_secs(3);

/// Holds `k` connections at the site's waker `w`, each sending a request,
/// and returns how long each took to be closed (EOF or error, no answer):
/// each within `limit`, and the waker still up.
pub fn held_closed_within(
    site: &TestSite,
    w: &mut Spawned,
    k: usize,
    limit: Duration,
) -> Vec<Duration> {
    let socket = site.waker_socket();
    let threads: Vec<_> = (0..k)
        .map(|_| {
            let s = socket.to_path_buf();
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut c = UnixStream::connect(&s).expect("connect to the waker");
                c.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let _ = c.write_all(&fastcgi::encode_request(&FcgiRequest::get("hello.php", "")));
                let mut buf = Vec::new();
                let r = c.read_to_end(&mut buf);
                assert!(
                    buf.is_empty() || is_retry_later(&buf),
                    "a failed wake must not answer, except the waker's own 503 while it backs off ({} bytes: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                );
                if let Err(e) = r {
                    assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "held 30 s");
                }
                t.elapsed()
            })
        })
        .collect();
    let times: Vec<Duration> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    for t in &times {
        assert!(
            *t <= limit,
            "held connection closed after {t:?} > {limit:?}\n{}",
            w.logs()
        );
    }
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    times
}
