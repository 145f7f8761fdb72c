//! Real nginx on free 127.0.0.1 ports, configured only from the shipped
//! `contrib/nginx` files: a snippet of `xtask::kit::nginx::site_snippet` (plus what
//! a test adds on top, through the `Snippet` methods) or whole site files,
//! rendered and launched by the kit's one renderer and launcher (`xtask::kit::nginx`).

use std::path::Path;

use xtask::kit::nginx::{
    Mode, NginxProc, Snippet, nginx_user, render_nginx_conf, render_sites_conf, site_snippet,
};

use super::{TestSite, free_port};
use xtask::error::chain;

/// The shipped snippet of `mode` for `site`, as a host runs it: proxy mode
/// passes to the site's waker socket, direct mode to its php-fpm socket with
/// the waker's as backup.
pub fn shipped(mode: Mode, site: &TestSite) -> Snippet {
    site_snippet(mode, site.name(), &site.layout().run_dir)
        .expect("the shipped contrib/nginx snippet templates")
}

/// The shipped proxy-mode location passing to `target` (`unix:<socket>` or
/// an upstream's name) instead of a site's waker socket.
pub fn shipped_location_to(target: &str) -> Snippet {
    site_snippet(Mode::Proxy, "example.com", Path::new("/run/docker-apps"))
        .expect("the shipped contrib/nginx snippet templates")
        .passing_to(target)
}

/// `start()`, again (up to 5 times) while its failure says an address is
/// in use: a free port is racy, another process may take it first. Panics
/// with the last failure.
pub fn retry_on_taken_port<T>(what: &str, start: impl Fn() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _attempt in 0..5 {
        match start() {
            Ok(started) => return started,
            Err(e) if e.contains("already in use") => last = e,
            Err(e) => panic!("{what} did not start: {e}"),
        }
    }
    panic!("{what} did not start: {last}");
}

/// A running nginx ([`NginxProc`]) and the temp dir holding its config,
/// pid, logs and temp paths. Field order = drop order: nginx, then its dir.
#[derive(Debug)]
pub struct Nginx {
    proc: NginxProc,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx running `snippet` in a `server` on a free port, its workers as
    /// [`nginx_user`] (www-data when root, like Debian's).
    pub fn start(snippet: &Snippet) -> Nginx {
        Self::start_retrying("nginx with the shipped snippet", |dir, user| {
            let port = free_port();
            (render_nginx_conf(dir, port, user, snippet), vec![port])
        })
    }

    /// nginx running whole site files, as `/etc/nginx/sites-enabled/*` would
    /// be: `render(ports)` gets `count` free loopback ports and returns the
    /// files' text (one `listen` port each, typically).
    pub fn start_site_files(count: usize, render: impl Fn(&[u16]) -> Vec<String>) -> Nginx {
        Self::start_retrying("nginx with the site files", |dir, user| {
            let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
            let sites = dir.join("sites-enabled");
            std::fs::create_dir(&sites).expect("sites-enabled dir");
            for (i, text) in render(&ports).iter().enumerate() {
                std::fs::write(sites.join(format!("site{i}")), text).expect("write site file");
            }
            (render_sites_conf(dir, user), ports)
        })
    }

    /// Starts nginx on the config `prepare` renders for a fresh temp dir
    /// and the workers' user (with the ports it listens on); a port taken
    /// meanwhile by someone else is retried with new ones, up to 5 times.
    fn start_retrying(
        what: &str,
        prepare: impl Fn(&Path, Option<&str>) -> (String, Vec<u16>),
    ) -> Nginx {
        let user = nginx_user();
        retry_on_taken_port(what, || {
            let dir = super::temp_dir("nginx");
            let (conf, ports) = prepare(dir.path(), user.as_deref());
            let proc = NginxProc::start_conf(dir.path(), &conf, &ports).map_err(|e| chain(&e))?;
            Ok(Nginx { proc, _dir: dir })
        })
    }
}

/// Its ports and logs are the [`NginxProc`]'s.
impl std::ops::Deref for Nginx {
    type Target = NginxProc;

    fn deref(&self) -> &NginxProc {
        &self.proc
    }
}
