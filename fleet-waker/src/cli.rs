//! fleet-waker's command line, shared by the binary and by `command()`
//! (man pages and shell completions in `cargo xtask dist`).

// The doc comments below are --help text and man pages, where `<SITE>` is
// clap's placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

const AFTER_HELP: &str = "\
Environment: LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES (socket activation), NOTIFY_SOCKET,
DOCKER_HOST, FLEET_RUN_DIR, FLEET_STATE_DIR, FLEET_WAKER_PEER_CHECK, FLEET_WAKER_EXIT_IDLE_TIME,
FLEET_MAX_CONCURRENT_WAKES, FLEET_MAX_QUEUE_WAIT, RUST_LOG.

Exit codes:
  0   stopped by SIGTERM/SIGINT (open connections get --shutdown-grace to
      finish), or idle for --exit-idle-time
  64  bad command line or site name (also: a socket path longer than a unix
      socket address holds, 107 bytes); no socket passed and no --listen
  70  internal error (a bug)
  71  an operating-system call failed (runtime, signal handlers, binding the
      socket)";

/// Socket-activated wake-and-proxy for one site's php-fpm container.
#[derive(Debug, Parser)]
#[command(name = "fleet-waker", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// The site (a DNS-style name, e.g. example.com).
    pub site: String,
    /// Container to wake [default: <SITE>.fpm].
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// php-fpm's socket [default: <run dir>/<SITE>/php-fpm.sock].
    #[arg(long, value_name = "PATH")]
    pub upstream: Option<PathBuf>,
    /// Bind this unix socket (mode 0660) instead of taking the one systemd passed.
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// How long a wake may take until php-fpm accepts (500ms, 30s, 2m).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    /// Connections served at once; beyond, they wait in the kernel backlog.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections_max: u32,
    /// Exit 0 after this long with no connection [default: never; the
    /// shipped unit sets 5min]. Under socket activation systemd keeps the
    /// socket, and the next connection starts a new waker.
    #[arg(long, value_name = "DUR", env = "FLEET_WAKER_EXIT_IDLE_TIME", value_parser = humantime::parse_duration)]
    pub exit_idle_time: Option<Duration>,
    /// Directory of activity state files [default: /run/fleet, or FLEET_STATE_DIR].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Root of per-site runtime directories [default: /run/docker-apps, or FLEET_RUN_DIR].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// How php-fpm's listener is checked before a byte is relayed: `cgroup`
    /// (it must be in the site's container) or `socket` (only: a socket, no
    /// symlink, not the waker's own; for a waker in a PID namespace that
    /// cannot see the container's processes).
    #[arg(
        long,
        value_name = "HOW",
        env = "FLEET_WAKER_PEER_CHECK",
        default_value = "cgroup"
    )]
    pub peer_check: fleet_core::waker::PeerCheck,
    /// Container starts at once on this host, shared by every waker through
    /// slot files in the state directory [default: the CPU count, at least
    /// 2; 0: no limit].
    #[arg(long, value_name = "K", env = "FLEET_MAX_CONCURRENT_WAKES")]
    pub max_concurrent_wakes: Option<usize>,
    /// The longest a request waits for a wake slot; a queue expected to take
    /// longer is answered at once with a FastCGI 503 and Retry-After. Keep
    /// it below the web server's read timeout (nginx: 60s).
    #[arg(long, value_name = "DUR", env = "FLEET_MAX_QUEUE_WAIT", default_value = "45s", value_parser = humantime::parse_duration)]
    pub max_queue_wait: Duration,
    /// The longest a start keeps its wake slot while php-fpm boots; a
    /// php-fpm that takes longer (or never accepts) boots outside the
    /// limit. The time held is recorded either way: the queue waits that long.
    #[arg(long, value_name = "DUR", env = "FLEET_SLOT_HOLD_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub slot_hold_max: Duration,
    /// How long open connections may finish after SIGTERM.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}
