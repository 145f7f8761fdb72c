//! fleet-reaper's command line, shared by the binary and by `command()`
//! (man pages and shell completions in `cargo xtask dist`).

// The doc comments below are --help text and man pages, where `<site>` is
// a placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet_core::reaper;

const EXIT_CODES: &str = "\
Exit codes:
  0   every site was handled
  1   some site had an error (bad conf file or name, missing container,
      unreadable state, failed stop, a socket unit not healed), the socket
      units could not be listed, or the metrics file could not be written;
      the other sites were still handled
  64  usage: bad flags, or the sites directory exists but cannot be read
      (a missing one is an empty list: exit 0, with a warning naming it)
  69  the Docker engine cannot be reached
  70  internal error (the plan could not be rendered as JSON: a bug)
  71  the async runtime or the signal handlers could not be set up
  75  interrupted (SIGTERM/SIGINT) before the pass finished

The plan goes to stdout, logs to stderr.";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Stop,
    Pause,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Put idle on-demand sites to sleep: for every <site>.conf, stop (or pause)
/// <site>.fpm when the site showed no activity (requests through the waker,
/// connections php-fpm accepted, container log output) within the timeout on
/// line 1 of its conf file; with tiered sleep, pause first and stop later.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Directory of <site>.conf files (the on-demand list) [env: FLEET_SITES_DIR] [default: /var/lib/docker/volumes/docker_sites-enabled/on-demand]
    #[arg(long, value_name = "DIR")]
    pub sites_dir: Option<PathBuf>,

    /// What to do with an idle container (see --help)
    ///
    /// stop (the default) frees the container's memory; a wake then starts
    /// php-fpm afresh. pause freezes it: it keeps its memory and wakes about
    /// ten times faster. Both work with either nginx layout: before acting
    /// the reaper moves php-fpm's socket aside (nginx in direct mode then
    /// falls back to the waker), waits until php-fpm has nothing in progress
    /// or queued, and only then stops or pauses. With --stop-after (or a
    /// second line in the conf file) a site is paused first and stopped
    /// later, whatever this says.
    #[arg(long, value_enum, default_value = "stop")]
    pub action: ActionArg,

    /// Tiered sleep: pause after the conf's timeout, stop once idle for DUR (see --help)
    ///
    /// For every site whose conf file has no line 2 of its own
    /// ("# Amount of time to stop the container after: 6h"). A paused site
    /// holds its memory and answers its next request in tens of
    /// milliseconds; a stopped one holds nothing and needs a cold start.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub stop_after: Option<Duration>,

    /// php-fpm's status page, pm.status_path of the pool ("" = never ask; see --help)
    ///
    /// The reaper reads it over php-fpm's socket (one FastCGI request, to
    /// running containers only) for php-fpm's own count of accepted
    /// connections, which sees requests that never pass the waker (nginx
    /// direct mode, stock pools that log nothing), and for the requests in
    /// progress and queued, which it waits for before acting. A running site
    /// without it is never put to sleep (verdict no-signal), unless
    /// --proxy-only.
    #[arg(long, default_value = fleet_core::fpm_status::DEFAULT_STATUS_PATH, value_name = "PATH")]
    pub status_path: String,

    /// nginx talks to every site only through the waker (proxy mode; see --help)
    ///
    /// Then a site without a status page can still be put to sleep: the
    /// waker's state (and the container's log) sees all its traffic. Never
    /// set this while any site is in direct mode.
    #[arg(long)]
    pub proxy_only: bool,

    /// Longest wait for php-fpm to finish what it serves before acting
    #[arg(long, default_value = "30s", value_name = "DUR", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Grace period of a stop before Docker kills (at most 100s)
    #[arg(long, default_value = "10s", value_name = "DUR", value_parser = parse_stop_timeout)]
    pub stop_timeout: Duration,

    /// Sites examined at once
    #[arg(long, default_value_t = reaper::DEFAULT_JOBS, value_name = "N", value_parser = parse_jobs)]
    pub jobs: usize,

    /// Decide and report, act on no container (php-fpm's counter record is still
    /// kept, so the next pass does not take this one's request for traffic)
    #[arg(long)]
    pub dry_run: bool,

    /// Output format of the plan
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// Print only the sites this pass stopped, paused, healed, skipped or could
    /// not examine (a pass where nothing happened prints nothing); the timer's
    /// unit uses it, so 300 sites do not fill the journal every minute
    #[arg(long)]
    pub changes_only: bool,

    /// Root of the per-site runtime directories [env: FLEET_RUN_DIR] [default: /run/docker-apps]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// Directory of the waker's activity state files [env: FLEET_STATE_DIR] [default: /run/fleet]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Do not heal failed or non-listening socket units (see --help)
    ///
    /// By default each pass also finds listed sites whose
    /// fleet-waker@<site>.socket is failed (trigger or start limit hit),
    /// inactive, or active without a listening socket and no waker running,
    /// and brings it back with fleet-renew's socket-side steps only
    /// (reset-failed, start, verify it listens): never the container, so no
    /// request is cut. A socket unit systemd has not loaded is reported, not
    /// started. Without systemd as the init system nothing is looked at.
    #[arg(long)]
    pub no_heal: bool,

    /// Stop the least recently active awake sites while their containers use more than SIZE (see --help)
    ///
    /// SIZE is bytes with an optional unit K, M, G, T (powers of 1024), e.g.
    /// 2G. After the idle sites are handled, the awake containers' memory is
    /// read from their cgroups (usage minus inactive file cache, as docker
    /// stats shows it); while the total is over SIZE, sites are stopped,
    /// least recently active first, never a busy one and never one active or
    /// started within --memory-min-idle. Each such stop is in the plan with
    /// its reason. Always a stop, also with --action pause (a paused
    /// container keeps its memory).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<u64>,

    /// The memory guard never stops a site active or started less than DUR ago
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = parse_duration)]
    pub memory_min_idle: Duration,

    /// Write Prometheus text-format metrics of each pass to PATH (see --help) [env: FLEET_METRICS_FILE]
    ///
    /// For node_exporter's textfile collector, e.g.
    /// /var/lib/prometheus/node-exporter/fleet.prom: a temp file in the same
    /// directory, then rename (atomic). A symlink at PATH is refused.
    #[arg(long, value_name = "PATH", env = "FLEET_METRICS_FILE", hide_env = true)]
    pub metrics_file: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    fleet_core::memory::parse_size(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A timeout as the conf file's: not zero, at most 30 days.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > fleet_core::conf::MAX_TIMEOUT {
        return Err("expected more than zero and at most 30 days".to_owned());
    }
    Ok(d)
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("expected a number from 1 to 1024".to_owned()),
    }
}

fn parse_stop_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > reaper::MAX_STOP_TIMEOUT {
        return Err(format!(
            "at most {} (Docker's stop request must answer within the API timeout)",
            humantime::format_duration(reaper::MAX_STOP_TIMEOUT)
        ));
    }
    Ok(d)
}
