//! `cargo xtask demo [--port 8080] [--once] [--no-build]`: one demo site end
//! to end with real components, narrated.
//!
//! As root on a machine with Docker, nginx and php-fpm: builds the binaries
//! and the php-fpm image (cached), creates the site's container stopped,
//! runs fleet-waker under `systemd-socket-activate` on the site's waker
//! socket and nginx on `127.0.0.1:<port>` with the shipped proxy-mode
//! snippet (`contrib/nginx/fleet-proxy-mode.conf`), then
//!
//! 1. a cold request, its time split into phases measured from the outside
//!    (container start: Docker's `State.StartedAt`; php-fpm accepting: the
//!    first successful connect to its socket; first byte: the HTTP client);
//! 2. a warm request;
//! 3. fleet-reaper with a 2 s timeout, showing the container stopped;
//! 4. a third request that wakes it again.
//!
//! Everything lives under the kit's temp dir `/tmp/fleet-it-<pid>-demo-…` (run, state and sites
//! directories through `FLEET_RUN_DIR` etc.), never the host's
//! `/run/docker-apps`. Everything it made is removed at the end, on failure
//! and on Ctrl-C (SIGINT/SIGTERM are taken by a dedicated thread).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::Error;
use crate::deps::Prerequisite;
use crate::error::{Cmd, chain};
use crate::kit::http::{self, HttpResponse};
use crate::kit::nginx::{Mode, NginxProc, nginx_user, share_socket_with_nginx, site_snippet};
use crate::kit::process::{Launch, SocketActivated};
use crate::kit::site::{SiteOptions, TestSite};

/// `cargo xtask demo` arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DemoArgs {
    /// nginx listens on 127.0.0.1:N.
    #[arg(long, value_name = "N", default_value_t = 8080,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Run the four steps and exit (non-interactive), instead of staying up
    /// until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Do not run `cargo build`; use the fleet binaries next to this xtask
    /// binary.
    #[arg(long)]
    pub no_build: bool,
}

/// A demo step failed.
fn fail(step: &str, reason: impl std::fmt::Display) -> Error {
    Error::failed(step, reason)
}

/// What the demo made, removed by [`Cleanup::run`] (idempotent).
#[derive(Debug, Default)]
struct Cleanup {
    /// Processes stopped (by dropping them) in reverse order: (what, child).
    children: Vec<(String, SocketActivated)>,
    nginx: Option<NginxProc>,
    /// The kit's site: its container and directories, removed on drop.
    site: Option<TestSite>,
}

impl Cleanup {
    fn run(&mut self) {
        let t = Instant::now();
        let mut done = Vec::new();
        if let Some(mut nginx) = self.nginx.take() {
            nginx.stop();
            done.push(format!("stopped nginx ({})", ms(t.elapsed())));
        }
        while let Some((what, child)) = self.children.pop() {
            drop(child);
            done.push(format!("stopped {what} ({})", ms(t.elapsed())));
        }
        if let Some(site) = self.site.take() {
            let (container, dir) = (site.container().to_owned(), site.temp_dir().to_owned());
            drop(site);
            done.push(format!(
                "removed container {container} and {} ({})",
                dir.display(),
                ms(t.elapsed())
            ));
        }
        if !done.is_empty() {
            println!("cleanup: {}", done.join(", "));
        }
    }
}

/// The demo site's idle timeout for the reaper step.
const DEMO_TIMEOUT: Duration = Duration::from_secs(2);

/// `cargo xtask demo …`.
pub fn main(args: &DemoArgs) -> Result<(), Error> {
    // SIGINT/SIGTERM: tokio's handlers (installed now, before anything is
    // made) wake one thread, which removes what the demo made and exits.
    // Handlers, not a blocked mask: a mask would be inherited by the waker
    // and nginx, which then could not be stopped with SIGTERM/SIGQUIT.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("a runtime for signal handling", e))?;
    let signals = {
        let _guard = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => (int, term),
            (Err(e), _) | (_, Err(e)) => return Err(fail("handling SIGINT/SIGTERM", e)),
        }
    };
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let serving = Arc::new(AtomicBool::new(false));
    {
        let cleanup = Arc::clone(&cleanup);
        let serving = Arc::clone(&serving);
        let (mut int, mut term) = signals;
        std::thread::spawn(move || {
            let name = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            });
            let was_serving = serving.load(Ordering::SeqCst);
            println!("\n{name}: stopping the demo and removing everything it made");
            if let Ok(mut c) = cleanup.lock() {
                c.run();
            }
            let _ = std::io::stdout().flush();
            std::process::exit(if was_serving { 0 } else { 130 });
        });
    }
    let result = run(args, &cleanup, &serving);
    if let Ok(mut c) = cleanup.lock() {
        c.run();
    }
    result?;
    println!("demo finished: nothing of it is left (container, nginx, waker, sockets, /tmp dir)");
    Ok(())
}

/// Everything the demo needs, each missing piece named with how to get it.
fn missing_prerequisites(port: u16) -> Vec<String> {
    let mut missing: Vec<String> = Prerequisite::ALL
        .iter()
        .filter_map(|p| p.check().err().map(|why| format!("{p:?}: {why}")))
        .collect();
    if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
        missing.push(format!(
            "port 127.0.0.1:{port} is not free ({e}); pick another with --port"
        ));
    }
    missing
}

/// The workspace root (xtask's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn docker(args: &[&str]) -> Result<String, Error> {
    crate::error::run("docker", args).map(|out| out.trim().to_owned())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The demo site's page.
const INDEX_PHP: &str = "<?php\nheader('Content-Type: text/plain');\necho 'hello from ', getenv('FLEET_SITE'), ' (php-fpm pid ', getmypid(), ', PHP ', PHP_VERSION, \")\\n\";\n";

fn run(args: &DemoArgs, cleanup: &Mutex<Cleanup>, serving: &AtomicBool) -> Result<(), Error> {
    let missing = missing_prerequisites(args.port);
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }
    let pid = std::process::id();

    // Binaries.
    let bin_dir = crate::kit::profile_dir().map_err(|e| fail("binaries", chain(&e)))?;
    if args.no_build {
        println!("[setup] binaries: using {} (--no-build)", bin_dir.display());
    } else {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        println!("[setup] binaries: {cargo} build -p fleet-waker -p fleet-reaper");
        Cmd::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "fleet-waker",
                "-p",
                "fleet-reaper",
            ])
            .dir(repo_root())
            .status()
            .map_err(|e| fail("cargo build", chain(&e)))?;
    }
    let waker_bin = bin_dir.join("fleet-waker");
    let reaper_bin = bin_dir.join("fleet-reaper");
    for b in [&waker_bin, &reaper_bin] {
        if !b.is_file() {
            return Err(fail(
                "binaries",
                format!("{} does not exist (run without --no-build)", b.display()),
            ));
        }
    }

    // Image.
    let t = Instant::now();
    let image = crate::image::ensure_image_info().map_err(|e| fail("php-fpm image", chain(&e)))?;
    println!(
        "[setup] image: {} ({} in {})",
        image.tag,
        if image.cached { "cached" } else { "built" },
        ms(t.elapsed())
    );

    // The site: the kit's, as the tests and benches make theirs (its
    // directories, its runtime tmpfs, a created container; what a killed
    // demo left is swept by the next run).
    let made = TestSite::try_with_options(SiteOptions {
        name: Some(format!("demo-{pid}.fleet.test")),
        temp_kind: Some("demo".to_owned()),
        scripts: vec![("index.php".to_owned(), INDEX_PHP.to_owned())],
        ..SiteOptions::default()
    })
    .map_err(|e| fail("the demo site", chain(&e)))?;
    let (site, layout, dir) = (
        made.site().clone(),
        made.layout().clone(),
        made.temp_dir().to_owned(),
    );
    let container = site.container();
    if let Ok(mut c) = cleanup.lock() {
        c.site = Some(made);
    }
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)
        .map_err(|e| fail("directories", format!("{}: {e}", nginx_dir.display())))?;
    println!(
        "==> fleet demo: site {site}, container {container}, everything under {}",
        dir.display()
    );
    println!(
        "[setup] directories: FLEET_RUN_DIR={} FLEET_STATE_DIR={} FLEET_SITES_DIR={}",
        layout.run_dir.display(),
        layout.state_dir.display(),
        layout.sites_dir.display()
    );
    println!(
        "[setup] container {container}: created, state {} ({} bind-mounted at /run/php, where php-fpm creates php-fpm.sock)",
        container_state(&container),
        layout.site_dir(&site).display()
    );

    // fleet-waker under socket activation.
    let waker_socket = layout.waker_socket(&site);
    let fpm_socket = layout.fpm_socket(&site);
    let waker_log = dir.join("waker.log");
    let waker = Launch::new(&waker_bin)
        .arg(site.as_str())
        .env("FLEET_RUN_DIR", layout.run_dir.display().to_string())
        .env("FLEET_STATE_DIR", layout.state_dir.display().to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
        )
        .env("NO_COLOR", "1")
        .log_to(&waker_log)
        .stop_with(Signal::SIGTERM, Duration::from_secs(5))
        .try_activate(&waker_socket)
        .map_err(|e| fail("systemd-socket-activate", chain(&e)))?;
    if let Ok(mut c) = cleanup.lock() {
        c.children.push(("fleet-waker".to_string(), waker));
    }
    share_socket_with_nginx(&waker_socket).map_err(|e| fail("waker socket", e))?;
    println!(
        "[setup] fleet-waker: systemd-socket-activate listens on {}; the first connection execs fleet-waker {site} (log: {})",
        waker_socket.display(),
        waker_log.display()
    );

    // nginx, proxy mode, from the shipped snippet.
    let snippet = site_snippet(Mode::Proxy, site.as_str(), &layout.run_dir)
        .map_err(|e| fail("nginx config", e))?;
    let user = nginx_user();
    let nginx = NginxProc::start(&nginx_dir, args.port, user.as_deref(), &snippet)?;
    println!(
        "[setup] nginx: http://127.0.0.1:{}/ → {} (contrib/nginx/fleet-proxy-mode.conf; conf {})",
        args.port,
        waker_socket.display(),
        nginx_dir.join("nginx.conf").display()
    );
    if let Ok(mut c) = cleanup.lock() {
        c.nginx = Some(nginx);
    }

    let mut waker_log_seen = 0usize;
    let mut show_waker_log = || {
        let text = std::fs::read_to_string(&waker_log).unwrap_or_default();
        let new: Vec<&str> = text
            .get(waker_log_seen..)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        for l in new.iter().take(12) {
            println!("    waker log │ {l}");
        }
        waker_log_seen = text.len();
    };
    show_waker_log();

    // Step 1: cold.
    println!();
    println!(
        "step 1/4: first request, the container is {} (cold start)",
        container_state(&container)
    );
    let cold = cold_request(args.port, &container, &fpm_socket, site.as_str())
        .map_err(|e| fail("step 1 (cold request)", chain(&e)))?;
    cold.print();
    show_waker_log();

    // Step 2: warm.
    println!();
    println!(
        "step 2/4: second request, the container is {} (warm)",
        container_state(&container)
    );
    let warm = http::get_host(args.port, "localhost", "/")
        .map_err(|e| fail("step 2 (warm request)", e))?;
    check_page(&warm, site.as_str()).map_err(|e| fail("step 2 (warm request)", chain(&e)))?;
    println!(
        "  warm: {} to the first byte, {} in all, through nginx → fleet-waker → php-fpm",
        ms(warm.first_byte),
        ms(warm.total)
    );
    println!("  body: {}", warm.text().trim_end());
    let last_request = Instant::now();

    // Step 3: the reaper.
    println!();
    let conf = layout.conf_file(&site);
    std::fs::write(
        &conf,
        format!(
            "# Amount of time to pause the container after: {}\n",
            humantime::format_duration(DEMO_TIMEOUT)
        ),
    )
    .map_err(|e| fail("step 3 (site conf)", e))?;
    println!(
        "step 3/4: fleet-reaper with a {} idle timeout ({})",
        humantime::format_duration(DEMO_TIMEOUT),
        conf.display()
    );
    // As the timer would, but every second instead of every minute: the
    // reaper dates php-fpm's connections at the pass that sees them, so the
    // pass that stops the site comes one timeout after the first that saw
    // the last request.
    println!("  one pass every second, as fleet-reaper.timer does every minute:");
    let deadline = last_request + DEMO_TIMEOUT + Duration::from_secs(8);
    let mut stopped = false;
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        let out = Cmd::new(&reaper_bin)
            .arg("--sites-dir")
            .arg(&layout.sites_dir)
            .arg("--run-dir")
            .arg(&layout.run_dir)
            .arg("--state-dir")
            .arg(&layout.state_dir)
            .args(["--stop-timeout", "5s"])
            .env("NO_COLOR", "1")
            .output()
            .map_err(|e| fail("step 3 (fleet-reaper)", chain(&e)))?;
        println!(
            "  $ fleet-reaper --sites-dir {} --run-dir {} --state-dir {} --stop-timeout 5s   (pass {attempt}, {} after the last request, exit {})",
            layout.sites_dir.display(),
            layout.run_dir.display(),
            layout.state_dir.display(),
            ms(last_request.elapsed()),
            out.status
                .code()
                .map_or_else(|| out.status.to_string(), |c| c.to_string())
        );
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            println!("    {l}");
        }
        if !out.status.success() {
            for l in String::from_utf8_lossy(&out.stderr).lines() {
                println!("    stderr │ {l}");
            }
            return Err(fail(
                "step 3 (fleet-reaper)",
                format!("exit status {}", out.status),
            ));
        }
        if container_state(&container) == "exited" {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if !stopped {
        return Err(fail(
            "step 3 (fleet-reaper)",
            "the reaper did not stop the idle container",
        ));
    }
    println!(
        "  container {container} is now {}: the site sleeps, using no memory",
        container_state(&container)
    );

    // Step 4: wake it again.
    println!();
    println!(
        "step 4/4: third request, the container is {} (wakes again)",
        container_state(&container)
    );
    let again = cold_request(args.port, &container, &fpm_socket, site.as_str())
        .map_err(|e| fail("step 4 (wake again)", chain(&e)))?;
    again.print();
    show_waker_log();
    println!();
    println!(
        "all four steps done: cold {}, warm {}, reaped, woken again in {}",
        ms(cold.first_byte),
        ms(warm.first_byte),
        ms(again.first_byte)
    );

    if args.once {
        return Ok(());
    }
    serving.store(true, Ordering::SeqCst);
    println!();
    println!("The demo stays up. Try:");
    println!("  curl http://127.0.0.1:{}/", args.port);
    println!("  docker ps -a --filter name={container}");
    println!(
        "  {} --sites-dir {} --run-dir {} --state-dir {}   # stops it again once idle for {}",
        reaper_bin.display(),
        layout.sites_dir.display(),
        layout.run_dir.display(),
        layout.state_dir.display(),
        humantime::format_duration(DEMO_TIMEOUT)
    );
    println!("  tail -f {}", waker_log.display());
    println!("Press Ctrl-C to stop it and remove everything it made.");
    let _ = std::io::stdout().flush();
    loop {
        // The signal thread cleans up and exits the process.
        std::thread::park();
    }
}

fn container_state(container: &str) -> String {
    docker(&["inspect", "--format", "{{.State.Status}}", container])
        .unwrap_or_else(|_| "missing".to_string())
}

/// A cold request's phases, each from the moment the request was sent.
#[derive(Debug)]
struct Cold {
    container_start: Option<Duration>,
    fpm_accepting: Option<Duration>,
    first_byte: Duration,
    total: Duration,
    body: String,
}

impl Cold {
    fn print(&self) {
        // Each phase: when it happened after the request was sent, and how
        // long it took after the previous phase.
        let mut prev = Duration::ZERO;
        let mut line = |name: &str, at: Option<Duration>, how: &str| match at {
            Some(at) => {
                let delta = at.saturating_sub(prev);
                prev = at;
                println!(
                    "  phase {name:<18} {:>10}  (+{:>9})  {how}",
                    ms(at),
                    ms(delta)
                );
            }
            None => println!("  phase {name:<18} {:>10}  {how}", "n/a"),
        };
        line(
            "container start:",
            self.container_start,
            "Docker's State.StartedAt",
        );
        line(
            "php-fpm accepting:",
            self.fpm_accepting,
            "first successful connect to php-fpm.sock",
        );
        line(
            "first byte:",
            Some(self.first_byte),
            "first byte of the HTTP response at the client",
        );
        println!("  complete response:       {:>10}", ms(self.total));
        println!("  body: {}", self.body.trim_end());
    }
}

fn cold_request(port: u16, container: &str, fpm_socket: &Path, site: &str) -> Result<Cold, Error> {
    if UnixStream::connect(fpm_socket).is_ok() {
        return Err(Error::failed(
            fpm_socket.display().to_string(),
            "accepts before the request: the site is not asleep",
        ));
    }
    // Watch php-fpm's socket from the outside: connect every ≤ 1 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let sent_at = Instant::now();
    let sent_wall = SystemTime::now();
    let watcher = {
        let stop = Arc::clone(&stop);
        let socket = fpm_socket.to_path_buf();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if UnixStream::connect(&socket).is_ok() {
                    return Some(sent_at.elapsed());
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            None
        })
    };
    let response = http::get_host(port, "localhost", "/");
    stop.store(true, Ordering::SeqCst);
    let fpm_accepting = watcher.join().ok().flatten();
    let response = response.map_err(|e| Error::failed("GET /", e))?;
    check_page(&response, site)?;
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", container])?;
    let container_start = humantime::parse_rfc3339(started.trim())
        .ok()
        .and_then(|t| t.duration_since(sent_wall).ok());
    Ok(Cold {
        container_start,
        fpm_accepting,
        first_byte: response.first_byte,
        total: response.total,
        body: response.text(),
    })
}

fn check_page(r: &HttpResponse, site: &str) -> Result<(), Error> {
    if r.status != 200 || !r.text().starts_with(&format!("hello from {site} ")) {
        return Err(Error::failed(
            "GET /",
            format!(
                "expected 200 and the demo page, got {} {:?}",
                r.status,
                r.text()
            ),
        ));
    }
    Ok(())
}
