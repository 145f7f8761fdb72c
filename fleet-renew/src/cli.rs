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
remove socket files nothing listens on, reset-failed both units, start the socket unit and verify \
that it is active and listening (from /proc/net/unix, without connecting, which would wake the site).",
    after_help = "Exit codes: 0 all sites healthy; 1 some site failed (others still renewed); \
64 usage or no valid site; 69 Docker unreachable."
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
    /// Root of the per-site runtime directories.
    #[arg(long, value_name = "DIR", env = "FLEET_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Directory of the activity state files.
    #[arg(long, value_name = "DIR", env = "FLEET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Grace period for stopping the container.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_timeout: std::time::Duration,
}
