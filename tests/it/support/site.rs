//! [`TestSite`]: the kit's site ([`xtask::kit::site`], shared with the
//! benches and the soak) plus what only the tests look at: FastCGI straight
//! to its php-fpm, its logs and its Docker events.

use std::time::{Duration, SystemTime};

pub use xtask::kit::site::{
    COUNT_LOG, SCRIPTS, STATUS_DISABLED_PATH, SiteOptions, big_body, hello_line, image,
    reap_leftovers, reap_leftovers_now, umount_under,
};

/// A site with its own directories and a created `<site>.fpm` container
/// (see [`xtask::kit::site::TestSite`], whose methods it has); removed on
/// drop, also when the test panics.
#[derive(Debug)]
pub struct TestSite(xtask::kit::site::TestSite);

impl std::ops::Deref for TestSite {
    type Target = xtask::kit::site::TestSite;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TestSite {
    /// A new site with a created (stopped) container. Needs Docker and php-fpm
    /// (`require!(Docker, PhpFpm)` first).
    pub fn new() -> TestSite {
        Self::with_options(SiteOptions::default())
    }

    /// Like [`TestSite::new`] with php-fpm worker count / extra docker args.
    pub fn with_options(options: SiteOptions) -> TestSite {
        TestSite(xtask::kit::site::TestSite::with_options(options))
    }

    /// `docker start` and wait (≤ 20 s) until php-fpm.sock accepts; panics
    /// with the reason and the container's logs otherwise.
    pub fn start(&self) {
        if let Err(e) = self.0.try_start() {
            panic!("{}; logs:\n{}", xtask::error::chain(&e), self.logs());
        }
    }

    /// Wait until php-fpm.sock accepts a connection; panic (with the
    /// container's logs) after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        if let Err(e) = self.0.try_wait_ready(timeout) {
            panic!("{}; logs:\n{}", xtask::error::chain(&e), self.logs());
        }
    }

    /// One FastCGI request straight to this site's php-fpm.sock.
    pub fn fcgi(&self, req: &super::FcgiRequest) -> std::io::Result<super::FcgiResponse> {
        super::fastcgi::request(&self.fpm_socket(), req)
    }

    /// Times of the container's Docker `event` events (`start`, `pause`,
    /// `unpause`, `kill`, `die`, …) from `since` until now.
    pub fn event_times(&self, event: &str, since: SystemTime) -> Vec<SystemTime> {
        let c = format!("container={}", self.container());
        let e = format!("event={event}");
        super::docker_events(since, SystemTime::now(), &["type=container", &c, &e])
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["timeNano"].as_u64())
            .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n))
            .collect()
    }

    /// `docker logs` (stdout and stderr together; php-fpm logs to stderr,
    /// one `fpm-access <METHOD> <URI> status=… duration_ms=…` line per request
    /// unless [`SiteOptions::access_log`] is off).
    pub fn logs(&self) -> String {
        let out = super::docker(&["logs", self.container()]);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    /// The `fpm-access` lines of [`TestSite::logs`].
    pub fn access_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.starts_with("fpm-access "))
            .map(str::to_string)
            .collect()
    }
}
