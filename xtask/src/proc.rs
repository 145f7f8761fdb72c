//! Process and container guards shared by `bench` and `soak`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_core::Layout;
use nix::sys::signal::Signal;
use xtask::Error;
use xtask::kit::nginx::{Mode, Snippet, site_snippet};
use xtask::kit::process::{Launch, Spawned};
use xtask::kit::site::{SiteOptions, TestSite};

/// One benchmark site: the tools checked, a release fleet-waker built, and
/// the kit's site ([`TestSite`]: its temp dir `/tmp/fleet-it-<pid>-<kind>-…`
/// with run, state and www dirs, the runtime tmpfs, the test scripts, a
/// created (not started) container `<site>.fpm`).
/// Container and dirs are removed when the rig drops.
pub struct Rig {
    pub waker_bin: PathBuf,
    pub kit: TestSite,
}

impl Rig {
    /// Sets the site up; `tools` are `(path, package)` pairs that must exist.
    pub fn new(kind: &str, tools: &[(&str, &str)]) -> Result<Rig, Error> {
        require(tools)?;
        xtask::kit::build("release", &["fleet-waker"])?;
        let kit = TestSite::try_with_options(SiteOptions {
            temp_kind: Some(kind.to_owned()),
            ..SiteOptions::default()
        })?;
        let waker_bin = xtask::kit::release_bin("fleet-waker");
        Ok(Rig { waker_bin, kit })
    }

    /// Runs fleet-waker `bin` (the rig's, or an older build measured in the
    /// same run) for the site with `--listen socket` and waits for its
    /// `READY=1` on a notify socket of our own. Not by connecting to it: a
    /// probe connection to a sleeping site would itself wake the container.
    pub fn spawn_waker(&self, bin: &Path, socket: &Path) -> Result<Spawned, Error> {
        self.waker(bin)
            .arg("--listen")
            .arg(socket)
            .notify_ready(Duration::from_secs(5))
            .try_spawn()
    }

    /// [`waker`] `bin` for the site, on the kit's layout, its log in
    /// `<temp dir>/waker.log`.
    pub fn waker(&self, bin: &Path) -> Launch {
        let log = self.kit.temp_dir().join("waker.log");
        waker(bin, self.kit.name(), self.kit.layout(), &log)
    }

    /// The shipped nginx snippet of `mode` for the site.
    pub fn snippet(&self, mode: Mode) -> Result<Snippet, Error> {
        site_snippet(mode, self.kit.name(), &self.kit.layout().run_dir)
    }

    /// nginx's directory (config, logs, temp paths; made as it starts).
    pub fn nginx_dir(&self) -> PathBuf {
        self.kit.temp_dir().join("nginx")
    }
}

/// fleet-waker `bin` for `site` on `layout`'s run and state directories, its
/// log in `log`, stopped with SIGTERM: to be spawned with `--listen` or run
/// under socket activation.
pub fn waker(bin: &Path, site: &str, layout: &Layout, log: &Path) -> Launch {
    Launch::new(bin)
        .arg(site)
        .arg("--run-dir")
        .arg(&layout.run_dir)
        .arg("--state-dir")
        .arg(&layout.state_dir)
        // info: start-up and one line per wake (with its duration),
        // nothing per connection.
        .env("RUST_LOG", "info")
        .log_to(log)
        .stop_with(Signal::SIGTERM, Duration::from_secs(3))
        .same_group()
}

/// The user nginx's workers run as in the benches and the soak: root, as
/// they are (the sockets they pass to are root's and not shared with
/// www-data); the benches measure, the integration tests check the modes.
pub const NGINX_USER: Option<&str> = Some("root root");

/// Runs `f(0..n)` on `threads` threads; the first error wins.
pub fn parallel(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<(), Error> + Sync,
) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    std::iter::repeat_with(|| next.fetch_add(1, Ordering::SeqCst))
                        .take_while(|&i| i < n)
                        .try_for_each(&f)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::failed("parallel", "a worker panicked")))
        })
    })
}

/// Fails with what is missing, and the package to install, unless every
/// `(path, package)` of `tools` exists.
pub fn require(tools: &[(&str, &str)]) -> Result<(), Error> {
    for (path, package) in tools {
        xtask::deps::need(&[path], &[], package).map_err(|e| Error::unavailable(*path, e))?;
    }
    Ok(())
}

/// (VmRSS, anonymous) of `pid` in KiB, 0 when unknown: RSS counts the
/// shared binary and libc pages, anonymous memory is what each extra
/// instance really costs.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let kib = |file: &str, key: &str| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (kib("status", "VmRSS:"), kib("smaps_rollup", "Anonymous:"))
}

/// `docker rm -f -v` of `containers`, 50 to a command line; every chunk is
/// tried, the first error returned.
pub fn rm_containers(containers: &[impl AsRef<str>]) -> Result<(), Error> {
    let mut done = Ok(());
    for chunk in containers.chunks(50) {
        let mut argv = vec!["rm", "-f", "-v"];
        argv.extend(chunk.iter().map(AsRef::as_ref));
        done = done.and(xtask::error::run("docker", &argv).map(drop));
    }
    done
}
