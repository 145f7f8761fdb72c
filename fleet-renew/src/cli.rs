//! fleet-renew's command line, shared by the binary and by `command()`
//! (man pages and shell completions in `cargo xtask dist`).

use std::path::PathBuf;

use clap::Parser;
use fleet_core::renew::{self, UnitTemplate};

// fleet-renew's arguments (no doc comment: it would become the about text).
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Bring fleet sites back to a clean, listening state",
    long_about = "For each site: stop the socket unit, the service unit and the container <site>.fpm, \
remove socket files nothing listens on (php-fpm's only once the container is stopped), make the \
runtime directory a size-limited tmpfs of its own, reset-failed both units, start the socket unit and \
verify that it is active and listening (from /proc/net/unix, without connecting, which would wake the \
site). With --mount-only, only the tmpfs step.",
    after_help = "Exit codes: 0 all sites healthy; 1 some site failed (others still renewed); \
64 usage or no valid site; 69 Docker unreachable; 71 the async runtime could not start."
)]
pub struct Args {
    /// Sites to renew (DNS-style names, e.g. example.com).
    #[arg(required = true, value_name = "SITE")]
    pub sites: Vec<String>,
    /// Print each step, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Socket unit name; {site} is replaced by the site name.
    #[arg(long, value_name = "TEMPLATE", default_value = renew::DEFAULT_SOCKET_UNIT)]
    pub socket_unit: UnitTemplate,
    /// Service unit name; {site} is replaced by the site name.
    #[arg(long, value_name = "TEMPLATE", default_value = renew::DEFAULT_SERVICE_UNIT)]
    pub service_unit: UnitTemplate,
    /// Root of the per-site runtime directories [env: FLEET_RUN_DIR] [default: /run/docker-apps]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Directory of the activity state files [env: FLEET_STATE_DIR] [default: /run/fleet]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only make each site's runtime directory a size-limited tmpfs of its
    /// own (what the socket unit runs before binding); no unit or container
    /// is touched. A directory something still uses is left alone.
    #[arg(long)]
    pub mount_only: bool,
    /// Size of a runtime directory's tmpfs (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = fleet_core::rundir::parse_size)]
    pub run_dir_size: u64,
    /// Inodes (files and sockets) of a runtime directory's tmpfs.
    #[arg(long, value_name = "N", default_value_t = fleet_core::rundir::DEFAULT_INODES)]
    pub run_dir_inodes: u64,
    /// Grace period for stopping the container.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_timeout: std::time::Duration,
}
