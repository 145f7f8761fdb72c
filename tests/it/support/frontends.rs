//! FastCGI front ends other than nginx, each run for real in front of a
//! unix socket (the waker's or php-fpm's): Apache 2.4 `mod_proxy_fcgi`
//! ([`Apache`]), lighttpd 1.4 `mod_fastcgi` ([`Lighttpd`]) and libfcgi's
//! `cgi-fcgi` ([`cgi_fcgi`]). The web servers listen on a free loopback port
//! and are killed (process group) on drop, like [`super::Nginx`].

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use xtask::kit::nginx::NginxProc;

use super::nginx::retry_on_taken_port;
use super::{FcgiResponse, Launch, Spawned, fastcgi, free_port, temp_dir, wait_until};

/// Path of Apache's binary (Debian `apache2`).
pub const APACHE: &str = "/usr/sbin/apache2";
/// Apache's module directory.
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// Path of lighttpd (Debian `lighttpd`).
pub const LIGHTTPD: &str = "/usr/sbin/lighttpd";
/// Path of `cgi-fcgi` (Debian `libfcgi-bin`).
pub const CGI_FCGI: &str = "/usr/bin/cgi-fcgi";

/// The docroot as php-fpm in the test container sees it.
const DOCROOT: &str = xtask::image::CONTAINER_DOCROOT;

/// A web server process on a loopback port, with its config and logs in a
/// temp dir.
#[derive(Debug)]
pub struct WebServer {
    proc: Spawned,
    port: u16,
    /// Its config and logs, removed on drop.
    dir: tempfile::TempDir,
}

impl WebServer {
    /// Starts `bin <flags> -f <dir>/<conf>` with the config `render(dir,
    /// port)` written there; retries on a port another process took meanwhile.
    fn start(
        what: &str,
        bin: &str,
        conf: &str,
        flags: &[&str],
        render: impl Fn(&Path, u16) -> String,
    ) -> WebServer {
        retry_on_taken_port(what, || {
            let dir = temp_dir(what);
            let port = free_port();
            let conf_path = dir.path().join(conf);
            std::fs::write(&conf_path, render(dir.path(), port)).expect("write config");
            let mut proc = Launch::new(bin)
                .args(flags)
                .arg("-f")
                .arg(&conf_path)
                .spawn();
            let up = wait_until(Duration::from_secs(10), || {
                proc.try_status().is_some() || TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            let mut server = WebServer { proc, port, dir };
            if up && server.proc.try_status().is_none() {
                return Ok(server);
            }
            Err(server.error_log())
        })
    }
}

/// A web server in front of a socket, nginx or a [`WebServer`].
pub trait FrontEnd {
    /// The (first) loopback port it listens on.
    fn port(&self) -> u16;

    /// Its error log (and whatever it printed).
    fn error_log(&self) -> String;
}

impl FrontEnd for WebServer {
    fn port(&self) -> u16 {
        self.port
    }

    fn error_log(&self) -> String {
        let logged = std::fs::read_to_string(self.dir.path().join("error.log"));
        format!("{}\n{}", logged.unwrap_or_default(), self.proc.logs())
    }
}

impl FrontEnd for super::Nginx {
    fn port(&self) -> u16 {
        NginxProc::port(self)
    }

    fn error_log(&self) -> String {
        NginxProc::error_log(self)
    }
}

/// Apache 2.4 (event MPM, one child process so that its connection pool is
/// one pool) passing `*.php` to `socket` with `mod_proxy_fcgi`;
/// `enablereuse=on` keeps connections to the socket open between requests
/// (and makes Apache send `FCGI_KEEP_CONN`).
pub fn apache(socket: &Path, reuse: bool) -> WebServer {
    WebServer::start(
        "apache",
        APACHE,
        "apache2.conf",
        &["-DFOREGROUND"],
        |dir, port| {
            let d = dir.display();
            let m = APACHE_MODULES;
            let reuse = if reuse { " enablereuse=on" } else { "" };
            format!(
                "ServerRoot {d}\n\
                 ServerName localhost\n\
                 Listen 127.0.0.1:{port}\n\
                 PidFile {d}/apache2.pid\n\
                 DefaultRuntimeDir {d}\n\
                 ErrorLog {d}/error.log\n\
                 LogLevel warn\n\
                 LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
                 LoadModule authz_core_module {m}/mod_authz_core.so\n\
                 LoadModule proxy_module {m}/mod_proxy.so\n\
                 LoadModule proxy_fcgi_module {m}/mod_proxy_fcgi.so\n\
                 User www-data\n\
                 Group www-data\n\
                 StartServers 1\n\
                 ServerLimit 1\n\
                 ThreadsPerChild 16\n\
                 MinSpareThreads 1\n\
                 MaxSpareThreads 16\n\
                 MaxRequestWorkers 16\n\
                 Timeout 30\n\
                 ProxyPassMatch \"^/(.*\\.php)$\" \"unix:{sock}|fcgi://localhost{DOCROOT}/$1\"{reuse}\n",
                sock = socket.display(),
            )
        },
    )
}

/// lighttpd 1.4 passing `*.php` to `socket` with its built-in `mod_fastcgi`
/// (one connection per request, `FCGI_KEEP_CONN` clear). `docroot` is the
/// host side of the site's docroot.
pub fn lighttpd(socket: &Path, docroot: &Path) -> WebServer {
    WebServer::start(
        "lighttpd",
        LIGHTTPD,
        "lighttpd.conf",
        &["-D"],
        // Its error log goes to stderr (captured): it opens a log file only
        // after dropping to www-data.
        |_, port| {
            format!(
                "server.modules = (\"mod_fastcgi\")\n\
                 server.bind = \"127.0.0.1\"\n\
                 server.port = {port}\n\
                 server.document-root = \"{root}\"\n\
                 server.username = \"www-data\"\n\
                 server.groupname = \"www-data\"\n\
                 server.max-request-size = 65536\n\
                 fastcgi.server = ( \".php\" => ( ( \"socket\" => \"{sock}\", \
                 \"check-local\" => \"disable\", \"docroot\" => \"{DOCROOT}\" ) ) )\n",
                root = docroot.display(),
                sock = socket.display(),
            )
        },
    )
}

/// What `cgi-fcgi` did for one request.
#[derive(Debug)]
pub struct CgiFcgiRun {
    /// Its exit code (`None`: killed by a signal). 32 is `EPIPE`.
    pub code: Option<i32>,
    /// The CGI response it printed, parsed.
    pub response: std::io::Result<FcgiResponse>,
    pub stderr: String,
}

/// One request with libfcgi's `cgi-fcgi -bind -connect <socket>`: it sends
/// its whole environment as the FastCGI params (so it gets a clean one
/// here) and its stdin as the body, and prints the CGI response.
pub fn cgi_fcgi(socket: &Path, method: &str, script: &str, body: &[u8]) -> CgiFcgiRun {
    let cmd = xtask::error::Cmd::new(CGI_FCGI)
        .args(["-bind", "-connect"])
        .arg(socket)
        .env_clear()
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", method)
        .env("SCRIPT_FILENAME", format!("{DOCROOT}/{script}"))
        .env("SCRIPT_NAME", format!("/{script}"))
        .env("REQUEST_URI", format!("/{script}"))
        .env("QUERY_STRING", "")
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("CONTENT_TYPE", "application/octet-stream")
        .stdin(body);
    let out = xtask::error::or_panic(cmd.output());
    CgiFcgiRun {
        code: out.status.code(),
        response: fastcgi::parse_cgi(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
