//! fleet-reaper: stop (or pause) the containers of idle on-demand sites.
//! Run every minute by `fleet-reaper.timer`. See `fleet_core::reaper`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet_core::docker::Engine;
use fleet_core::reaper::{self, Action, Config};
use fleet_core::site::Layout;
use fleet_core::{exit, logging};
use tokio_util::sync::CancellationToken;
use tracing::warn;

const EXIT_CODES: &str = "\
Exit codes:
  0   every site was handled
  1   some site had an error (bad conf file or name, missing container,
      unreadable state, failed stop); the other sites were still handled
  64  usage: bad flags, or the sites directory cannot be read
  69  the Docker engine cannot be reached
  75  interrupted (SIGTERM/SIGINT) before the pass finished

The plan goes to stdout, logs to stderr.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ActionArg {
    Stop,
    Pause,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Put idle on-demand sites to sleep: for every <site>.conf, stop (or pause)
/// <site>.fpm when the site showed no activity (waker connections, container
/// log output) within the timeout on line 1 of its conf file.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    /// Directory of <site>.conf files (the on-demand list) [env: FLEET_SITES_DIR] [default: /var/lib/docker/volumes/docker_sites-enabled/on-demand]
    #[arg(long, value_name = "DIR")]
    sites_dir: Option<PathBuf>,

    /// What to do with an idle container
    #[arg(long, value_enum, default_value = "stop")]
    action: ActionArg,

    /// Grace period of a stop before Docker kills (at most 100s)
    #[arg(long, default_value = "10s", value_name = "DUR", value_parser = parse_stop_timeout)]
    stop_timeout: Duration,

    /// Sites examined at once
    #[arg(long, default_value_t = reaper::DEFAULT_JOBS, value_name = "N", value_parser = parse_jobs)]
    jobs: usize,

    /// Decide and report, change nothing
    #[arg(long)]
    dry_run: bool,

    /// Output format of the plan
    #[arg(long, value_enum, default_value = "table")]
    format: Format,

    /// Root of the per-site runtime directories [env: FLEET_RUN_DIR] [default: /run/docker-apps]
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// Directory of the waker's activity state files [env: FLEET_STATE_DIR] [default: /run/fleet]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    logging::init();
    // Flags win over FLEET_* variables, which win over the defaults; an
    // empty variable counts as unset (as everywhere in fleet).
    let env = Layout::from_env();
    let config = Config {
        layout: Layout {
            run_dir: cli.run_dir.unwrap_or(env.run_dir),
            state_dir: cli.state_dir.unwrap_or(env.state_dir),
            sites_dir: cli.sites_dir.unwrap_or(env.sites_dir),
        },
        action: match cli.action {
            ActionArg::Stop => Action::Stop,
            ActionArg::Pause => Action::Pause,
        },
        stop_timeout: cli.stop_timeout,
        jobs: cli.jobs,
        dry_run: cli.dry_run,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-reaper: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OSERR);
        }
    };
    ExitCode::from(runtime.block_on(run(config, cli.format)))
}

async fn run(config: Config, format: Format) -> u8 {
    let shutdown = CancellationToken::new();
    let signals = match watch_signals(shutdown.clone()) {
        Ok(task) => task,
        Err(e) => {
            eprintln!("fleet-reaper: cannot install signal handlers: {e}");
            return exit::OSERR;
        }
    };
    let engine = Engine::from_env();
    let result = reaper::run(&engine, &config, &shutdown).await;
    signals.abort();
    match result {
        Ok(report) => {
            let out = match format {
                Format::Table => reaper::render_table(&report),
                Format::Json => format!("{:#}\n", reaper::render_json(&report)),
            };
            print!("{out}");
            if report.interrupted {
                warn!("interrupted: sites not yet examined were left alone");
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("fleet-reaper: {}", exit::chain(&e));
            e.exit_code()
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => warn!("SIGTERM: finishing the sites under way, starting no more"),
            _ = int.recv() => warn!("SIGINT: finishing the sites under way, starting no more"),
        }
        shutdown.cancel();
    }))
}
