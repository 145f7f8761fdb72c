//! Real nginx on a free 127.0.0.1 port in front of a FastCGI unix socket.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{NGINX, free_port, wait_until};

/// How to configure [`Nginx`].
#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// `worker_processes` (default 1).
    pub worker_processes: u32,
    /// A complete `upstream name { … }` block placed in `http {}`, if any.
    pub upstream: Option<String>,
    /// Target of `fastcgi_pass`: `unix:/path.sock` or an upstream name.
    pub fastcgi_pass: String,
    /// Extra directives inside the `location ~ \.php$` block, e.g.
    /// `fastcgi_keep_conn on; fastcgi_read_timeout 30s;`.
    pub location_extra: String,
    /// Extra directives in `http {}` (e.g. `keepalive` tuning).
    pub http_extra: String,
    /// The `user` directive (`"www-data www-data"`); by default `root root`
    /// when running as root, so workers reach root-owned 0755 sockets such
    /// as the one `systemd-socket-activate` creates. `None`: no directive.
    pub user: Option<String>,
}

fn default_user() -> Option<String> {
    nix::unistd::geteuid()
        .is_root()
        .then(|| "root root".to_string())
}

impl NginxConfig {
    /// `fastcgi_pass unix:<socket>;` with the standard params.
    pub fn for_socket(socket: &Path) -> NginxConfig {
        NginxConfig {
            worker_processes: 1,
            upstream: None,
            fastcgi_pass: format!("unix:{}", socket.display()),
            location_extra: String::new(),
            http_extra: String::new(),
            user: default_user(),
        }
    }

    /// Pass to upstream `name` defined by `upstream` (a whole `upstream name {…}`
    /// block, e.g. `server unix:…/php-fpm.sock; server unix:…/vhost-waker.sock backup; keepalive 8;`).
    pub fn for_upstream(name: &str, upstream: &str) -> NginxConfig {
        NginxConfig {
            worker_processes: 1,
            upstream: Some(upstream.to_string()),
            fastcgi_pass: name.to_string(),
            location_extra: String::new(),
            http_extra: String::new(),
            user: default_user(),
        }
    }

    /// The nginx.conf text for `dir` (pid, logs, temp paths) and `port`.
    pub fn render(&self, dir: &Path, port: u16) -> String {
        let d = dir.display();
        let mut conf = String::new();
        if let Some(user) = &self.user {
            let _ = writeln!(conf, "user {user};");
        }
        let _ = write!(
            conf,
            r#"worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi_temp;
    proxy_temp_path {d}/proxy_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    client_max_body_size 256m;
    {http_extra}
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root /srv/www;
        location ~ \.php$ {{
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param SCRIPT_FILENAME /srv/www$fastcgi_script_name;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param DOCUMENT_ROOT /srv/www;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param REDIRECT_STATUS 200;
            fastcgi_param HTTP_HOST $host;
            fastcgi_pass {pass};
            {location_extra}
        }}
    }}
}}
"#,
            workers = self.worker_processes,
            http_extra = self.http_extra,
            upstream = self.upstream.as_deref().unwrap_or(""),
            pass = self.fastcgi_pass,
            location_extra = self.location_extra,
        );
        conf
    }
}

/// A running nginx master (+ workers) in its own process group, with its own
/// prefix/pid/log/temp paths in a temp dir. Killed (group SIGKILL) on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    /// Every port it listens on ([`Nginx::start_site_files`]); `[port]` otherwise.
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx with `fastcgi_pass unix:<socket>;`.
    pub fn start(socket: &Path) -> Nginx {
        Self::start_with(&NginxConfig::for_socket(socket))
    }

    /// nginx with a custom config; waits until the port accepts.
    pub fn start_with(config: &NginxConfig) -> Nginx {
        Self::start_retrying("nginx", |dir| {
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config.render(dir, port)).expect("write nginx.conf");
            (conf, vec![port])
        })
    }

    /// nginx running whole site files, as `/etc/nginx/sites-enabled/*` would
    /// be: `render(ports)` gets `count` free loopback ports and returns the
    /// files' text (one `listen` port each, typically). Around them only
    /// what a host's `nginx.conf` provides: pid, logs and temp paths in a
    /// temp dir, `user` as [`xtask::demo::nginx_user`] (www-data when root,
    /// like Debian's), and `fastcgi_params` next to the config, where the
    /// files' `include fastcgi_params;` finds it.
    pub fn start_site_files(count: usize, render: impl Fn(&[u16]) -> Vec<String>) -> Nginx {
        Self::start_retrying("nginx with the site files", |dir| {
            let d = dir.display().to_string();
            let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
            let sites = dir.join("sites-enabled");
            std::fs::create_dir(&sites).expect("sites-enabled dir");
            for (i, text) in render(&ports).iter().enumerate() {
                std::fs::write(sites.join(format!("site{i}")), text).expect("write site file");
            }
            std::fs::copy(xtask::demo::FASTCGI_PARAMS, dir.join("fastcgi_params"))
                .expect("copy fastcgi_params");
            let user = xtask::demo::nginx_user()
                .map(|u| format!("user {u};\n"))
                .unwrap_or_default();
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                     events {{ worker_connections 1024; }}\nhttp {{\n    access_log {d}/access.log;\n    \
                     client_body_temp_path {d}/client_body;\n    fastcgi_temp_path {d}/fastcgi_temp;\n    \
                     proxy_temp_path {d}/proxy_temp;\n    uwsgi_temp_path {d}/uwsgi_temp;\n    \
                     scgi_temp_path {d}/scgi_temp;\n    include {d}/sites-enabled/*;\n}}\n"
                ),
            )
            .expect("write nginx.conf");
            (conf, ports)
        })
    }

    /// Starts nginx on the config `prepare` writes into a fresh temp dir
    /// (returning the config and the ports it listens on) and waits until
    /// every port accepts; a port taken meanwhile by someone else is retried
    /// with new ones, up to 5 times.
    fn start_retrying(what: &str, prepare: impl Fn(&Path) -> (PathBuf, Vec<u16>)) -> Nginx {
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let dir = super::temp_dir("nginx");
            let (conf, ports) = prepare(dir.path());
            let mut child = Command::new(NGINX)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(
                    std::fs::File::create(dir.path().join("startup.log"))
                        .expect("create startup log"),
                )
                .stderr(
                    std::fs::File::create(dir.path().join("startup.err"))
                        .expect("create startup err"),
                )
                .process_group(0)
                .spawn()
                .expect("spawn nginx");
            let mut exited = None;
            let up = wait_until(Duration::from_secs(10), || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                ports
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            });
            if up && exited.is_none() {
                return Nginx {
                    child,
                    port: ports[0],
                    ports,
                    dir,
                };
            }
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            last_error = format!(
                "status {exited:?}; error.log:\n{}\n{}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("startup.err")).unwrap_or_default()
            );
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("{what} did not start: {last_error}");
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every port it listens on.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Pid of the master process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its prefix/log directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Contents of its error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Contents of its access log.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
