//! [`Stack`]: one site end to end as production runs it: a [`TestSite`],
//! fleet-waker under `systemd-socket-activate` on the site's waker socket,
//! and real nginx with the shipped `contrib/nginx` snippet of a [`Mode`]
//! (templated by `xtask::kit::nginx::site_snippet`, so the tested config IS the
//! shipped one). Used by `direct` and `sleep`.

use std::path::Path;

use xtask::kit::nginx::{Mode, share_socket_with_nginx};

use super::nginx::{Nginx, shipped};
use super::{HttpResponse, Launch, SocketActivated, TestSite, bin, http};

/// A site, its waker under socket activation and nginx with the shipped
/// snippet of `mode`. Field order = drop order: nginx, waker, then the site.
pub struct Stack {
    /// nginx in front (its port: `nginx.port()`).
    pub nginx: Nginx,
    /// fleet-waker, activated by the first connection to the waker socket.
    pub waker: SocketActivated,
    /// The site and its container.
    pub site: TestSite,
    /// Which shipped snippet nginx runs.
    pub mode: Mode,
}

impl Stack {
    /// A new [`TestSite`] (container created, not started) behind nginx in `mode`.
    pub fn new(mode: Mode) -> Stack {
        Self::with_site(mode, TestSite::new())
    }

    /// `site` (e.g. from [`TestSite::with_options`]) behind nginx in `mode`.
    pub fn with_site(mode: Mode, site: TestSite) -> Stack {
        let waker = Launch::new(bin("fleet-waker"))
            .arg(site.name())
            .envs(site.layout_env())
            .env("RUST_LOG", "debug")
            .activate(&site.waker_socket());
        share_socket_with_nginx(&site.waker_socket()).expect("chgrp/chmod the waker socket");
        let nginx = Nginx::start(&shipped(mode, &site));
        Stack {
            nginx,
            waker,
            site,
            mode,
        }
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
    pub fn activity(&self) -> Option<fleet_core::state::Activity> {
        fleet_core::state::load(&self.site.state_file()).expect("state file readable")
    }

    /// How many times nginx fell back from php-fpm's socket (direct mode).
    pub fn fallbacks(&self) -> usize {
        fallbacks(&self.nginx.error_log(), &self.site.fpm_socket())
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

/// The `connect() … failed` lines nginx logs when php-fpm's socket refuses
/// (direct mode's fallback to the waker).
pub fn fallbacks(error_log: &str, fpm_socket: &Path) -> usize {
    let needle = format!("{}", fpm_socket.display());
    error_log
        .lines()
        .filter(|l| l.contains("connect()") && l.contains("failed") && l.contains(&needle))
        .count()
}
