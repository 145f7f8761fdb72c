//! nginx configurations end to end, with the shipped snippets from
//! `contrib/nginx/` (templated by `xtask::kit::nginx::site_snippet`, so the tested
//! config IS the shipped one): real nginx, fleet-waker under
//! `systemd-socket-activate`, a real php-fpm container.
//!
//! * Direct mode (php-fpm's socket first, the waker's socket as `backup`):
//!   a cold request is served through the waker; warm requests bypass the
//!   waker (they still work after the waker is gone); a POST to a sleeping
//!   site (stale php-fpm.sock) reaches PHP exactly once, body byte-exact.
//! * Proxy mode: cold and warm, every request through the waker.

use std::time::Duration;

use xtask::kit::nginx::Mode;

use crate::support::{SiteOptions, Stack, TestSite, http, note, require, wait_until};

#[test]
fn direct_mode_cold_start_goes_through_the_waker_and_warm_traffic_bypasses_it() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let mut s = Stack::new(Mode::Direct);
    assert_eq!(s.site.state(), "created");
    assert!(!s.waker.activated());

    // Cold: php-fpm.sock does not exist, nginx falls back to the waker.
    s.hello("cold request");
    assert!(
        s.waker.activated(),
        "the cold request must have gone through the waker"
    );
    assert_eq!(s.site.state(), "running");
    assert_eq!(
        s.fallbacks(),
        1,
        "exactly one fallback (php-fpm.sock refused once): {}",
        s.nginx.error_log()
    );

    // The waker saw that connection end.
    let before = s.activity_until("after the cold request", |a| {
        a.open == 0 && a.last_end.is_some()
    });

    // Warm requests go straight to php-fpm: the waker's activity does not move…
    for i in 0..20 {
        s.hello(&format!("warm request {i}"));
    }
    assert_eq!(
        s.activity(),
        Some(before),
        "warm requests must not reach the waker"
    );

    // …and they keep working with the waker gone entirely (its socket then
    // refuses, so any request that touched it would fail with 502).
    s.waker.kill(nix::sys::signal::Signal::SIGTERM);
    let status = s.waker.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|st| st.success()),
        "waker exit on SIGTERM: {status:?}"
    );
    for i in 0..20 {
        s.hello(&format!("warm request {i} with the waker stopped"));
    }
    assert_eq!(s.fallbacks(), 1);
    note("direct mode: cold via waker, 40 warm requests bypassed it (20 with the waker gone)");
}

#[test]
fn direct_mode_post_to_a_sleeping_site_reaches_php_exactly_once() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let s = Stack::new(Mode::Direct);
    // Asleep the hard way: killed, so php-fpm.sock is left behind, stale.
    s.site.start();
    s.site.kill();
    assert!(
        wait_until(Duration::from_secs(10), || s.site.state() == "exited"),
        "container state {}",
        s.site.state()
    );
    let fpm = s.site.fpm_socket();
    assert!(fpm.exists(), "a stale php-fpm.sock stays after SIGKILL");
    assert!(std::os::unix::net::UnixStream::connect(&fpm).is_err());

    // 1 MiB of deterministic, non-text bytes.
    let sent: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = http::post(s.nginx.port(), "/echo.php", &sent).expect("POST through nginx");
    assert_eq!(r.status, 200, "POST: {}\n{}", r.text(), s.diagnostics());
    assert_eq!(r.header("X-Method"), Some("POST"));
    assert!(
        r.body == sent,
        "echoed body differs ({} bytes back)",
        r.body.len()
    );
    assert!(
        s.waker.activated(),
        "the POST must have woken the site via the waker"
    );
    assert_eq!(s.fallbacks(), 1);

    // A later marker request: once its access line is in the log, every
    // line of the POST is too.
    let marker = format!("/hello.php?marker={}", std::process::id());
    let m = s.get(&marker);
    s.assert_hello(&m, "marker request");
    let logged = || s.site.access_lines().iter().any(|l| l.contains(&marker));
    assert!(
        wait_until(Duration::from_secs(10), logged),
        "marker access line: {:?}",
        s.site.access_lines()
    );
    let lines = s.site.access_lines();
    let post = |l: &&String| l.starts_with("fpm-access POST /echo.php");
    let posts: Vec<_> = lines.iter().filter(post).collect();
    assert_eq!(
        posts.len(),
        1,
        "PHP must run the POST exactly once: {posts:?}"
    );
    note!(
        "POST of {} bytes to a sleeping site: echoed byte-exact, executed once",
        sent.len()
    );
}

/// Appends its method to `/srv/data/runs.log`, sleeps `s` seconds, then its
/// php-fpm worker dies (SIGKILL) mid-request: nginx sees the request fail
/// after it was sent.
const DIES_PHP: &str = "<?php\nfile_put_contents('/srv/data/runs.log', $_SERVER['REQUEST_METHOD'] . \"\\n\", FILE_APPEND);\nusleep((int)((float)($_GET['s'] ?? 0) * 1000000));\nposix_kill(getmypid(), 9);\n";

/// A request php-fpm has received is never re-sent to the waker (which would
/// run it again): a GET, PUT or DELETE whose worker dies after 1.5 s runs
/// once and gets 502 (`fastcgi_next_upstream_timeout`; nginx retries only a
/// non-idempotent method's connect failure on its own). The fallback itself
/// is instant: a refused connect.
#[test]
fn direct_mode_never_resends_a_request_php_fpm_received() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let mut options = SiteOptions::default().data_dir();
    options.scripts.push(("dies.php".into(), DIES_PHP.into()));
    let s = Stack::with_site(Mode::Direct, TestSite::with_options(options));
    s.hello("cold request");
    let runs = || std::fs::read_to_string(s.site.data_dir().join("runs.log")).unwrap_or_default();
    for (i, method) in ["GET", "PUT", "DELETE"].into_iter().enumerate() {
        let r = http::request(
            s.nginx.port(),
            method,
            "/dies.php?s=1.5",
            None,
            Duration::from_secs(30),
        )
        .expect("request through nginx");
        assert_eq!(r.status, 502, "{method}: {}\n{}", r.text(), s.diagnostics());
        s.hello(&format!("after the {method}"));
        let want: String = ["GET\n", "PUT\n", "DELETE\n"][..=i].concat();
        assert_eq!(runs(), want, "{method} ran again:\n{}", s.diagnostics());
    }
}

#[test]
fn proxy_mode_cold_and_warm_through_the_waker() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let s = Stack::new(Mode::Proxy);
    assert_eq!(s.site.state(), "created");

    let t = std::time::Instant::now();
    s.hello("cold request");
    let cold = t.elapsed();
    assert!(s.waker.activated());
    assert_eq!(s.site.state(), "running");
    let first = s
        .activity_until("after the cold request", |a| {
            a.open == 0 && a.last_start.is_some()
        })
        .last_start;

    // Warm: still through the waker (its activity moves on).
    let t = std::time::Instant::now();
    for i in 0..10 {
        s.hello(&format!("warm request {i}"));
    }
    let warm = t.elapsed() / 10;
    s.activity_until("warm requests in proxy mode go through the waker", |a| {
        a.last_start > first
    });
    // Proxy mode never needs a fallback.
    assert_eq!(s.fallbacks(), 0);
    note!("proxy mode: cold {cold:?}, warm {warm:?} per request");
}
