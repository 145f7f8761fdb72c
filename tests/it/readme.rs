//! The README's nginx files, rendered as they are shown (extracted from
//! README.md by their `<!-- fleet:file … -->` markers, which a unit test of
//! `xtask::readme` holds equal to `contrib/nginx/`), two sites at once in
//! one real nginx, each site with its own fleet-waker under socket
//! activation and a real php-fpm container.
//!
//! What a test changes in a file, and nothing else: `listen 80;` becomes a
//! free loopback port, `/run/docker-apps/<site>/` the test site's runtime
//! directory, and the example names (`example.com`, `example_com`, and
//! `example.org` …) the test sites'. The docroot is `/srv/www/<site>` in the
//! container, as the README's `docker create` mounts it.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use xtask::readme::{README, file};

use crate::support::reaper::{self, ReaperExt as _};
use crate::support::stack::{connect_failures, waker_for_nginx};
use crate::support::{Nginx, SocketActivated, TestSite, http, note, require, wait_until};

/// One site: its container, its waker, and a PHP script that only exists
/// at `/srv/www/<site>/where.php` inside the container.
struct Site {
    waker: SocketActivated,
    site: TestSite,
}

fn site() -> Site {
    let site = TestSite::new();
    // The TestSite's docroot is /srv/www in the container; its <site>
    // subdirectory is /srv/www/<site>, the README's docroot.
    let docroot = site.docroot().join(site.name());
    std::fs::create_dir(&docroot).expect("docroot/<site>");
    std::fs::write(docroot.join("where.php"), WHERE_PHP).expect("write where.php");
    let waker = waker_for_nginx(&site);
    Site { waker, site }
}

/// `where.php`: prints its own path in the container.
pub(crate) const WHERE_PHP: &str = "<?php\necho __FILE__, \"\\n\";\n";

/// `text` (a README nginx file for `example`, e.g. `example.com`) made
/// concrete for `site` listening on `port`.
pub(crate) fn render(text: &str, example: &str, site: &TestSite, port: u16) -> String {
    assert!(text.contains("listen 80;"), "no `listen 80;` in:\n{text}");
    let run = site.layout().run_dir.display().to_string();
    text.replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            &format!("/run/docker-apps/{example}/"),
            &format!("{run}/{}/", site.name()),
        )
        .replace(
            &example.replace('.', "_"),
            &site.name().replace(['.', '-'], "_"),
        )
        .replace(example, site.name())
}

/// nginx with the README's two files of `mode` (`proxy` or `direct`:
/// `example.com`'s and `example.org`'s), for sites `a` and `b`.
fn nginx(mode: &str, a: &Site, b: &Site) -> Nginx {
    let shown = |name: String| file(README, &name).expect("the README shows the file");
    let first = shown(format!("contrib/nginx/fleet-{mode}-mode.conf"));
    let second = shown(format!("contrib/nginx/fleet-{mode}-mode.example.org.conf"));
    Nginx::start_site_files(2, |ports| {
        vec![
            render(&first, "example.com", &a.site, ports[0]),
            render(&second, "example.org", &b.site, ports[1]),
        ]
    })
}

fn get_where(nginx: &Nginx, i: usize, s: &Site, what: &str) {
    let r = http::get(nginx.ports()[i], "/where.php").expect("HTTP GET through nginx");
    assert_eq!(
        (r.status, r.text()),
        // where.php's answer when nginx's root and the container's mount agree.
        (200, format!("/srv/www/{}/where.php\n", s.site.name())),
        "{what}: nginx:\n{}\nwaker:\n{}\ncontainer:\n{}",
        nginx.error_log(),
        s.waker.logs(),
        s.site.logs()
    );
}

#[test]
fn proxy_mode_files_serve_two_sites() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let (a, b) = (site(), site());
    let nginx = nginx("proxy", &a, &b);
    for (i, s) in [&a, &b].into_iter().enumerate() {
        get_where(&nginx, i, s, "cold");
        assert!(s.waker.activated(), "proxy mode goes through the waker");
        assert_eq!(s.site.state(), "running");
        get_where(&nginx, i, s, "warm");
    }
    note("proxy mode: both README files served their own site, cold and warm");
}

/// Runs fleet-reaper once over `s`'s own on-demand list.
fn reap(s: &Site) {
    let env = s.site.layout_env().into_iter();
    let run = env.fold(reaper::reaper(), |r, (k, v)| r.env(k, v)).pass();
    assert_eq!(run.code, Some(0), "fleet-reaper failed:\n{run}");
}

/// A socket file is at `path` and refuses: what nginx logs at `error`.
fn refuses(path: &Path) -> bool {
    UnixStream::connect(path).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn direct_mode_files_serve_two_sites_and_a_wake_logs_no_crit() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let (a, b) = (site(), site());
    // Both files in one nginx: the second file's own upstream name is what
    // lets nginx start at all (a copy keeping fleet_example_com would be a
    // duplicate upstream).
    let nginx = nginx("direct", &a, &b);

    // Control, site b: never stopped by the reaper, so no file at
    // php-fpm.sock; nginx logs that fallback at crit (ENOENT). This is what
    // the placeholder is for.
    assert!(!b.site.fpm_socket().exists());
    get_where(&nginx, 1, &b, "site b cold, no placeholder");
    let lines = connect_failures(&nginx.error_log(), &b.site.fpm_socket());
    assert!(
        lines.len() == 1 && lines[0].contains("[crit]") && lines[0].contains("(2: "),
        "expected one crit ENOENT line for site b: {lines:#?}"
    );
    get_where(&nginx, 1, &b, "site b warm");

    // Site a is on the reaper's list. Its first pass finds the container
    // stopped (never started) and leaves the placeholder.
    a.site.write_conf("1s");
    assert!(!a.site.fpm_socket().exists());
    reap(&a);
    assert!(
        refuses(&a.site.fpm_socket()),
        "after the reaper's pass a refusing socket file is at php-fpm.sock"
    );
    get_where(&nginx, 0, &a, "site a cold, placeholder");
    assert!(a.waker.activated(), "the fallback went to the waker");
    get_where(&nginx, 0, &a, "site a warm");

    // The reaper stops it once idle (1 s), and leaves the placeholder again
    // where php-fpm removed its socket.
    assert!(
        wait_until(Duration::from_secs(30), || {
            reap(&a);
            a.site.state() == "exited"
        }),
        "the reaper did not stop site a; state {}",
        a.site.state()
    );
    assert!(refuses(&a.site.fpm_socket()), "placeholder after the stop");
    get_where(&nginx, 0, &a, "site a woken after the reaper stopped it");

    let lines = connect_failures(&nginx.error_log(), &a.site.fpm_socket());
    note!("site a's fallback lines: {lines:#?}");
    assert_eq!(lines.len(), 2, "one fallback per wake: {lines:#?}");
    for l in &lines {
        assert!(
            l.contains("[error]") && l.contains("(111: Connection refused)"),
            "a fallback not at error level: {l}"
        );
    }
    let log = nginx.error_log();
    let b_socket = b.site.fpm_socket().display().to_string();
    let crit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[crit]") && !l.contains(&b_socket))
        .collect();
    assert!(
        crit.is_empty(),
        "crit lines beyond site b's control: {crit:#?}"
    );
}
