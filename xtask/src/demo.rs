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
//!
//! The nginx pieces ([`site_snippet`], [`render_nginx_conf`], [`NginxProc`])
//! are public: the integration tests, the benches and the soak run the
//! shipped snippets through them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::Error;
use crate::error::{Cmd, chain};
use crate::kit::http::{self, HttpResponse};
use crate::kit::process::{Launch, SocketActivated, Spawned, find_in_path};
use crate::kit::site::{SiteOptions, TestSite};
use crate::wait::wait_until;

/// The shipped proxy-mode example (a complete `server` block for example.com).
pub const PROXY_CONF: &str = include_str!("../../contrib/nginx/fleet-proxy-mode.conf");
/// The shipped direct-mode example (an `upstream` and a `server` block for example.com).
pub const DIRECT_CONF: &str = include_str!("../../contrib/nginx/fleet-direct-mode.conf");
/// nginx's binary.
pub const NGINX: &str = "/usr/sbin/nginx";
/// The `fastcgi_params` the snippets include.
pub const FASTCGI_PARAMS: &str = "/etc/nginx/fastcgi_params";

/// Which nginx layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every request to the waker's socket (`fleet-proxy-mode.conf`).
    Proxy,
    /// php-fpm's socket first, the waker's as backup (`fleet-direct-mode.conf`).
    Direct,
}

/// The shipped snippet of a mode, made concrete for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// What goes at `http {}` level (direct mode's `upstream`; empty in proxy mode).
    pub http: String,
    /// The `location` block for the `server {}`.
    pub location: String,
    /// nginx's worker processes and connections per worker (1 and 1024
    /// unless [`Snippet::with_workers`]).
    pub workers: (u32, u32),
}

impl Snippet {
    /// This snippet with the location's `fastcgi_pass` sent to `target`
    /// (`unix:<socket>` or an upstream's name) instead: for a test that puts
    /// another socket behind the shipped location.
    pub fn passing_to(mut self, target: &str) -> Snippet {
        self.location = self
            .location
            .lines()
            .map(|l| {
                let directive = l.trim_start();
                if directive.starts_with("fastcgi_pass ") {
                    let indent = &l[..l.len() - directive.len()];
                    format!("{indent}fastcgi_pass {target};\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        self
    }

    /// This snippet with `directives` added at `http {}` level (e.g. an
    /// `upstream` that [`Snippet::passing_to`] names).
    pub fn with_http(mut self, directives: &str) -> Snippet {
        self.http.push_str(directives.trim_end());
        self.http.push('\n');
        self
    }

    /// This snippet with `directives` (one per line) added at the end of the
    /// location block, e.g. `fastcgi_keep_conn on;` for pooled connections.
    pub fn with_location(mut self, directives: &str) -> Snippet {
        let close = self
            .location
            .trim_end()
            .rfind('}')
            .unwrap_or(self.location.len());
        let added: String = directives
            .lines()
            .map(|l| format!("    {}\n", l.trim()))
            .collect();
        self.location.insert_str(close, &added);
        self
    }

    /// This snippet served by `processes` nginx workers of `connections`
    /// each (a bench's many concurrent clients), instead of 1 × 1024.
    pub fn with_workers(mut self, processes: u32, connections: u32) -> Snippet {
        self.workers = (processes, connections);
        self
    }
}

/// Workers of a [`Snippet`] as [`site_snippet`] makes it.
const DEFAULT_WORKERS: (u32, u32) = (1, 1024);

/// One `server {}` of [`render_servers_conf`]: a snippet's location behind
/// `listen 127.0.0.1:<port>`, `server_name <name>`, `root <root>` (the
/// docroot as php-fpm sees it).
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    pub port: u16,
    pub name: &'a str,
    pub root: &'a str,
    pub snippet: &'a Snippet,
}

/// A shipped snippet did not have the shape the templating expects.
#[derive(Debug, thiserror::Error)]
#[error("contrib/nginx snippet for {mode:?} mode: {what}")]
pub struct SnippetError {
    mode: Mode,
    what: String,
}

/// Template the shipped example of `mode` for `site` whose runtime
/// directories live under `run_dir` (the `/run/docker-apps` of the example):
/// its `upstream` block (direct mode) and the `location` block of its
/// `server`, dedented, with `/run/docker-apps/example.com/` made
/// `<run_dir>/<site>/`, `example_com` (upstream name) the site with `.`/`-`
/// as `_`, and `example.com` the site. The demo, benches and soak wrap these in
/// a `server` of [`render_servers_conf`] (listen port, docroot); the README's
/// complete files are rendered whole by the integration tests. Pure: tested
/// below on the real files.
pub fn site_snippet(mode: Mode, site: &str, run_dir: &Path) -> Result<Snippet, SnippetError> {
    let text = match mode {
        Mode::Proxy => PROXY_CONF,
        Mode::Direct => DIRECT_CONF,
    };
    let err = |what: &str| SnippetError {
        mode,
        what: what.to_string(),
    };
    let run = run_dir.display().to_string();
    let run = run.trim_end_matches('/');
    let concrete = |s: &str| {
        s.replace("/run/docker-apps/example.com/", &format!("{run}/{site}/"))
            .replace("example_com", &site.replace(['.', '-'], "_"))
            .replace("example.com", site)
    };
    let lines: Vec<&str> = text.lines().collect();
    // A block from the first line starting (after indentation) with `start`
    // to the first later line that is `}` at the same indentation, dedented.
    let block = |start: &str| -> Option<String> {
        let from = lines
            .iter()
            .position(|l| l.trim_start().starts_with(start))?;
        let indent = lines[from].len() - lines[from].trim_start().len();
        let close = format!("{:indent$}}}", "");
        let to = from + lines[from..].iter().position(|l| l.trim_end() == close)?;
        Some(
            lines[from..=to]
                .iter()
                .map(|l| format!("{}\n", l.get(indent..).unwrap_or_else(|| l.trim_start())))
                .collect(),
        )
    };
    let location = block("location ~").ok_or_else(|| err("no `location ~ … }` block"))?;
    match mode {
        Mode::Proxy => {
            if !location.contains("fastcgi_pass unix:/run/docker-apps/example.com/vhost-waker.sock")
            {
                return Err(err("the location does not pass to the waker's socket"));
            }
            Ok(Snippet {
                http: String::new(),
                location: concrete(&location),
                workers: DEFAULT_WORKERS,
            })
        }
        Mode::Direct => {
            let upstream = block("upstream ").ok_or_else(|| err("no `upstream … }` block"))?;
            if !upstream.contains(" backup") {
                return Err(err("the upstream has no backup server"));
            }
            Ok(Snippet {
                http: concrete(&upstream),
                location: concrete(&location),
                workers: DEFAULT_WORKERS,
            })
        }
    }
}

/// A complete nginx.conf around a [`Snippet`]: pid, logs and temp paths in
/// `dir`, `listen 127.0.0.1:<port>`, `root /srv/www` (the docroot as php-fpm
/// sees it), `/` rewritten to `/index.php`, and `user <user>;` when given. The snippet's
/// `include fastcgi_params;` resolves next to the conf file: copy
/// [`FASTCGI_PARAMS`] there ([`NginxProc::start`] does).
pub fn render_nginx_conf(dir: &Path, port: u16, user: Option<&str>, snippet: &Snippet) -> String {
    render_servers_conf(
        dir,
        user,
        &[Server {
            port,
            name: "localhost",
            root: "/srv/www",
            snippet,
        }],
    )
}

/// [`render_nginx_conf`] with one `server {}` per [`Server`] in one nginx
/// (a bench's sides measured under the same settings). The snippets' `http`
/// parts go in once each (identical ones once: a setting every snippet
/// carries), and nginx gets the most workers and connections any asks for.
pub fn render_servers_conf(dir: &Path, user: Option<&str>, servers: &[Server<'_>]) -> String {
    let indent = |s: &str, n: usize| -> String {
        s.lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_string()
                } else {
                    format!("{:n$}{l}\n", "")
                }
            })
            .collect()
    };
    let mut http = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in servers {
        if !seen.contains(&s.snippet.http.as_str()) {
            seen.push(&s.snippet.http);
            http.push_str(&indent(&s.snippet.http, 4));
        }
    }
    for Server {
        port,
        name,
        root,
        snippet,
    } in servers
    {
        let _ = write!(
            http,
            "    server {{
        listen 127.0.0.1:{port};
        server_name {name};
        root {root};
        # nginx's index module looks for index.php on this host, where
        # {root} (the container's docroot) does not exist: rewrite instead.
        location = / {{ rewrite ^ /index.php last; }}
{location}    }}
",
            location = indent(&snippet.location, 8),
        );
    }
    let workers = servers
        .iter()
        .map(|s| s.snippet.workers)
        .fold(DEFAULT_WORKERS, |a, b| (a.0.max(b.0), a.1.max(b.1)));
    main_conf(dir, user, workers, &http)
}

/// A complete nginx.conf running whole site files as a host's does, with
/// `include <dir>/sites-enabled/*;` (the README's files, which carry their
/// own `listen` and `server`); otherwise as [`render_nginx_conf`].
pub fn render_sites_conf(dir: &Path, user: Option<&str>) -> String {
    main_conf(
        dir,
        user,
        DEFAULT_WORKERS,
        &format!("    include {}/sites-enabled/*;\n", dir.display()),
    )
}

/// What every nginx.conf here has around its `http {}` content: the user,
/// `(processes, connections)` workers, and pid, logs and temp paths in `dir`
/// (never the host's).
fn main_conf(dir: &Path, user: Option<&str>, workers: (u32, u32), http: &str) -> String {
    let d = dir.display();
    let (processes, connections) = workers;
    let mut conf = String::new();
    if let Some(user) = user {
        let _ = writeln!(conf, "user {user};");
    }
    if connections > DEFAULT_WORKERS.1 {
        // A proxied connection holds two descriptors (client and upstream);
        // above the usual 1024 the default limit would run out first.
        let _ = writeln!(conf, "worker_rlimit_nofile {};", 2 * connections);
    }
    let _ = write!(
        conf,
        "worker_processes {processes};
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi_temp;
    proxy_temp_path {d}/proxy_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    client_max_body_size 64m;
{http}}}
"
    );
    conf
}

/// The user nginx workers should run as when we are root: `www-data` (the
/// group the shipped socket unit gives the waker's socket) when it exists.
pub fn nginx_user() -> Option<String> {
    let root = nix::unistd::geteuid().is_root();
    let has = std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.starts_with("www-data:")));
    (root && has).then(|| "www-data www-data".to_string())
}

/// Give a socket what `fleet-waker@.socket` gives it: group `www-data`
/// (when it exists), mode 0660, so nginx workers running as www-data reach it.
/// Only a socket: the runtime directory is the container's to write, so a
/// link there is refused, never followed.
pub fn share_socket_with_nginx(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    if !std::fs::symlink_metadata(socket)?.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a socket (never followed)", socket.display()),
        ));
    }
    let gid = nix::unistd::Group::from_name("www-data")
        .ok()
        .flatten()
        .map(|g| g.gid);
    if let Some(gid) = gid {
        nix::unistd::chown(socket, None, Some(gid)).map_err(std::io::Error::from)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
    } else {
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
    }
}

/// A running nginx (master and workers in their own process group), its
/// files in `dir`. Killed (whole group) on drop. The one nginx launcher of
/// the demo, bench, soak and the integration tests.
#[derive(Debug)]
pub struct NginxProc {
    child: Option<Spawned>,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl NginxProc {
    /// Write `<dir>/nginx.conf` (from [`render_nginx_conf`]) and
    /// `<dir>/fastcgi_params`, start nginx in the foreground, and wait
    /// (≤ 10 s) until the port accepts. An error carries nginx's own message.
    pub fn start(
        dir: &Path,
        port: u16,
        user: Option<&str>,
        snippet: &Snippet,
    ) -> Result<NginxProc, Error> {
        Self::start_conf(dir, &render_nginx_conf(dir, port, user, snippet), &[port])
    }

    /// [`NginxProc::start`] with one `server {}` per [`Server`]
    /// ([`render_servers_conf`]), waiting until each port accepts.
    pub fn start_servers(
        dir: &Path,
        user: Option<&str>,
        servers: &[Server<'_>],
    ) -> Result<NginxProc, Error> {
        let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        Self::start_conf(dir, &render_servers_conf(dir, user, servers), &ports)
    }

    /// [`NginxProc::start`] on a given nginx.conf text (e.g. from
    /// [`render_sites_conf`]), waiting until every one of `ports` accepts.
    /// The error carries nginx's own message (the tests' retry looks for
    /// "Address already in use" in it, tests/it/support/nginx.rs).
    pub fn start_conf(dir: &Path, text: &str, ports: &[u16]) -> Result<NginxProc, Error> {
        let fail = |why: String| Error::failed("start nginx", why);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, text).map_err(Error::io("write", &conf))?;
        let params = dir.join("fastcgi_params");
        std::fs::copy(FASTCGI_PARAMS, &params)
            .map_err(Error::io("copy fastcgi_params to", params))?;
        let stderr_path = dir.join("nginx.stderr");
        let _ = std::fs::remove_file(&stderr_path);
        let child = Launch::new(NGINX)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .log_to(&stderr_path)
            // SIGQUIT: nginx's graceful stop.
            .stop_with(Signal::SIGQUIT, Duration::from_secs(5))
            .try_spawn()?;
        let mut this = NginxProc {
            child: Some(child),
            dir: dir.to_path_buf(),
            ports: ports.to_vec(),
        };
        let mut exited = None;
        let up = wait_until(Duration::from_secs(10), || {
            if let Some(status) = this.child.as_mut().and_then(Spawned::try_status) {
                exited = Some(status);
                return true;
            }
            ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        if let Some(status) = exited {
            this.child = None;
            return Err(fail(format!(
                "nginx exited ({status}): {}{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            )));
        }
        if !up {
            return Err(fail(format!(
                "nginx did not accept on 127.0.0.1:{ports:?} within 10 s"
            )));
        }
        Ok(this)
    }

    /// The (first) port.
    pub fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or_default()
    }

    /// Every port it listens on.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Pid of the master.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Spawned::pid)
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Its access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Stop it (SIGQUIT to the group for a graceful stop, SIGKILL after 5 s).
    pub fn stop(&mut self) {
        drop(self.child.take());
    }
}

impl Drop for NginxProc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The demo itself.

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
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(
            "root: run it as root (it starts containers and nginx, and chowns sockets)".to_string(),
        );
    }
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        missing.push(format!(
            "Docker engine: {e} (is dockerd running, DOCKER_HOST right? else apt-get install docker.io)"
        ));
    }
    if !Path::new(NGINX).exists() || !Path::new(FASTCGI_PARAMS).exists() {
        missing.push(format!(
            "nginx: {NGINX} or {FASTCGI_PARAMS} missing (apt-get install nginx-light)"
        ));
    }
    if !Path::new(crate::image::PHP_FPM).exists() {
        missing.push(format!(
            "php-fpm: {} missing, the demo image is built from it (apt-get install php8.2-fpm)",
            crate::image::PHP_FPM
        ));
    }
    if find_in_path("systemd-socket-activate").is_none() {
        missing.push("systemd-socket-activate not on PATH (apt-get install systemd)".to_string());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_snippet_is_the_shipped_location_made_concrete() {
        let s = site_snippet(Mode::Proxy, "a-b.example.org", Path::new("/tmp/x/run/"))
            .expect("proxy snippet");
        assert!(s.http.is_empty());
        assert!(
            s.location.starts_with("location ~ [^/]\\.php(/|$) {\n"),
            "{}",
            s.location
        );
        assert!(s.location.trim_end().ends_with('}'));
        assert!(
            s.location
                .contains("fastcgi_pass unix:/tmp/x/run/a-b.example.org/vhost-waker.sock;")
        );
        assert!(s.location.contains("include fastcgi_params;"));
        assert!(!s.location.contains("example.com"));
        // The shipped block, line for line (dedented from the `server`),
        // with only the paths changed.
        let shipped: String = PROXY_CONF
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("location "))
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let shipped = shipped.replace(
            "/run/docker-apps/example.com/",
            "/tmp/x/run/a-b.example.org/",
        );
        assert!(
            shipped.starts_with(&s.location),
            "{shipped}\n---\n{}",
            s.location
        );
    }

    #[test]
    fn direct_snippet_has_upstream_with_backup_and_the_location() {
        let s = site_snippet(Mode::Direct, "shop.example.org", Path::new("/srv/run"))
            .expect("direct snippet");
        assert!(
            s.http.starts_with("upstream fleet_shop_example_org {\n"),
            "{}",
            s.http
        );
        assert!(
            s.http
                .contains("server unix:/srv/run/shop.example.org/php-fpm.sock max_fails=0;")
        );
        assert!(s.http.contains(
            "server unix:/srv/run/shop.example.org/vhost-waker.sock max_fails=0 backup;"
        ));
        assert!(
            s.location.starts_with("location ~ [^/]\\.php(/|$) {\n"),
            "{}",
            s.location
        );
        assert!(s.location.contains("fastcgi_pass fleet_shop_example_org;"));
        assert!(s.location.contains("fastcgi_next_upstream error timeout;"));
        assert!(!s.location.lines().any(|l| l.starts_with('#')));
        assert_eq!(s.location.trim_end().lines().last(), Some("}"));
    }

    #[test]
    fn nginx_conf_wraps_the_snippet() {
        let s = site_snippet(Mode::Direct, "a.test", Path::new("/r")).expect("direct snippet");
        let conf = render_nginx_conf(Path::new("/d"), 8081, Some("www-data www-data"), &s);
        assert!(conf.starts_with("user www-data www-data;\n"));
        assert!(conf.contains("listen 127.0.0.1:8081;"));
        assert!(conf.contains("pid /d/nginx.pid;"));
        assert!(conf.contains("    upstream fleet_a_test {"));
        assert!(conf.contains("        location ~ [^/]\\.php(/|$) {"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        assert!(!render_nginx_conf(Path::new("/d"), 1, None, &s).contains("user "));
    }

    #[test]
    fn additions_go_into_the_shipped_blocks() {
        let s = site_snippet(Mode::Proxy, "a.test", Path::new("/r"))
            .expect("proxy snippet")
            .passing_to("pool")
            .with_http("upstream pool { server unix:/s.sock; keepalive 8; }")
            .with_location("fastcgi_keep_conn on;\nfastcgi_read_timeout 20s;");
        assert!(
            s.location.contains("\n    fastcgi_pass pool;\n"),
            "{}",
            s.location
        );
        assert!(!s.location.contains("vhost-waker.sock"));
        assert!(
            s.location
                .ends_with("    fastcgi_keep_conn on;\n    fastcgi_read_timeout 20s;\n}\n"),
            "{}",
            s.location
        );
        // Everything else is the shipped block.
        assert!(s.location.contains("include fastcgi_params;"));
        assert_eq!(
            s.http,
            "upstream pool { server unix:/s.sock; keepalive 8; }\n"
        );
        let conf = render_nginx_conf(Path::new("/d"), 1, None, &s);
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn servers_share_one_nginx_and_its_settings() {
        let proxy = site_snippet(Mode::Proxy, "a.test", Path::new("/r")).expect("proxy snippet");
        let direct = site_snippet(Mode::Direct, "a.test", Path::new("/r")).expect("direct snippet");
        let hash = "server_names_hash_bucket_size 128;";
        let (p, d) = (
            proxy.clone().with_http(hash).with_workers(2, 4096),
            direct.with_http(hash),
        );
        let server = |port, name, snippet| Server {
            port,
            name,
            root: "/srv/www/x",
            snippet,
        };
        let conf = render_servers_conf(
            Path::new("/d"),
            None,
            &[
                server(1, "one", &p),
                server(1, "two", &p),
                server(2, "x", &d),
            ],
        );
        assert_eq!(conf.matches("    server {\n").count(), 3, "{conf}");
        assert!(conf.contains("listen 127.0.0.1:2;"));
        assert!(conf.contains("server_name two;"));
        assert!(conf.contains("root /srv/www/x;"));
        // The proxy snippets' identical http part once, the direct one's
        // (upstream and the same setting) once more.
        assert_eq!(conf.matches(hash).count(), 2, "{conf}");
        assert_eq!(conf.matches("upstream fleet_a_test {").count(), 1);
        assert!(conf.contains("worker_processes 2;\n"));
        assert!(conf.contains("worker_rlimit_nofile 8192;\n"));
        assert!(conf.contains("events { worker_connections 4096; }"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        // One server on defaults: one worker, no descriptor limit.
        let one = render_nginx_conf(Path::new("/d"), 1, None, &proxy);
        assert!(one.contains("worker_processes 1;\n"));
        assert!(one.contains("events { worker_connections 1024; }"));
        assert!(!one.contains("worker_rlimit_nofile"));
    }

    #[test]
    fn sites_conf_includes_the_site_files() {
        let conf = render_sites_conf(Path::new("/d"), None);
        assert!(
            conf.contains("    include /d/sites-enabled/*;\n}\n"),
            "{conf}"
        );
        assert!(conf.contains("pid /d/nginx.pid;"));
        assert!(!conf.contains("server"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
