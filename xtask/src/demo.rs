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
//! Everything lives under the kit's temp dir `/tmp/fleet-it-<pid>-demo-…` (or
//! `$FLEET_KIT_TMPDIR`; run, state and sites
//! directories through `FLEET_RUN_DIR` etc.), never the host's
//! `/run/docker-apps`. Everything it made is removed at the end, on failure
//! and on Ctrl-C (SIGINT/SIGTERM are taken by a dedicated thread).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use fleet_core::startup;
use nix::sys::signal::Signal;

use crate::Error;
use crate::deps::Prerequisite;
use crate::error::chain;
use crate::kit::http;
use crate::kit::nginx::{Mode, NginxProc, nginx_user, share_socket_with_nginx, site_snippet};
use crate::kit::process::{Launch, SocketActivated};
use crate::kit::reaper::Reaper;
use crate::kit::site::{SiteOptions, TestSite};
use crate::wait::wait_for;

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

/// What the demo made, each stopped or removed as it drops, in this order,
/// by [`Cleanup::run`] (idempotent); and whether the demo is serving (a
/// Ctrl-C then is its normal end).
#[derive(Debug, Default)]
struct Cleanup {
    nginx: Option<NginxProc>,
    waker: Option<SocketActivated>,
    /// The kit's site: its container and directories.
    site: Option<TestSite>,
    serving: bool,
}

impl Cleanup {
    fn run(&mut self) {
        let t = Instant::now();
        let mut done = Vec::new();
        let mut did = |what: String| done.push(format!("{what} ({})", ms(t.elapsed())));
        if let Some(nginx) = self.nginx.take() {
            drop(nginx);
            did("stopped nginx".to_owned());
        }
        if let Some(waker) = self.waker.take() {
            drop(waker);
            did("stopped fleet-waker".to_owned());
        }
        if let Some(site) = self.site.take() {
            let (container, dir) = (site.container(), site.temp_dir().display());
            let removed = format!("removed container {container} and {dir}");
            drop(site);
            did(removed);
        }
        if !done.is_empty() {
            println!("cleanup: {}", done.join(", "));
        }
    }
}

/// The cleanup, also when the other thread panicked holding it: what the
/// demo made must go all the same.
fn lock(cleanup: &Mutex<Cleanup>) -> MutexGuard<'_, Cleanup> {
    cleanup.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The demo site's idle timeout for the reaper step.
const DEMO_TIMEOUT: Duration = Duration::from_secs(2);

/// `cargo xtask demo …`.
pub fn main(args: &DemoArgs) -> Result<(), Error> {
    // SIGINT/SIGTERM: the binaries' handlers (installed now, before anything
    // is made) wake one thread, which removes what the demo made and exits.
    // Handlers, not a blocked mask: a mask would be inherited by the waker
    // and nginx, which then could not be stopped with SIGTERM/SIGQUIT.
    let signals = |e: startup::StartupError| Error::failed("signal handling", chain(&e));
    let rt = startup::runtime().map_err(signals)?;
    let shutdown = startup::shutdown_on_signals(&rt, "stopping the demo").map_err(signals)?;
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let on_signal = Arc::clone(&cleanup);
    std::thread::spawn(move || {
        rt.block_on(shutdown.cancelled());
        let mut cleanup = lock(&on_signal);
        let code = if cleanup.serving { 0 } else { 130 };
        println!("\nSIGINT/SIGTERM: stopping the demo and removing everything it made");
        cleanup.run();
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    });
    let result = run(args, &cleanup);
    lock(&cleanup).run();
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

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The demo site's page.
const INDEX_PHP: &str = "<?php\nheader('Content-Type: text/plain');\necho 'hello from ', getenv('FLEET_SITE'), ' (php-fpm pid ', getmypid(), ', PHP ', PHP_VERSION, \")\\n\";\n";

fn run(args: &DemoArgs, cleanup: &Mutex<Cleanup>) -> Result<(), Error> {
    let missing = missing_prerequisites(args.port);
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }

    // Binaries.
    let bin_dir = crate::kit::profile_dir()?;
    let shown = bin_dir.display();
    if args.no_build {
        println!("[setup] binaries: using {shown} (--no-build)");
    } else {
        println!("[setup] binaries: cargo build (dev profile) into {shown}");
        crate::kit::build("dev", &["fleet-waker", "fleet-reaper"])?;
    }
    let [waker_bin, reaper_bin] = ["fleet-waker", "fleet-reaper"].map(|b| bin_dir.join(b));
    if let Some(b) = [&waker_bin, &reaper_bin].into_iter().find(|b| !b.is_file()) {
        let why = format!("{} does not exist (run without --no-build)", b.display());
        return Err(Error::failed("binaries", why));
    }

    // Image.
    let t = Instant::now();
    let image = crate::image::ensure_image_info()?;
    let how = if image.cached { "cached" } else { "built" };
    let took = ms(t.elapsed());
    println!("[setup] image: {} ({how} in {took})", image.tag);

    // The site: the kit's, as the tests and benches make theirs (its
    // directories, its runtime tmpfs, a created container; what a killed
    // demo left is swept by the next run).
    let made = TestSite::try_with_options(SiteOptions {
        name: Some(format!("demo-{}.fleet.test", std::process::id())),
        temp_kind: Some("demo".to_owned()),
        scripts: vec![("index.php".to_owned(), INDEX_PHP.to_owned())],
        ..SiteOptions::default()
    })?;
    let (site, container) = (made.site().clone(), made.container().to_owned());
    let (layout, dir) = (made.layout().clone(), made.temp_dir().to_owned());
    let env = made.layout_env();
    let (waker_socket, fpm_socket) = (made.waker_socket(), made.fpm_socket());
    let timeout = humantime::format_duration(DEMO_TIMEOUT).to_string();
    let conf = made.try_write_conf(&timeout)?;
    lock(cleanup).site = Some(made);
    let state = || {
        lock(cleanup)
            .site
            .as_ref()
            .map_or_else(String::new, TestSite::state)
    };
    println!(
        "==> fleet demo: site {site}, container {container}, everything under {}",
        dir.display()
    );
    let env_line: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("[setup] directories: {}", env_line.join(" "));
    println!(
        "[setup] container {container}: created, state {} ({} bind-mounted at /run/php, where php-fpm creates php-fpm.sock)",
        state(),
        layout.site_dir(&site).display()
    );

    // fleet-waker under socket activation.
    let waker_log = dir.join("waker.log");
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let waker = Launch::new(&waker_bin)
        .arg(site.as_str())
        .envs(env)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .log_to(&waker_log)
        .stop_with(Signal::SIGTERM, Duration::from_secs(5))
        .try_activate(&waker_socket)?;
    lock(cleanup).waker = Some(waker);
    share_socket_with_nginx(&waker_socket).map_err(Error::io("share with nginx", &waker_socket))?;
    println!(
        "[setup] fleet-waker: systemd-socket-activate listens on {}; the first connection execs fleet-waker {site} (log: {})",
        waker_socket.display(),
        waker_log.display()
    );

    // nginx, proxy mode, from the shipped snippet.
    let snippet = site_snippet(Mode::Proxy, site.as_str(), &layout.run_dir)?;
    let nginx_dir = dir.join("nginx");
    let nginx = NginxProc::start(&nginx_dir, args.port, nginx_user().as_deref(), &snippet)?;
    lock(cleanup).nginx = Some(nginx);
    println!(
        "[setup] nginx: http://127.0.0.1:{}/ → {} (contrib/nginx/fleet-proxy-mode.conf; conf {})",
        args.port,
        waker_socket.display(),
        nginx_dir.join("nginx.conf").display()
    );

    let mut waker_log_seen = 0;
    let mut show_waker_log = || {
        let text = std::fs::read_to_string(&waker_log).unwrap_or_default();
        let new = text.get(waker_log_seen..).unwrap_or("").lines();
        for l in new.filter(|l| !l.trim().is_empty()).take(12) {
            println!("    waker log │ {l}");
        }
        waker_log_seen = text.len();
    };
    show_waker_log();
    let step = |n: u8, what: &str, how: &str| {
        println!("\nstep {n}/4: {what}, the container is {} ({how})", state());
    };

    // How the demo page of `GET /` starts.
    let page = format!("hello from {site} ");
    step(1, "first request", "cold start");
    let cold = cold_request(args.port, &container, &fpm_socket, &page)
        .map_err(|e| Error::failed("step 1 (cold request)", chain(&e)))?;
    show_waker_log();

    step(2, "second request", "warm");
    let warm = http::get_page(args.port, "/", &page)
        .map_err(|e| Error::failed("step 2 (warm request)", chain(&e)))?;
    println!(
        "  warm: {} to the first byte, {} in all, through nginx → fleet-waker → php-fpm",
        ms(warm.first_byte),
        ms(warm.total)
    );
    println!("  body: {}", warm.text().trim_end());
    let last_request = Instant::now();

    println!(
        "\nstep 3/4: fleet-reaper with a {timeout} idle timeout ({})",
        conf.display()
    );
    let reaper = Reaper::over(&reaper_bin, &layout).args(["--stop-timeout", "5s"]);
    reap_until_stopped(&reaper, last_request, &state)
        .map_err(|e| Error::failed("step 3 (fleet-reaper)", chain(&e)))?;
    println!(
        "  container {container} is now {}: the site sleeps, using no memory",
        state()
    );

    step(4, "third request", "wakes again");
    let again = cold_request(args.port, &container, &fpm_socket, &page)
        .map_err(|e| Error::failed("step 4 (wake again)", chain(&e)))?;
    show_waker_log();
    println!(
        "\nall four steps done: cold {}, warm {}, reaped, woken again in {}",
        ms(cold),
        ms(warm.first_byte),
        ms(again)
    );

    if args.once {
        return Ok(());
    }
    lock(cleanup).serving = true;
    println!("\nThe demo stays up. Try:");
    println!("  curl http://127.0.0.1:{}/", args.port);
    println!("  docker ps -a --filter name={container}");
    println!(
        "  {}   # stops it again once idle for {timeout}",
        reaper.line()
    );
    println!("  tail -f {}", waker_log.display());
    println!("Press Ctrl-C to stop it and remove everything it made.");
    let _ = std::io::stdout().flush();
    loop {
        // The signal thread cleans up and exits the process.
        std::thread::park();
    }
}

/// Step 3: as the timer would, but every second instead of every minute, a
/// `reaper` pass, then the container's `state`, until it is `exited`. The
/// reaper dates php-fpm's connections at the pass that sees them, so the
/// pass that stops the site comes one timeout after the first that saw the
/// last request; 8 s more are allowed.
fn reap_until_stopped(
    reaper: &Reaper,
    last_request: Instant,
    state: &dyn Fn() -> String,
) -> Result<(), Error> {
    println!("  one pass every second, as fleet-reaper.timer does every minute:");
    let mut pass = 0;
    let within = (last_request + DEMO_TIMEOUT + Duration::from_secs(8))
        .saturating_duration_since(Instant::now());
    reaper.passes(within, Duration::from_secs(1), |run| {
        pass += 1;
        let after = ms(last_request.elapsed());
        let exit = run
            .code
            .map_or("a signal".to_owned(), |c| format!("exit {c}"));
        println!(
            "  $ {}   (pass {pass}, {after} after the last request, {exit})",
            reaper.line()
        );
        for l in run.stdout.lines() {
            println!("    {l}");
        }
        if run.code != Some(0) {
            for l in run.stderr.lines() {
                println!("    stderr │ {l}");
            }
            return Err(Error::failed(reaper.line(), exit));
        }
        Ok(state() == "exited")
    })?;
    Ok(())
}

/// `GET /`, a page starting with `prefix`, waking the sleeping site, its
/// phases printed, each timed from the moment the request was sent; returns
/// the time to the first byte.
fn cold_request(
    port: u16,
    container: &str,
    fpm_socket: &Path,
    prefix: &str,
) -> Result<Duration, Error> {
    if UnixStream::connect(fpm_socket).is_ok() {
        let why = "accepts before the request: the site is not asleep";
        return Err(Error::failed(fpm_socket.display().to_string(), why));
    }
    let (sent_at, sent_wall) = (Instant::now(), SystemTime::now());
    let answered = AtomicBool::new(false);
    let (response, fpm_accepting) = std::thread::scope(|s| {
        // php-fpm's socket watched from the outside while the request runs.
        let watcher = s.spawn(|| {
            let mut at = None;
            wait_for(http::SLOW_TIMEOUT, || {
                if answered.load(Ordering::SeqCst) {
                    return true;
                }
                at = UnixStream::connect(fpm_socket)
                    .is_ok()
                    .then(|| sent_at.elapsed());
                at.is_some()
            });
            at
        });
        let response = http::get_page(port, "/", prefix);
        answered.store(true, Ordering::SeqCst);
        (response, watcher.join().ok().flatten())
    });
    let response = response?;
    let inspect = ["inspect", "--format", "{{.State.StartedAt}}", container];
    let started = crate::error::run("docker", &inspect)?;
    let container_start = humantime::parse_rfc3339(started.trim())
        .ok()
        .and_then(|t| t.duration_since(sent_wall).ok());
    // Each phase: when it happened after the request was sent, and how long
    // it took after the previous phase.
    let mut prev = Duration::ZERO;
    let mut phase = |name: &str, at: Option<Duration>, how: &str| match at {
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
    phase(
        "container start:",
        container_start,
        "Docker's State.StartedAt",
    );
    phase(
        "php-fpm accepting:",
        fpm_accepting,
        "first successful connect to php-fpm.sock",
    );
    phase(
        "first byte:",
        Some(response.first_byte),
        "first byte of the HTTP response at the client",
    );
    println!("  complete response:       {:>10}", ms(response.total));
    println!("  body: {}", response.text().trim_end());
    Ok(response.first_byte)
}
