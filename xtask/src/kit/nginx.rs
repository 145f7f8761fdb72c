//! The nginx kit: the shipped `contrib/nginx` snippets made concrete for a
//! site ([`site_snippet`]), complete nginx.conf files around them
//! ([`render_nginx_conf`], [`render_servers_conf`], [`render_sites_conf`])
//! and the one nginx launcher ([`NginxProc`]) of the demo, the benches, the
//! soak and the integration tests.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::Error;
use crate::kit::process::{Launch, Spawned};
use crate::wait::wait_until;

/// The shipped proxy-mode example (a complete `server` block for example.com).
pub const PROXY_CONF: &str = include_str!("../../../contrib/nginx/fleet-proxy-mode.conf");
/// The shipped direct-mode example (an `upstream` and a `server` block for example.com).
pub const DIRECT_CONF: &str = include_str!("../../../contrib/nginx/fleet-direct-mode.conf");
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
        let pass = |l: &str| {
            let directive = l.trim_start();
            if !directive.starts_with("fastcgi_pass ") {
                return format!("{l}\n");
            }
            let indent = &l[..l.len() - directive.len()];
            format!("{indent}fastcgi_pass {target};\n")
        };
        self.location = self.location.lines().map(pass).collect();
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
        let close = self.location.trim_end().rfind('}');
        let close = close.unwrap_or(self.location.len());
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

impl<'a> Server<'a> {
    pub fn new(port: u16, name: &'a str, root: &'a str, snippet: &'a Snippet) -> Server<'a> {
        Server {
            port,
            name,
            root,
            snippet,
        }
    }
}

/// Template the shipped example of `mode` for `site` whose runtime
/// directories live under `run_dir` (the `/run/docker-apps` of the example):
/// its `upstream` block (direct mode) and the `location` block of its
/// `server`, dedented, with `/run/docker-apps/example.com/` made
/// `<run_dir>/<site>/`, `example_com` (upstream name) the site with `.`/`-`
/// as `_`, and `example.com` the site. The demo, benches and soak wrap these in
/// a `server` of [`render_servers_conf`] (listen port, docroot); the README's
/// complete files are rendered whole by the integration tests. Pure: tested
/// below on the real files. An error says how a shipped snippet did not have
/// the shape the templating expects.
pub fn site_snippet(mode: Mode, site: &str, run_dir: &Path) -> Result<Snippet, Error> {
    let text = match mode {
        Mode::Proxy => PROXY_CONF,
        Mode::Direct => DIRECT_CONF,
    };
    let err = |what: &str| Error::failed(format!("contrib/nginx snippet for {mode:?} mode"), what);
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
        let dedent = |l: &&str| format!("{}\n", l.get(indent..).unwrap_or_else(|| l.trim_start()));
        Some(lines[from..=to].iter().map(dedent).collect())
    };
    let location = block("location ~").ok_or_else(|| err("no `location ~ … }` block"))?;
    let http = match mode {
        Mode::Proxy => {
            if !location.contains("fastcgi_pass unix:/run/docker-apps/example.com/vhost-waker.sock")
            {
                return Err(err("the location does not pass to the waker's socket"));
            }
            String::new()
        }
        Mode::Direct => {
            let upstream = block("upstream ").ok_or_else(|| err("no `upstream … }` block"))?;
            if !upstream.contains(" backup") {
                return Err(err("the upstream has no backup server"));
            }
            concrete(&upstream)
        }
    };
    Ok(Snippet {
        http,
        location: concrete(&location),
        workers: DEFAULT_WORKERS,
    })
}

/// A complete nginx.conf around a [`Snippet`]: pid, logs and temp paths in
/// `dir`, `listen 127.0.0.1:<port>`, `root /srv/www` (the docroot as php-fpm
/// sees it), `/` rewritten to `/index.php`, and `user <user>;` when given. The snippet's
/// `include fastcgi_params;` resolves next to the conf file: copy
/// [`FASTCGI_PARAMS`] there ([`NginxProc::start`] does).
pub fn render_nginx_conf(dir: &Path, port: u16, user: Option<&str>, snippet: &Snippet) -> String {
    let server = Server::new(port, "localhost", "/srv/www", snippet);
    render_servers_conf(dir, user, &[server])
}

/// [`render_nginx_conf`] with one `server {}` per [`Server`] in one nginx
/// (a bench's sides measured under the same settings). The snippets' `http`
/// parts go in once each (identical ones once: a setting every snippet
/// carries), and nginx gets the most workers and connections any asks for.
pub fn render_servers_conf(dir: &Path, user: Option<&str>, servers: &[Server<'_>]) -> String {
    // Blank lines stay empty, without trailing blanks.
    let indent = |s: &str, n: usize| -> String {
        s.lines()
            .map(|l| format!("{:w$}{l}\n", "", w = if l.is_empty() { 0 } else { n }))
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
    for s in servers {
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
            port = s.port,
            name = s.name,
            root = s.root,
            location = indent(&s.snippet.location, 8),
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
    let include = format!("    include {}/sites-enabled/*;\n", dir.display());
    main_conf(dir, user, DEFAULT_WORKERS, &include)
}

/// What every nginx.conf here has around its `http {}` content: the user,
/// `(processes, connections)` workers, and pid, logs and temp paths in `dir`
/// (never the host's).
fn main_conf(dir: &Path, user: Option<&str>, workers: (u32, u32), http: &str) -> String {
    let d = dir.display();
    let (processes, connections) = workers;
    let mut conf = user.map_or_else(String::new, |u| format!("user {u};\n"));
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
    let has = nix::unistd::User::from_name("www-data").is_ok_and(|u| u.is_some());
    (root && has).then(|| "www-data www-data".to_string())
}

/// Give a socket what `fleet-waker@.socket` gives it: group `www-data`
/// (when it exists), mode 0660, so nginx workers running as www-data reach it.
/// Only a socket: the runtime directory is the container's to write, so a
/// link there is refused, never followed.
pub fn share_socket_with_nginx(socket: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    // Opened without following, then checked and changed through that fd:
    // a swap of the path between check and change reaches nothing else.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
        .open(socket)?;
    if !file.metadata()?.file_type().is_socket() {
        let why = format!("{} is not a socket (never followed)", socket.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    }
    // The fd's own /proc link names this inode, whatever the path is now.
    let this = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let group = nix::unistd::Group::from_name("www-data").ok().flatten();
    if let Some(group) = &group {
        nix::unistd::chown(&this, None, Some(group.gid)).map_err(std::io::Error::from)?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o666 };
    std::fs::set_permissions(&this, std::fs::Permissions::from_mode(mode))
}

/// A running nginx (master and workers in their own process group), its
/// files in `dir`. Stopped on drop (SIGQUIT to the whole group, nginx's
/// graceful stop; SIGKILL after 5 s). The one nginx launcher of the demo,
/// bench, soak and the integration tests.
#[derive(Debug)]
pub struct NginxProc {
    child: Spawned,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl NginxProc {
    /// Create `dir`, write `<dir>/nginx.conf` (from [`render_nginx_conf`]) and
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
        crate::kit::mkdir(dir)?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, text).map_err(Error::io("write", &conf))?;
        let params = dir.join("fastcgi_params");
        std::fs::copy(FASTCGI_PARAMS, &params)
            .map_err(Error::io("copy fastcgi_params to", params))?;
        // A pid file left by an nginx killed in this dir must not count as
        // this one's (the wait below reads it).
        let _ = std::fs::remove_file(dir.join("nginx.pid"));
        // Its stderr (start-up errors) is kept next to its logs.
        let mut child = Launch::new(NGINX)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .log_to(dir.join("nginx.stderr"))
            // SIGQUIT: nginx's graceful stop.
            .stop_with(Signal::SIGQUIT, Duration::from_secs(5))
            .try_spawn()?;
        // nginx writes its pid file only once it has bound every listen
        // socket: a connect alone may reach another test's server on a port
        // that nginx is still retrying to bind.
        let up = wait_until(Duration::from_secs(10), || {
            child.try_status().is_some()
                || (dir.join("nginx.pid").exists()
                    && ports
                        .iter()
                        .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()))
        });
        let mut this = NginxProc {
            child,
            dir: dir.to_path_buf(),
            ports: ports.to_vec(),
        };
        let why = match this.child.try_status() {
            None if up => return Ok(this),
            None => format!("nginx did not accept on 127.0.0.1:{ports:?} within 10 s"),
            Some(status) => {
                let said = this.child.logs() + &this.error_log();
                format!("nginx exited ({status}): {said}")
            }
        };
        Err(Error::failed("start nginx", why))
    }

    /// The (first) port.
    pub fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or_default()
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Its access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_shared_and_a_link_to_one_is_refused_untouched() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = crate::kit::site::temp_dir("share-test");
        let sock = dir.path().join("real.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.path().join("vhost-waker.sock");
        std::os::unix::fs::symlink(&sock, &link).expect("symlink");
        let mode = || std::fs::metadata(&sock).expect("stat").permissions().mode() & 0o777;
        let err = share_socket_with_nginx(&link).expect_err("a link is refused");
        assert!(err.to_string().contains("never followed"), "{err}");
        assert_eq!(mode(), 0o600, "the link's target was changed");
        share_socket_with_nginx(&sock).expect("the socket itself");
        assert!([0o660, 0o666].contains(&mode()), "{:o}", mode());
    }

    #[track_caller]
    fn assert_starts(text: &str, prefix: &str) {
        assert!(text.starts_with(prefix), "{text}");
    }

    #[track_caller]
    fn assert_has(text: &str, part: &str) {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }

    #[test]
    fn proxy_snippet_is_the_shipped_location_made_concrete() {
        let s = site_snippet(Mode::Proxy, "a-b.example.org", Path::new("/tmp/x/run/"))
            .expect("proxy snippet");
        assert!(s.http.is_empty());
        assert_starts(&s.location, "location ~ [^/]\\.php(/|$) {\n");
        assert!(s.location.trim_end().ends_with('}'));
        assert_has(
            &s.location,
            "fastcgi_pass unix:/tmp/x/run/a-b.example.org/vhost-waker.sock;",
        );
        assert_has(&s.location, "include fastcgi_params;");
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
        assert_starts(&s.http, "upstream fleet_shop_example_org {\n");
        assert_has(
            &s.http,
            "server unix:/srv/run/shop.example.org/php-fpm.sock max_fails=0;",
        );
        assert_has(
            &s.http,
            "server unix:/srv/run/shop.example.org/vhost-waker.sock max_fails=0 backup;",
        );
        assert_starts(&s.location, "location ~ [^/]\\.php(/|$) {\n");
        assert_has(&s.location, "fastcgi_pass fleet_shop_example_org;");
        assert_has(&s.location, "fastcgi_next_upstream error;");
        assert_has(&s.location, "fastcgi_next_upstream_timeout 1s;");
        assert!(!s.location.lines().any(|l| l.starts_with('#')));
        assert_eq!(s.location.trim_end().lines().last(), Some("}"));
    }

    #[test]
    fn nginx_conf_wraps_the_snippet() {
        let s = site_snippet(Mode::Direct, "a.test", Path::new("/r")).expect("direct snippet");
        let conf = render_nginx_conf(Path::new("/d"), 8081, Some("www-data www-data"), &s);
        assert!(conf.starts_with("user www-data www-data;\n"));
        assert_has(&conf, "listen 127.0.0.1:8081;");
        assert_has(&conf, "pid /d/nginx.pid;");
        assert_has(&conf, "    upstream fleet_a_test {");
        assert_has(&conf, "        location ~ [^/]\\.php(/|$) {");
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
        assert_has(&s.location, "\n    fastcgi_pass pool;\n");
        assert!(!s.location.contains("vhost-waker.sock"));
        assert!(
            s.location
                .ends_with("    fastcgi_keep_conn on;\n    fastcgi_read_timeout 20s;\n}\n"),
            "{}",
            s.location
        );
        // Everything else is the shipped block.
        assert_has(&s.location, "include fastcgi_params;");
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
        let p = proxy.clone().with_http(hash).with_workers(2, 4096);
        let d = direct.with_http(hash);
        let server = |port, name, snippet| Server::new(port, name, "/srv/www/x", snippet);
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
        assert_has(&conf, "listen 127.0.0.1:2;");
        assert_has(&conf, "server_name two;");
        assert_has(&conf, "root /srv/www/x;");
        // The proxy snippets' identical http part once, the direct one's
        // (upstream and the same setting) once more.
        assert_eq!(conf.matches(hash).count(), 2, "{conf}");
        assert_eq!(conf.matches("upstream fleet_a_test {").count(), 1);
        assert_has(&conf, "worker_processes 2;\n");
        assert_has(&conf, "worker_rlimit_nofile 8192;\n");
        assert_has(&conf, "events { worker_connections 4096; }");
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        // One server on defaults: one worker, no descriptor limit.
        let one = render_nginx_conf(Path::new("/d"), 1, None, &proxy);
        assert_has(&one, "worker_processes 1;\n");
        assert_has(&one, "events { worker_connections 1024; }");
        assert!(!one.contains("worker_rlimit_nofile"));
    }

    #[test]
    fn sites_conf_includes_the_site_files() {
        let conf = render_sites_conf(Path::new("/d"), None);
        assert_has(&conf, "    include /d/sites-enabled/*;\n}\n");
        assert_has(&conf, "pid /d/nginx.pid;");
        assert!(!conf.contains("server"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
