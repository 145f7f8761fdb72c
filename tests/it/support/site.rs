//! [`TestSite`] is the kit's site ([`xtask::kit::site`], shared with the
//! benches and the soak); [`SiteExt`] adds what only the tests look at:
//! FastCGI straight to its php-fpm and its Docker events.

use std::time::{Duration, SystemTime};

pub use xtask::kit::site::{
    STATUS_DISABLED_PATH, SiteOptions, TestSite, big_body, hello_line, image, reap_leftovers,
    reap_leftovers_now, umount_under,
};

/// The tests' additions to [`TestSite`], built on their own FastCGI client
/// and Docker event reader.
pub trait SiteExt {
    /// One FastCGI request straight to this site's php-fpm.sock.
    fn fcgi(&self, req: &super::FcgiRequest) -> std::io::Result<super::FcgiResponse>;

    /// Times of the container's Docker `event` events (`start`, `pause`,
    /// `unpause`, `kill`, `die`, …) from `since` until now.
    fn event_times(&self, event: &str, since: SystemTime) -> Vec<SystemTime>;
}

impl SiteExt for TestSite {
    fn fcgi(&self, req: &super::FcgiRequest) -> std::io::Result<super::FcgiResponse> {
        super::fastcgi::request(&self.fpm_socket(), req)
    }

    fn event_times(&self, event: &str, since: SystemTime) -> Vec<SystemTime> {
        let c = format!("container={}", self.container());
        let e = format!("event={event}");
        super::docker_events(since, SystemTime::now(), &["type=container", &c, &e])
            .iter()
            .map(|l| {
                // An event that cannot be read fails the count, not just drops out of it.
                let v: Option<serde_json::Value> = serde_json::from_str(l).ok();
                let n = v.and_then(|v| v["timeNano"].as_u64());
                let n = n.unwrap_or_else(|| panic!("a Docker event without timeNano: {l}"));
                SystemTime::UNIX_EPOCH + Duration::from_nanos(n)
            })
            .collect()
    }
}

/// `docker inspect` state, start and finish times and pid, as one comparable
/// string: what must not change in a dry run (or while a site is busy).
pub fn fingerprint(site: &TestSite) -> String {
    let format = "{{.State.Status}} {{.State.StartedAt}} {{.State.FinishedAt}} {{.State.Pid}}";
    super::docker_ok(&["inspect", "--format", format, site.container()])
        .trim()
        .to_owned()
}
