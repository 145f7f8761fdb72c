//! `cargo xtask soak [--requests N]` (default 1,000,000): N HTTP requests
//! through nginx → fleet-waker → php-fpm (the real image, a running
//! container), driven by wrk with a Lua script that stops each thread after
//! its share. Reports non-2xx answers and socket errors, the waker's RSS at
//! the checkpoint (100k requests, or N/10 when N ≤ 100k) and at the end,
//! and its open descriptors idle before and after. Every nginx → waker
//! request is a new FastCGI connection, so N is also the number of
//! connections the waker proxied.
//!
//! Pass criteria (issue 8): zero non-2xx, RSS growth between checkpoint and
//! end under 1 MiB, descriptors back to the idle count. Exit 1 when one
//! fails, 69 when a component is missing. Not part of `cargo xtask test`.
//! Needs root, Docker, nginx, wrk; builds fleet-waker in release.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xtask::Error;
use xtask::kit::fastcgi::{self, FcgiRequest};
use xtask::kit::process::{Launch, fd_count};

use crate::proc::{NGINX_USER, Rig, rss_kib};
use xtask::kit::free_port;
use xtask::kit::nginx::{Mode, NGINX, NginxProc};
use xtask::wait::wait_until;

/// `cargo xtask soak` arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SoakArgs {
    /// Requests to send (at least 1000; `_` and `,` separators allowed).
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = requests)]
    pub requests: u64,
}

/// clap value parser of `--requests`: a number ≥ 1000, `100_000` or `100,000` too.
fn requests(s: &str) -> Result<u64, Error> {
    s.replace(['_', ','], "")
        .parse()
        .ok()
        .filter(|&n: &u64| n >= 1000)
        .ok_or_else(|| Error::failed(format!("{s:?}"), "needs a number ≥ 1000"))
}

/// The wrk Lua script: each thread stops after `per_thread` responses and
/// drops a file `<flags>/done-<thread>`; wrk's main thread only wakes at
/// `-d` or SIGINT, so the caller sends SIGINT once every thread is done.
fn lua(per_thread: u64, flags: &Path) -> String {
    format!(
        "local limit = {per_thread}\nlocal n = 0\nlocal next_id = 0\n\
         function setup(thread)\n  thread:set(\"id\", next_id)\n  next_id = next_id + 1\nend\n\
         function response(status, headers, body)\n  n = n + 1\n  \
         if n == limit then\n    \
         local f = io.open(\"{}/done-\" .. id, \"w\")\n    if f then f:close() end\n    \
         wrk.thread:stop()\n  end\nend\n",
        flags.display()
    )
}

/// What one wrk run reported.
#[derive(Debug, Default, Clone, Copy)]
struct WrkRun {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    secs: f64,
}

/// Parses wrk's summary: `N requests in Ts`, `Non-2xx or 3xx responses: K`,
/// `Socket errors: connect a, read b, write c, timeout d`.
fn parse_wrk(out: &str) -> Option<WrkRun> {
    let mut r = WrkRun::default();
    let line = out.lines().find(|l| l.contains(" requests in "))?;
    let (n, rest) = line.trim().split_once(" requests in ")?;
    r.requests = n.parse().ok()?;
    let t = rest.split(',').next()?.trim();
    r.secs = if let Some(ms) = t.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1e3
    } else if let Some(m) = t.strip_suffix('m') {
        m.parse::<f64>().ok()? * 60.0
    } else {
        t.strip_suffix('s')?.parse().ok()?
    };
    let field = |name: &str| out.lines().find_map(|l| l.trim().strip_prefix(name));
    if let Some(l) = field("Non-2xx or 3xx responses:") {
        r.non_2xx = l.trim().parse().ok()?;
    }
    if let Some(l) = field("Socket errors:") {
        r.socket_errors = l
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
    }
    Some(r)
}

const THREADS: u64 = 2;
const CONNECTIONS: u64 = 32;

fn wrk(port: u16, dir: &Path, requests: u64) -> Result<WrkRun, Error> {
    let url = format!("http://127.0.0.1:{port}/hello.php");
    let flags = dir.join("flags");
    let _ = std::fs::remove_dir_all(&flags);
    xtask::kit::mkdir(&flags)?;
    let script = dir.join("soak.lua");
    std::fs::write(&script, lua(requests.div_ceil(THREADS), &flags))
        .map_err(Error::io("write", &script))?;
    let t = format!("-t{THREADS}");
    let c = format!("-c{CONNECTIONS}");
    // -d is only the upper bound; the script stops the threads.
    let mut child = Launch::new("wrk")
        .args([&t, &c, "-d", "3600s", "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(&url)
        .same_group()
        .try_spawn()?;
    let all_done = || std::fs::read_dir(&flags).map_or(0, |d| d.count()) as u64 >= THREADS;
    // Polled with a backoff (no event to wait on from wrk's Lua).
    wait_until(Duration::from_secs(3600), all_done);
    // SIGINT makes wrk print its summary and exit.
    child.kill(Signal::SIGINT);
    if child.wait_exit(Duration::from_secs(60)).is_none() {
        let why = format!("did not exit on SIGINT:\n{}", child.logs());
        return Err(Error::failed("wrk", why));
    }
    let out = child.stdout();
    eprintln!("{out}");
    parse_wrk(&out).ok_or_else(|| Error::failed("wrk", format!("cannot read its summary:\n{out}")))
}

/// Runs the soak and prints its Markdown report; fails when a pass
/// criterion does.
pub fn soak(requests: u64) -> Result<(), Error> {
    let rig = Rig::new("soak", &[(NGINX, "nginx-light"), ("/usr/bin/wrk", "wrk")])?;
    let dir = rig.kit.temp_dir();
    let waker_sock = dir.join("waker.sock");
    let mut waker = rig.spawn_waker(&rig.waker_bin, &waker_sock)?;
    let wpid = waker.pid();
    // One request wakes the container (a cold start through the waker).
    let first = fastcgi::request(&waker_sock, &FcgiRequest::get("hello.php", ""));
    if !first.is_ok_and(|r| r.text().contains("hello")) {
        let what = "the first request through the waker";
        return Err(Error::failed(what, "not answered"));
    }
    let state = rig.kit.state_file();
    let open_zero = || matches!(fleet_core::state::load(&state), Ok(Some(a)) if a.open == 0);
    wait_until(Duration::from_secs(2), open_zero);
    let fds_idle = fd_count(wpid);
    let rss_start = rss_kib(wpid).0;

    let port = free_port()?;
    // The shipped proxy-mode location, passing to this waker's socket.
    let snippet = rig
        .snippet(Mode::Proxy)?
        .passing_to(&format!("unix:{}", waker_sock.display()));
    let _nginx = NginxProc::start(&rig.nginx_dir(), port, NGINX_USER, &snippet)?;
    let checkpoint = if requests > 100_000 {
        100_000
    } else {
        requests / 10
    };
    let started = Instant::now();
    let a = wrk(port, dir, checkpoint)?;
    wait_until(Duration::from_secs(5), open_zero);
    let rss_checkpoint = rss_kib(wpid).0;
    let fds_checkpoint = fd_count(wpid);
    eprintln!(
        "==> checkpoint after {} requests: RSS {rss_checkpoint} KiB, {fds_checkpoint} fds",
        a.requests
    );
    let b = wrk(port, dir, requests.saturating_sub(a.requests).max(1))?;
    let wall = started.elapsed();
    let settled = wait_until(Duration::from_secs(10), || {
        open_zero() && fd_count(wpid) <= fds_idle
    });
    let rss_end = rss_kib(wpid).0;
    let fds_end = fd_count(wpid);
    let alive = waker.try_status().is_none();
    let total = a.requests + b.requests;
    let non_2xx = a.non_2xx + b.non_2xx;
    let sock_err = a.socket_errors + b.socket_errors;
    let growth = rss_end as i64 - rss_checkpoint as i64;
    let ok_answers = non_2xx == 0 && sock_err == 0;
    let ok_rss = growth < 1024;
    let ok_fds = settled && fds_end <= fds_idle;
    let passed = ok_answers && ok_rss && ok_fds && alive && total >= requests;
    let mark = |b: bool| if b { "pass" } else { "FAIL" };
    let report = format!(
        "| soak: nginx → fleet-waker (release) → php-fpm, wrk -t{THREADS} -c{CONNECTIONS} | value | criterion |\n\
         |---|---|---|\n\
         | requests answered | {total} in {:.1} s ({:.0} req/s) | ≥ {requests}: {} |\n\
         | non-2xx / socket errors | {non_2xx} / {sock_err} | 0: {} |\n\
         | waker RSS start / after {checkpoint} / end | {rss_start} / {rss_checkpoint} / {rss_end} KiB | growth {growth} KiB < 1024: {} |\n\
         | waker fds idle before / after | {fds_idle} / {fds_end} | back to idle: {} |\n\
         | waker still running | {alive} | {} |\n",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        mark(total >= requests),
        mark(ok_answers),
        mark(ok_rss),
        mark(ok_fds),
        mark(alive),
    );
    println!("{report}");
    if !passed {
        let why = "a pass criterion failed (see the report)";
        return Err(Error::failed("soak", why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(requests("100_000").ok(), Some(100_000));
        assert_eq!(requests("1,000,000").ok(), Some(1_000_000));
        assert!(requests("5").is_err());
        assert!(requests("many").is_err());
    }

    #[test]
    fn parses_wrk_summary() {
        let out = "Running 1m test @ http://127.0.0.1:1/hello.php\n  2 threads and 32 connections\n\
                   100000 requests in 25.31s, 15.2MB read\n  Non-2xx or 3xx responses: 3\n\
                   Socket errors: connect 0, read 1, write 0, timeout 2\nRequests/sec:   3950.00\n";
        let r = parse_wrk(out).expect("parsed");
        assert_eq!((r.requests, r.non_2xx, r.socket_errors), (100_000, 3, 3));
        assert!((r.secs - 25.31).abs() < 1e-9);
        let r = parse_wrk("5 requests in 900.00ms, 1KB read\n").expect("parsed");
        assert_eq!((r.requests, r.non_2xx), (5, 0));
        assert!((r.secs - 0.9).abs() < 1e-9);
        assert!(parse_wrk("garbage").is_none());
    }
}
