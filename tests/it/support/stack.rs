//! [`Stack`]: one site end to end as production runs it: a [`TestSite`],
//! fleet-waker under `systemd-socket-activate` on the site's waker socket,
//! and real nginx with the shipped `contrib/nginx` snippet of a [`Mode`]
//! (templated by `xtask::kit::nginx::site_snippet`, so the tested config IS the
//! shipped one). Used by `direct` and `sleep`.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use fleet_core::state::Activity;
use xtask::kit::nginx::{Mode, share_socket_with_nginx};

use super::nginx::{Nginx, shipped};
use super::wake::activated;
use super::{HttpResponse, SocketActivated, TestSite, http, wait_until};

/// A site, its waker under socket activation and nginx with the shipped
/// snippet of `mode`. Field order = drop order: nginx, waker, then the site.
pub struct Stack {
    /// nginx in front (its port: `nginx.port()`).
    pub nginx: Nginx,
    /// fleet-waker, activated by the first connection to the waker socket.
    pub waker: SocketActivated,
    /// The site and its container.
    pub site: TestSite,
}

impl Stack {
    /// A new [`TestSite`] (container created, not started) behind nginx in `mode`.
    pub fn new(mode: Mode) -> Stack {
        Self::with_site(mode, TestSite::new())
    }

    /// `site` (e.g. from [`TestSite::with_options`]) behind nginx in `mode`.
    pub fn with_site(mode: Mode, site: TestSite) -> Stack {
        let waker = waker_for_nginx(&site);
        let nginx = Nginx::start(&shipped(mode, &site));
        Stack { nginx, waker, site }
    }

    /// `GET <path>` through nginx (panics on a transport error).
    pub fn get(&self, path: &str) -> HttpResponse {
        http::get(self.nginx.port(), path).expect("HTTP GET through nginx")
    }

    /// `GET /hello.php` through nginx, asserted with [`Stack::assert_hello`].
    pub fn hello(&self, what: &str) -> HttpResponse {
        let r = self.get("/hello.php");
        self.assert_hello(&r, what);
        r
    }

    /// Asserts `r` is `hello.php`'s 200 for this site; on failure prints
    /// [`Stack::diagnostics`].
    pub fn assert_hello(&self, r: &HttpResponse, what: &str) {
        assert_eq!(
            (r.status, r.text()),
            (200, self.site.hello_line()),
            "{what}:\n{}",
            self.diagnostics()
        );
    }

    /// The waker's activity state file, if written yet.
    pub fn activity(&self) -> Option<Activity> {
        fleet_core::state::load(&self.site.state_file()).expect("state file readable")
    }

    /// [`activity_until`] of this site.
    pub fn activity_until(&self, what: impl Display, done: impl Fn(&Activity) -> bool) -> Activity {
        activity_until(&self.site, what, done)
    }

    /// How many times nginx fell back from php-fpm's socket (direct mode).
    pub fn fallbacks(&self) -> usize {
        connect_failures(&self.nginx.error_log(), &self.site.fpm_socket()).len()
    }

    /// nginx's error log, the waker's log and the container's log, for
    /// failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- nginx error log:\n{}\n--- waker ({}):\n{}\n--- container ({}):\n{}",
            self.nginx.error_log(),
            if self.waker.activated() {
                "activated"
            } else {
                "never activated"
            },
            self.waker.logs(),
            self.site.state(),
            self.site.logs()
        )
    }
}

/// Waits (5 s: the waker writes its state file every 20 ms) until `site`'s
/// activity satisfies `done`, and returns it; panics naming `what`.
pub fn activity_until(
    site: &TestSite,
    what: impl Display,
    done: impl Fn(&Activity) -> bool,
) -> Activity {
    let mut last = None;
    let reached = wait_until(Duration::from_secs(5), || {
        last = fleet_core::state::load(&site.state_file()).expect("state file readable");
        last.as_ref().is_some_and(&done)
    });
    assert!(reached, "{what}: the waker's state is {last:?}");
    last.expect("reached")
}

/// fleet-waker for `site` under socket activation, its socket shared with
/// nginx's workers.
pub fn waker_for_nginx(site: &TestSite) -> SocketActivated {
    let waker = activated(site, &[]);
    share_socket_with_nginx(&site.waker_socket()).expect("chgrp/chmod the waker socket");
    waker
}

/// The `connect() … failed` lines nginx logs when php-fpm's socket at
/// `fpm_socket` refuses or is missing (direct mode's fallback to the waker).
pub fn connect_failures(error_log: &str, fpm_socket: &Path) -> Vec<String> {
    let needle = fpm_socket.display().to_string();
    error_log
        .lines()
        .filter(|l| l.contains("connect()") && l.contains("failed") && l.contains(&needle))
        .map(str::to_string)
        .collect()
}
