//! Test support: real components for integration tests.
//!
//! Everything here drives the real thing: the Docker engine (through the
//! `docker` CLI, argv only), php-fpm in the `fleet-php-fpm` image, nginx,
//! `systemd-socket-activate` and `systemd-socket-proxyd`.
//!
//! * [`require!`] — skip (or, under `CI=true`, fail loudly) when a component is missing.
//! * [`TestSite`] — a site with its own temp [`Layout`](fleet_core::Layout) and a `<site>.fpm` container.
//! * [`fastcgi::request`] — one FastCGI request straight to a unix socket.
//! * [`Nginx`] — real nginx on a free loopback port in front of a socket.
//! * [`Stack`] — a site, its socket-activated waker and nginx with a shipped `contrib/nginx` snippet.
//! * [`frontends`] — Apache `mod_proxy_fcgi`, lighttpd `mod_fastcgi` and `cgi-fcgi` in front of a socket.
//! * [`http::get`] / [`http::post`] — a tiny HTTP/1.1 client.
//! * [`Launch`] → [`SocketActivated`] / [`Spawned`] — run a binary under real socket activation or directly.
//! * [`reaper`] — this build's fleet-reaper through the kit's runner, failures as panics.
//! * [`nsystemd::NsSystemd`] — a real systemd booted as PID 1 in private PID and mount namespaces.
//! * [`wait_until`], [`free_port`], [`bin`], [`docker`], [`docker_events`], [`count_docker_events`].

pub mod assert;
pub mod docker_proxy;
pub mod frontends;
pub mod http;
pub mod nginx;
pub mod nsystemd;
pub mod reaper;
pub mod site;
pub mod stack;
pub mod wake;

pub use http::HttpResponse;
pub use nginx::Nginx;
pub use site::{SiteExt, SiteOptions, TestSite};
pub use stack::Stack;
pub use xtask::kit::fastcgi::{self, FcgiRequest, FcgiResponse};
/// The launcher is the kit's, shared with the benches, soak and demo.
pub use xtask::kit::process::{self, Launch, SocketActivated, Spawned};

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_core::fpm_status::{self, FpmStatus, StatusError};
use xtask::deps::{Prerequisite, need};

/// A real component a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// A working Docker engine (`docker info` succeeds).
    Docker,
    /// The host's php-fpm (`/usr/sbin/php-fpm8.2`), from which the image is built.
    PhpFpm,
    /// nginx (`/usr/sbin/nginx`).
    Nginx,
    /// `systemd-socket-activate` on `PATH`.
    SocketActivate,
    /// `/lib/systemd/systemd-socket-proxyd`.
    SocketProxyd,
    /// Running as root (euid 0).
    Root,
    /// systemd itself (`/lib/systemd/systemd`) plus `unshare`, `nsenter` and `findmnt`,
    /// to boot it as PID 1 in private namespaces ([`nsystemd`]).
    Systemd,
    /// Apache 2.4 with `mod_proxy_fcgi` ([`frontends::apache`]).
    Apache,
    /// lighttpd 1.4 ([`frontends::lighttpd`]).
    Lighttpd,
    /// libfcgi's `cgi-fcgi` ([`frontends::cgi_fcgi`]).
    CgiFcgi,
    /// The `wrk` HTTP load generator on `PATH` (LuaJIT scripting).
    Wrk,
    /// `dpkg-deb`, to build and read the package.
    DpkgDeb,
}

/// Path of systemd-socket-proxyd.
pub const SOCKET_PROXYD: &str = "/lib/systemd/systemd-socket-proxyd";

impl Component {
    /// `Ok(())` when present, else why not and how to get it (the kit's
    /// [`Prerequisite`] check where the demo needs the same).
    pub fn check(self) -> Result<(), String> {
        match self {
            Component::Docker => Prerequisite::Docker.check(),
            Component::PhpFpm => Prerequisite::PhpFpm.check(),
            Component::Nginx => Prerequisite::Nginx.check(),
            Component::SocketActivate => Prerequisite::SocketActivate.check(),
            Component::Root => Prerequisite::Root.check(),
            Component::SocketProxyd => need(&[SOCKET_PROXYD], &[], "systemd"),
            Component::Systemd => need(&["/lib/systemd/systemd"], &[], "systemd")
                .and_then(|()| need(&[], &["unshare", "nsenter", "findmnt"], "util-linux")),
            Component::Apache => need(
                &[
                    frontends::APACHE,
                    &format!("{}/mod_proxy_fcgi.so", frontends::APACHE_MODULES),
                ],
                &[],
                "apache2",
            ),
            Component::Lighttpd => need(&[frontends::LIGHTTPD], &[], "lighttpd"),
            Component::CgiFcgi => need(&[frontends::CGI_FCGI], &[], "libfcgi-bin"),
            Component::Wrk => need(&[], &["wrk"], "wrk"),
            Component::DpkgDeb => need(&["/usr/bin/dpkg-deb"], &[], "dpkg"),
        }
    }
}

pub use xtask::kit::process::find_in_path;

/// True when running under CI (`CI=true`): missing components are failures.
pub use xtask::kit::in_ci;

/// Check `components`. All present → `true`. Something missing: under
/// `CI=true` panic with a loud message naming it and how to install it;
/// otherwise print `SKIP <test>: <reason>` to stderr and return `false`.
/// Use through [`require!`].
pub fn require_all(test: &str, components: &[Component]) -> bool {
    let missing: Vec<String> = components
        .iter()
        .filter_map(|c| c.check().err().map(|why| format!("{c:?}: {why}")))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join("; ");
    if in_ci() {
        panic!("\n\n*** CI=true and a required component is missing for {test}: {reason} ***\n\n");
    }
    // Straight to fd 2, not `eprintln!`: libtest captures the macros' output
    // of passing tests, and a skip must be visible in the CI log.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {reason}");
    false
}

/// Print a line to the real stderr even when libtest captures output (so it
/// shows in the CI log for passing tests): `[<test>] <msg>`.
pub fn note(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "[{}] {msg}", test_name());
}

/// `note!("… {x} …")`: [`note`] of a `format!`.
macro_rules! note_format {
    ($($arg:tt)*) => {
        $crate::support::note(&format!($($arg)*))
    };
}
// Under the function's name, in the macro namespace only.
pub(crate) use note_format as note;

/// The running test's name (libtest names the thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// `require!(Docker, Nginx)`: return early from the test (after printing
/// `SKIP …`) when a component is missing; under `CI=true` panic instead.
macro_rules! require {
    ($($component:ident),+ $(,)?) => {
        if !$crate::support::require_all(
            &$crate::support::test_name(),
            &[$($crate::support::Component::$component),+],
        ) {
            return;
        }
    };
}
pub(crate) use require;

/// Path of a workspace binary (`fleet-waker`, `fleet-reaper`, `fleet-renew`)
/// in the target dir of this test binary (the kit's
/// [`xtask::kit::profile_dir`]). Panics if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = xtask::error::or_panic(xtask::kit::profile_dir()).join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace` first (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Poll `cond` until it is true or `timeout` passes (xtask's one polling
/// loop, backing off from 1 ms to 20 ms). Returns whether it became true.
pub use xtask::wait::wait_until;

/// A free TCP port on 127.0.0.1 (bound then released; racy by nature, so
/// starters like [`Nginx`] retry on a bind failure).
pub fn free_port() -> u16 {
    xtask::error::or_panic(xtask::kit::free_port())
}

/// Temp dirs `/tmp/fleet-it-<pid>-<kind>-XXXXXX` (the kit's, which
/// [`site::reap_leftovers`] sweeps when their process is gone).
pub use xtask::kit::site::{TEMP_PREFIX, temp_dir};

/// A connection to `socket` whose reads give up after `timeout`.
pub fn connect_within(socket: &Path, timeout: Duration) -> UnixStream {
    let c = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    c.set_read_timeout(Some(timeout)).expect("read timeout");
    c
}

/// Connects to `socket`, sends `bytes` (a write error is the peer's
/// answer too) and reads until it closes or `timeout` passes between two
/// reads: what came back.
pub fn exchange(socket: &Path, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut c = connect_within(socket, timeout);
    let _ = c.write_all(bytes);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    got
}

/// A temp dir the test mounts on or below: everything mounted there is
/// unmounted on drop, before the dir is removed.
pub struct MountedDir(pub tempfile::TempDir);

impl Drop for MountedDir {
    fn drop(&mut self) {
        site::umount_under(self.0.path());
    }
}

/// Run `docker <args>` (argv, no shell) and return its output, whatever the status.
pub fn docker(args: &[&str]) -> Output {
    xtask::error::or_panic(xtask::error::Cmd::new("docker").args(args).output())
}

/// Run `program <args>` (argv, no shell), panic with its stderr unless it
/// succeeds; return stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    xtask::error::or_panic(xtask::error::run(program, args))
}

/// [`run_ok`] of `docker <args>`.
pub fn docker_ok(args: &[&str]) -> String {
    run_ok("docker", args)
}

/// The names of the containers, running or not, that docker's `filter` matches.
pub fn containers(filter: &str) -> String {
    docker_ok(&["ps", "-a", "--filter", filter, "--format", "{{.Names}}"])
}

fn docker_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("time after 1970");
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Docker events between `since` and `until`, one JSON object per line,
/// with `filters` such as `container=<name>`, `event=start`, `type=container`.
pub fn docker_events(since: SystemTime, until: SystemTime, filters: &[&str]) -> Vec<String> {
    let (since, until) = (docker_time(since), docker_time(until));
    let mut args = vec![
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--format",
        "{{json .}}",
    ];
    args.extend(filters.iter().flat_map(|f| ["--filter", f]));
    docker_ok(&args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// How many `event` events (e.g. `start`, `unpause`, `die`) container
/// `container` had between `since` and `until`.
pub fn count_docker_events(
    container: &str,
    event: &str,
    since: SystemTime,
    until: SystemTime,
) -> usize {
    let c = format!("container={container}");
    let e = format!("event={event}");
    docker_events(since, until, &["type=container", &c, &e]).len()
}

/// php-fpm's status page (`/status`) at `socket` within `timeout`.
pub fn query_within(socket: &Path, timeout: Duration) -> Result<FpmStatus, StatusError> {
    query_at(socket, fpm_status::DEFAULT_STATUS_PATH, timeout)
}

/// `fpm_status::query` of `path` at `socket` within `timeout`.
pub fn query_at(socket: &Path, path: &str, timeout: Duration) -> Result<FpmStatus, StatusError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fpm_status::query(socket, path, timeout))
}

/// A failure message made only when it is shown (`{}`), e.g. one that
/// reads a process's log at that moment.
pub struct Lazy<F>(pub F);

impl<F: Fn() -> String> std::fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}
