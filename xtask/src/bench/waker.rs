//! `cargo xtask bench waker`: the issue's benchmark, same run, same machine.
//!
//! * Warm: wrk through nginx → php-fpm directly, → fleet-waker → php-fpm,
//!   and → systemd-socket-proxyd → php-fpm (one nginx, one port each,
//!   rounds interleaved; medians of requests/s and of each round's ratio to
//!   that round's direct run). Alternating cold rounds start with the bare
//!   run or with the waker.
//! * Cold: time to the first byte of a FastCGI request sent to the waker
//!   while the container is stopped, minus a bare start in the same run
//!   (`POST /containers/<name>/start` on the Docker socket, then connect to
//!   php-fpm.sock until it accepts, polled every 0.2 ms); and time to first
//!   byte from paused.
//! * Memory: VmRSS of the waker and of systemd-socket-proxyd, idle and with
//!   100 open connections.
//!
//! Needs root, Docker, nginx, wrk, systemd-socket-activate and
//! systemd-socket-proxyd, and a release build of fleet-waker (built here).
//! Prints a Markdown block for BENCHMARKS.md on stdout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_core::fastcgi::{BEGIN_REQUEST, REQUEST_ID, begin_body, record};

use nix::sys::signal::Signal;
use xtask::Error;
use xtask::error::{chain, run};
use xtask::kit::fastcgi::{self, FcgiRequest};
use xtask::kit::process::{Launch, SocketActivated};

use crate::proc::{NGINX_USER, Rig, rss_kib};
use xtask::kit::free_port;
use xtask::kit::nginx::{Mode, NGINX, NginxProc, Server};
use xtask::wait::wait_for;

const PROXYD: &str = "/lib/systemd/systemd-socket-proxyd";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sends a FastCGI `GET /hello.php` to `socket` and reads the answer to its
/// end; returns the time to its first byte in ms.
fn first_byte_ms(socket: &Path) -> Result<f64, Error> {
    fastcgi::request(socket, &FcgiRequest::get("hello.php", ""))
        .map(|r| ms(r.first_byte))
        .map_err(|e| Error::failed(format!("FastCGI request to {}", socket.display()), e))
}

/// Waits (finely: starts are timed) until php-fpm of `container` accepts
/// on `socket`.
pub(crate) fn fpm_accepts(container: &str, socket: &Path, timeout: Duration) -> Result<(), Error> {
    if wait_for(timeout, || UnixStream::connect(socket).is_ok()) {
        return Ok(());
    }
    let what = format!("start {container}");
    Err(Error::failed(what, "php-fpm did not come up"))
}

/// `POST /containers/<name>/start` straight on the Docker socket (what the
/// waker does, without a CLI process in the way).
pub(crate) fn api_post(container: &str, verb: &str) -> Result<(), Error> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let path = host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    let what = || format!("docker {verb} {container}");
    let fail = |e: std::io::Error| Error::failed(what(), format!("docker socket {path}: {e}"));
    let mut s = UnixStream::connect(path).map_err(fail)?;
    write!(
        s,
        "POST /containers/{container}/{verb} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    if resp.starts_with("HTTP/1.1 204") || resp.starts_with("HTTP/1.1 304") {
        return Ok(());
    }
    let why = resp.lines().next().unwrap_or("no answer");
    Err(Error::failed(what(), why))
}

/// CPU time (user + system) of `pid` so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The duration (`ms=`) of the last wake the waker log at `log` reports
/// ("php-fpm accepts"): from the wake's start to php-fpm accepting.
fn last_wake_ms(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("php-fpm accepts"))?;
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ms="))?;
    v.trim_matches('"').parse().ok()
}

/// Median of the values that are numbers (a left-out run is NaN).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Samples by name, one of each per round.
#[derive(Debug, Default)]
struct Samples(BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    fn add(&mut self, round: &[(&'static str, f64)]) {
        for &(name, v) in round {
            self.0.entry(name).or_default().push(v);
        }
    }

    /// The [`median`] of `name`'s samples (NaN when there are none).
    fn median(&self, name: &str) -> f64 {
        self.0.get(name).map_or(f64::NAN, |v| median(v))
    }
}

/// A warm run through `side` failed: its error, then the tail of the error
/// log in `nginx_dir` (which usually says why).
fn warm_failed(side: &str, e: &Error, nginx_dir: &Path) -> Error {
    let log = std::fs::read_to_string(nginx_dir.join("error.log")).unwrap_or_default();
    let tail = String::from_utf8_lossy(&log.as_bytes()[log.len().saturating_sub(2000)..]);
    let why = format!("{}\n{tail}", chain(e));
    Error::failed(format!("warm run ({side})"), why)
}

/// Seconds of wrk per warm run.
const WARM_SECS: u32 = 3;

/// wrk's requests/s and the CPU µs per request spent by `pid`.
fn wrk_cpu(port: u16, secs: u32, pid: u32) -> Result<(f64, f64), Error> {
    let before = cpu_secs(pid);
    let rps = wrk(port, secs)?;
    let us = (cpu_secs(pid) - before) * 1e6 / (rps * f64::from(secs));
    Ok((rps, us))
}

fn wrk(port: u16, secs: u32) -> Result<f64, Error> {
    let url = format!("http://127.0.0.1:{port}/hello.php");
    let d = format!("{secs}s");
    let out = run("wrk", &["-t2", "-c32", "-d", &d, &url])?;
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        return Err(Error::failed("wrk", format!("saw errors:\n{out}")));
    }
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::failed("wrk", format!("no Requests/sec in its output:\n{out}")))
}

/// The memory of `pid` (see [`rss_kib`]) while 100 connections to `socket`
/// are open, each with a partial FastCGI request, its BEGIN_REQUEST (so
/// every proxied connection is set up and has moved bytes).
fn rss_with_100_open(socket: &Path, pid: u32) -> Result<(u64, u64), Error> {
    let head = record(BEGIN_REQUEST, REQUEST_ID, &begin_body(false));
    let what = || format!("open a connection to {}", socket.display());
    let _conns = (0..100)
        .map(|_| {
            let mut s = UnixStream::connect(socket).map_err(|e| Error::failed(what(), e))?;
            s.write_all(&head).map_err(|e| Error::failed(what(), e))?;
            Ok(s)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(rss_kib(pid))
}

pub fn bench(rounds: usize, baseline: Option<&Path>) -> Result<String, Error> {
    let rig = Rig::new(
        "bench",
        &[
            (NGINX, "nginx-light"),
            ("/usr/bin/wrk", "wrk"),
            (PROXYD, "systemd"),
            ("/usr/bin/systemd-socket-activate", "systemd"),
        ],
    )?;
    let (dir, container) = (rig.kit.temp_dir(), rig.kit.container());
    let fpm_sock = rig.kit.fpm_socket();
    // Where the site layout puts it, so the shipped direct-mode upstream
    // falls back to it as it is.
    let waker_sock = rig.kit.waker_socket();
    let proxyd_sock = dir.join("proxyd.sock");
    let stop = || run("docker", &["stop", "-t", "5", container]).map(drop);
    // Running, then paused.
    let pause = || -> Result<(), Error> {
        rig.kit.try_start()?;
        run("docker", &["pause", container]).map(drop)
    };

    // Cold first (the waker binds its socket; the container is created).
    let waker = rig.spawn_waker(&rig.waker_bin, &waker_sock)?;
    let waker_pid = waker.pid();
    let rss_waker_idle = rss_kib(waker_pid);
    // Bare: API start until php-fpm accepts, then the first request to a
    // fresh php-fpm straight to its socket (the part of the waker's time
    // that is php-fpm's, not the waker's). Leaves the container stopped.
    let bare_start = || -> Result<(f64, f64), Error> {
        let t = Instant::now();
        api_post(container, "start")?;
        fpm_accepts(container, &fpm_sock, Duration::from_secs(20))?;
        let b = ms(t.elapsed());
        let first = first_byte_ms(&fpm_sock)?;
        stop().map(|()| (b, first))
    };
    // Through the waker: the first byte, and of it the time outside the
    // wake (the waker's own log line gives the wake's duration): accepting,
    // the failed first connect, and after php-fpm accepts, connecting and
    // relaying php-fpm's first answer.
    let waker_log = dir.join("waker.log");
    let waker_start = || -> Result<(f64, f64), Error> {
        let c = first_byte_ms(&waker_sock)?;
        let outside = last_wake_ms(&waker_log).map_or(f64::NAN, |w| c - w);
        stop().map(|()| (c, outside))
    };
    // From paused: bare (API unpause, then the request straight to
    // php-fpm), and through the waker.
    let bare_unpause = || -> Result<f64, Error> {
        pause()?;
        let t = Instant::now();
        api_post(container, "unpause")?;
        first_byte_ms(&fpm_sock)?;
        let bp = ms(t.elapsed());
        stop().map(|()| bp)
    };
    let waker_unpause = || -> Result<f64, Error> {
        pause()?;
        let p = first_byte_ms(&waker_sock)?;
        stop().map(|()| p)
    };
    // A waker started just now, as socket activation starts one for the
    // first connection: its first wake also settles the Docker API version.
    let fresh_sock = dir.join("fresh.sock");
    let fresh_wake = |paused: bool| -> Result<f64, Error> {
        if paused {
            pause()?;
        }
        let fresh = rig.spawn_waker(&rig.waker_bin, &fresh_sock)?;
        let t = first_byte_ms(&fresh_sock)?;
        drop(fresh);
        stop().map(|()| t)
    };
    let mut cold = Samples::default();
    for i in 0..rounds {
        // Alternate which goes first, so neither always follows the same
        // step (a start right after a stop can be slower).
        let ((b, first), (c, out), bp, p) = if i % 2 == 0 {
            let bs = bare_start()?;
            let c = waker_start()?;
            let bp = bare_unpause()?;
            (bs, c, bp, waker_unpause()?)
        } else {
            let c = waker_start()?;
            let bs = bare_start()?;
            let p = waker_unpause()?;
            (bs, c, bare_unpause()?, p)
        };
        let (fc, fp) = (fresh_wake(false)?, fresh_wake(true)?);
        eprintln!(
            "cold round {i}: bare {b:.1} ms (+ first request {first:.1} ms), waker {c:.1} ms ({out:.1} outside the wake), fresh waker {fc:.1} ms; \
             from paused: bare {bp:.1} ms, waker {p:.1} ms, fresh waker {fp:.1} ms"
        );
        cold.add(&[
            ("bare", b),
            ("cold", c),
            ("overhead", c - b),
            ("overhead_first", c - b - first),
            ("outside", out),
            ("outside_first", out - first),
            ("bare_paused", bp),
            ("paused", p),
            ("fresh_cold", fc),
            ("fresh_paused", fp),
        ]);
    }

    // Warm: container running, proxyd under socket activation, one nginx.
    rig.kit.try_start()?;
    // systemd-socket-proxyd under socket activation, activated by one
    // request. It has been seen to exit under load (its accept loop gives
    // up on some errors); then it is started again and that round's
    // numbers for it are dropped, with its log shown.
    let proxyd_log = dir.join("proxyd.log");
    let spawn_proxyd = || -> Result<SocketActivated, Error> {
        let _ = std::fs::remove_file(&proxyd_sock);
        let g = Launch::new(PROXYD)
            .arg(&fpm_sock)
            .log_to(&proxyd_log)
            .stop_with(Signal::SIGTERM, Duration::from_secs(3))
            .same_group()
            .try_activate(&proxyd_sock)?;
        // Retry the activating request until it is answered (proxyd may
        // take a moment to accept once exec'd).
        let answered = wait_for(Duration::from_secs(5), || {
            first_byte_ms(&proxyd_sock).is_ok()
        });
        if !answered {
            let why = "did not answer through its socket";
            return Err(Error::failed("systemd-socket-proxyd", why));
        }
        Ok(g)
    };
    let mut proxyd = spawn_proxyd()?;
    let mut proxyd_pid = proxyd.pid();
    std::thread::sleep(Duration::from_millis(200));
    let rss_proxyd_idle = rss_kib(proxyd_pid);
    let rss_waker_after = rss_kib(waker_pid);

    // The baseline waker (another build), warm rounds only.
    let base_sock = dir.join("baseline.sock");
    let base = baseline
        .map(|bin| rig.spawn_waker(bin, &base_sock))
        .transpose()?;
    // One nginx, one port per side, each the shipped proxy-mode location
    // passing to that side's socket, or (direct mode) the shipped direct-mode
    // snippet as it is: every side gets the same nginx settings.
    let proxy = rig.snippet(Mode::Proxy)?;
    let to = |p: &Path| proxy.clone().passing_to(&format!("unix:{}", p.display()));
    let (s_direct, s_proxyd, s_base) = (to(&fpm_sock), to(&proxyd_sock), to(&base_sock));
    let s_mode = rig.snippet(Mode::Direct)?;
    let (p_direct, p_waker, p_proxyd) = (free_port()?, free_port()?, free_port()?);
    let (p_mode, p_base) = (free_port()?, free_port()?);
    let server = |port, snippet| Server::new(port, "localhost", "/srv/www", snippet);
    let servers = [
        server(p_direct, &s_direct),
        server(p_waker, &proxy),
        server(p_proxyd, &s_proxyd),
        server(p_mode, &s_mode),
        server(p_base, &s_base),
    ];
    let ndir = rig.nginx_dir();
    let _nginx = NginxProc::start_servers(&ndir, NGINX_USER, &servers)?;
    let mut warm = Samples::default();
    let warm_rounds = 2 * rounds.max(3);
    let mut proxyd_failures = 0;
    wrk(p_direct, 2)?; // warm-up
    for i in 0..warm_rounds {
        let a = wrk(p_direct, WARM_SECS).map_err(|e| warm_failed("direct", &e, &ndir))?;
        let (b, bu) =
            wrk_cpu(p_waker, WARM_SECS, waker_pid).map_err(|e| warm_failed("waker", &e, &ndir))?;
        let (c, cu) = match wrk_cpu(p_proxyd, WARM_SECS, proxyd_pid) {
            Ok(v) => v,
            Err(e) => {
                let log = std::fs::read_to_string(&proxyd_log).unwrap_or_default();
                eprintln!(
                    "warm round {i}: systemd-socket-proxyd failed ({}); its log:\n{log}\nstarting it again, round {i} left out for it",
                    chain(&e).lines().next().unwrap_or("")
                );
                proxyd_failures += 1;
                drop(proxyd);
                proxyd = spawn_proxyd()?;
                proxyd_pid = proxyd.pid();
                (f64::NAN, f64::NAN)
            }
        };
        let e = wrk(p_mode, WARM_SECS).map_err(|e| warm_failed("direct mode", &e, &ndir))?;
        if let Some(base) = &base {
            let (f, fu) = wrk_cpu(p_base, WARM_SECS, base.pid())
                .map_err(|e| warm_failed("baseline waker", &e, &ndir))?;
            eprintln!("warm round {i}: baseline waker {f:.0}/s ({fu:.1} µs CPU/req)");
            warm.add(&[
                ("baseline", f),
                ("baseline/direct", f / a),
                ("baseline µs", fu),
            ]);
        }
        eprintln!(
            "warm round {i}: direct {a:.0}/s, waker {b:.0}/s ({bu:.1} µs CPU/req), \
             proxyd {c:.0}/s ({cu:.1} µs CPU/req), direct mode {e:.0}/s"
        );
        warm.add(&[
            ("direct", a),
            ("waker", b),
            ("proxyd", c),
            ("mode", e),
            ("waker/direct", b / a),
            ("proxyd/direct", c / a),
            ("mode/direct", e / a),
            ("waker/proxyd", b / c),
            ("waker µs", bu),
            ("proxyd µs", cu),
        ]);
    }

    let rss_waker_100 = rss_with_100_open(&waker_sock, waker_pid)?;
    let rss_proxyd_100 = rss_with_100_open(&proxyd_sock, proxyd_pid)?;

    let mib = |(rss, anon): (u64, u64)| {
        format!("{:.1} ({:.1})", rss as f64 / 1024.0, anon as f64 / 1024.0)
    };
    let m = |name: &str| warm.median(name);
    let failures = if proxyd_failures > 0 {
        format!(
            "systemd-socket-proxyd exited under load in {proxyd_failures} round(s); those rounds are left out for it.\n\n"
        )
    } else {
        String::new()
    };
    let (baseline_row, baseline_cpu) = match baseline {
        Some(bin) => (
            format!(
                "| fleet-waker, baseline build (`{}`) | {:.0} | {:.2}× (this build − baseline: {:+.2}) | |\n",
                bin.display(),
                m("baseline"),
                m("baseline/direct"),
                m("waker/direct") - m("baseline/direct")
            ),
            format!(", baseline fleet-waker {:.1} µs", m("baseline µs")),
        ),
        None => (String::new(), String::new()),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = run("uname", &["-r"])?;
    let mut out = format!(
        "### fleet-waker (`cargo xtask bench waker`, {rounds} cold rounds, {warm_rounds} warm rounds of {WARM_SECS} s per peer)\n\n\
         {failures}Machine: {cores} cores, kernel {}.\n\n\
         | Warm (wrk -t2 -c32, nginx → …) | req/s (median) | vs direct, median of rounds | target |\n|---|---|---|---|\n\
         | php-fpm directly | {:.0} | 1.00× | |\n\
         | fleet-waker | {:.0} | {:.2}× | ≥ 0.85× |\n\
         {baseline_row}\
         | systemd-socket-proxyd | {:.0} | {:.2}× | |\n\
         | direct mode (upstream: php-fpm.sock, waker socket as backup) | {:.0} | {:.2}× | ≥ 0.98× |\n\n\
         fleet-waker / systemd-socket-proxyd: {:.2}× (medians of req/s), {:.2}× (median of the rounds' ratios; target ≥ 1.5×)\n\n\
         CPU per proxied request (user+system of the proxy process, median): fleet-waker {:.1} µs, systemd-socket-proxyd {:.1} µs{baseline_cpu}\n\n",
        kernel.trim(),
        m("direct"),
        m("waker"),
        m("waker/direct"),
        m("proxyd"),
        m("proxyd/direct"),
        m("mode"),
        m("mode/direct"),
        m("waker") / m("proxyd"),
        m("waker/proxyd"),
        m("waker µs"),
        m("proxyd µs"),
    );
    out += "| Cold (ms, median) | value | target |\n|---|---|---|\n";
    // (row, samples, target: with its trailing space, if any)
    for (row, name, target) in [
        ("bare API start until php-fpm accepts", "bare", ""),
        ("first byte through fleet-waker, stopped", "cold", ""),
        ("overhead (waker − bare, per round)", "overhead", "≤ 5 "),
        (
            "overhead minus php-fpm's own first request (direct, same round)",
            "overhead_first",
            "",
        ),
        (
            "first byte through fleet-waker minus its wake (its log's `ms=`): accept, relay, php-fpm's first answer",
            "outside",
            "",
        ),
        (
            "the same minus php-fpm's own first request (direct, same round): the waker's own time",
            "outside_first",
            "≤ 5 ",
        ),
        (
            "bare API unpause + first byte from php-fpm",
            "bare_paused",
            "",
        ),
        ("first byte through fleet-waker, paused", "paused", "≤ 10 "),
        (
            "first byte through a just-started fleet-waker (socket activation's case), stopped",
            "fresh_cold",
            "",
        ),
        (
            "first byte through a just-started fleet-waker, paused",
            "fresh_paused",
            "",
        ),
    ] {
        out += &format!("| {row} | {:.1} | {target}|\n", cold.median(name));
    }
    out += &format!(
        "\n| Memory, MiB: VmRSS (anonymous) | idle | after traffic | 100 open |\n|---|---|---|---|\n\
         | fleet-waker | {} | {} | {} |\n\
         | systemd-socket-proxyd | {} | | {} |\n",
        mib(rss_waker_idle),
        mib(rss_waker_after),
        mib(rss_waker_100),
        mib(rss_proxyd_idle),
        mib(rss_proxyd_100)
    );
    drop(waker);
    drop(base);
    drop(proxyd);
    if let Ok(log) = std::fs::read_to_string(&waker_log)
        && !log.is_empty()
    {
        eprintln!("fleet-waker log:\n{log}");
    }
    Ok(out)
}
