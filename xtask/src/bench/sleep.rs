//! `cargo xtask bench sleep [--rounds N]`: what each way of sleeping saves
//! and what it costs the next request.
//!
//! One site (the bench [`Rig`]: a created container, `hello.php`) behind
//! nginx with the shipped proxy-mode snippet (`contrib/nginx`, templated by
//! `kit::nginx::site_snippet`) and a release fleet-waker under
//! `systemd-socket-activate`. Each round puts the container in each state
//! in turn — awake (running, after a few requests), paused (`docker
//! pause`), stopped (`docker stop`) — and measures the container's memory
//! (from its cgroup, as the reaper's memory guard reads it:
//! `fleet_core::memory`, usage minus inactive file cache; a stopped
//! container has no cgroup, so 0) and the time to the first byte of `GET
//! /hello.php` through nginx, which the waker answers by unpausing or
//! starting the container. Medians and maxima over N rounds, as ratios to
//! the awake state of the same run.
//!
//! The same site also sits behind a second nginx with the shipped
//! direct-mode snippet (php-fpm's socket first, the waker's as backup), put
//! to sleep the way production does it: release fleet-reaper passes at a
//! 1 s timeout, `--action pause` then `--action stop` (the socket moved
//! aside, drained, then paused or stopped). Its first byte is nginx falling
//! back to the waker, which unpauses or starts the container and puts the
//! socket back. Needs root, Docker, nginx and systemd-socket-activate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::waker::median;
use crate::proc::Rig;
use xtask::Error;
use xtask::error::{chain, run};
use xtask::kit::free_port;
use xtask::kit::http::get_page;
use xtask::kit::nginx::{Mode, NGINX, NginxProc, nginx_user, share_socket_with_nginx};
use xtask::kit::reaper::Reaper;

/// The container states measured, in the order of a round: proxy mode with
/// `docker pause`/`docker stop`, then direct mode with the reaper's.
const STATES: [&str; 6] = [
    AWAKE,
    "paused",
    "stopped",
    DIRECT_AWAKE,
    DIRECT_PAUSED,
    "direct: stopped by the reaper",
];
/// The states the others are compared with, and issue #14's target state.
const AWAKE: &str = "awake";
const DIRECT_AWAKE: &str = "direct: awake";
const DIRECT_PAUSED: &str = "direct: paused by the reaper";

/// The sites' idle timeout in the reaper's conf, and how long the bench
/// waits for the reaper to act on it.
const REAPER_TIMEOUT: &str = "1s";
const REAPER_WITHIN: Duration = Duration::from_secs(15);

/// Requests that make a just-woken site "awake" before it is measured
/// (php-fpm's workers have each served one, opcache and all).
const WARM_UP: usize = 8;

/// One state's samples: memory in bytes, first byte in milliseconds.
#[derive(Debug, Default)]
struct Samples {
    memory: Vec<f64>,
    first_byte: Vec<f64>,
}

/// The container's memory now (0 when it has no cgroup, i.e. is stopped).
fn memory(container: &str) -> Result<f64, Error> {
    let id = run("docker", &["inspect", "--format", "{{.Id}}", container])?;
    let root = Path::new(fleet_core::memory::DEFAULT_CGROUP_ROOT);
    match fleet_core::memory::container_memory(root, id.trim()) {
        Ok(bytes) => Ok(bytes as f64),
        Err(fleet_core::memory::MemoryError::NoCgroup { .. }) => Ok(0.0),
        Err(e) => Err(Error::failed(format!("memory of {container}"), e)),
    }
}

/// Release fleet-reaper passes (every 300 ms, as a busy timer would run
/// them) until the container is in `state` ("paused" or "exited").
fn reap_until(rig: &Rig, reaper: &Reaper, action: &str, state: &str) -> Result<(), Error> {
    reaper
        .clone()
        .args(["--action", action])
        .passes(REAPER_WITHIN, Duration::from_millis(300), |run| {
            Ok(run.code == Some(0) && rig.kit.state() == state)
        })
        .map(drop)
        .map_err(|e| Error::failed(format!("{} to {state}", rig.kit.container()), chain(&e)))
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub fn bench(rounds: usize) -> Result<String, Error> {
    let rig = Rig::new(
        "sleep",
        &[
            (NGINX, "nginx-light"),
            ("/usr/bin/systemd-socket-activate", "systemd"),
        ],
    )?;
    let (container, socket) = (rig.kit.container(), rig.kit.waker_socket());
    let _waker = rig.waker(&rig.waker_bin).try_activate(&socket)?;
    share_socket_with_nginx(&socket).map_err(Error::io("chgrp/chmod", &socket))?;
    // nginx in `dir` with the shipped snippet of `mode`: one for each mode.
    let nginx = |mode, dir: PathBuf| -> Result<NginxProc, Error> {
        let (port, user) = (free_port()?, nginx_user());
        NginxProc::start(&dir, port, user.as_deref(), &rig.snippet(mode)?)
    };
    let proxy_nginx = nginx(Mode::Proxy, rig.nginx_dir())?;
    let direct_nginx = nginx(Mode::Direct, rig.kit.temp_dir().join("nginx-direct"))?;
    let (port, direct_port) = (proxy_nginx.port(), direct_nginx.port());
    // The reaper over this one site, on the waker's state directory (the
    // site lock and the waker's state file live there).
    xtask::kit::build("release", &["fleet-reaper"])?;
    rig.kit.try_write_conf(REAPER_TIMEOUT)?;
    let reaper = Reaper::over(xtask::kit::release_bin("fleet-reaper"), rig.kit.layout())
        .arg("--no-heal")
        .json();
    let waker_log =
        || std::fs::read_to_string(rig.kit.temp_dir().join("waker.log")).unwrap_or_default();
    // `GET /hello.php` through nginx; the first byte's time in milliseconds.
    let get_on = |port: u16, what: &str| {
        get_page(port, "/hello.php", "hello from ")
            .map(|r| r.first_byte.as_secs_f64() * 1e3)
            .map_err(|e| Error::failed(what, format!("{}\nwaker log:\n{}", chain(&e), waker_log())))
    };
    let get = |what: &str| get_on(port, what);

    // The first request activates the waker and starts the container.
    get("first request")?;
    let mut samples: Vec<Samples> = STATES.iter().map(|_| Samples::default()).collect();
    for round in 0..rounds {
        for _ in 0..WARM_UP {
            get("warm-up")?;
        }
        let mut shown = Vec::new();
        for (i, state) in STATES.iter().enumerate() {
            let direct = state.starts_with("direct");
            match *state {
                "paused" => run("docker", &["pause", container]).map(drop)?,
                "stopped" => run("docker", &["stop", "-t", "10", container]).map(drop)?,
                "direct: awake" => {
                    for _ in 0..WARM_UP {
                        get_on(direct_port, "direct warm-up")?;
                    }
                }
                "direct: paused by the reaper" => reap_until(&rig, &reaper, "pause", "paused")?,
                "direct: stopped by the reaper" => reap_until(&rig, &reaper, "stop", "exited")?,
                _ => {}
            }
            let bytes = memory(container)?;
            let what = format!("round {round}, {state}");
            let ms = get_on(if direct { direct_port } else { port }, &what)?;
            samples[i].memory.push(bytes);
            samples[i].first_byte.push(ms);
            shown.push(format!("{state} {:.1} MiB, {ms:.1} ms", bytes / 1048576.0));
        }
        eprintln!("round {round}: {}", shown.join("; "));
    }

    // Each mode's rows are compared with its own awake row.
    // Each name is one of STATES (they are built from these constants).
    let at = |name: &str| STATES.iter().position(|s| *s == name).unwrap_or(0);
    let awake = |i: usize| (median(&samples[i].memory), median(&samples[i].first_byte));
    let mut out = format!(
        "### `cargo xtask bench sleep --rounds {rounds}` (release fleet-waker)\n\n\
         One site behind two nginx, one with the shipped proxy-mode snippet, one with the \
         direct-mode snippet, and a socket-activated fleet-waker; php-fpm with {} static \
         workers, `hello.php`. Proxy rows: put to sleep by `docker pause`/`docker stop`. Direct \
         rows: by release fleet-reaper passes at a {REAPER_TIMEOUT} timeout (socket aside, drain, \
         pause or stop). Memory: the container's cgroup (usage minus inactive file cache, as the \
         reaper's memory guard reads it; a stopped container has none: 0). First byte: `GET \
         /hello.php` through that nginx, the waker unpausing or starting the container. Median \
         (max) of {rounds} rounds; ratios of medians to the awake row of the same mode, same \
         run.\n\n\
         | state | memory, MiB | vs awake | first byte, ms | vs awake |\n|---|---|---|---|---|\n",
        crate::image::DEFAULT_CHILDREN
    );
    for (state, s) in STATES.iter().zip(&samples) {
        let baseline = if state.starts_with("direct") {
            DIRECT_AWAKE
        } else {
            AWAKE
        };
        let (awake_mem, awake_fb) = awake(at(baseline));
        let (mem_max, fb_max) = (max(&s.memory), max(&s.first_byte));
        let (mem, fb) = (median(&s.memory), median(&s.first_byte));
        out.push_str(&format!(
            "| {state} | {:.1} ({:.1}) | {:.2}× | {fb:.1} ({fb_max:.1}) | {:.1}× |\n",
            mem / 1048576.0,
            mem_max / 1048576.0,
            mem / awake_mem,
            fb / awake_fb,
        ));
    }
    // Issue #14's target for the recommended mode's fast sleep.
    let direct_paused = median(&samples[at(DIRECT_PAUSED)].first_byte);
    let met = if direct_paused <= 100.0 {
        "met"
    } else {
        "NOT met"
    };
    out.push_str(&format!(
        "\nDirect mode, paused by the reaper: first byte {direct_paused:.1} ms (median); target \
         100 ms: {met}.\n"
    ));
    Ok(out)
}
