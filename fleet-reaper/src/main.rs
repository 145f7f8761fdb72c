//! fleet-reaper: stop (or pause) the containers of idle on-demand sites.
//! Run every minute by `fleet-reaper.timer`. See `fleet_core::reaper`.

use std::path::PathBuf;
use std::process::ExitCode;

use fleet_core::docker::Engine;
use fleet_core::reaper::{self, Action, Config};
use fleet_core::startup::{self, Fatal, LayoutFlags};
use fleet_core::{exit, metrics};
use fleet_reaper::cli::{ActionArg, Cli, Format};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

fn main() -> ExitCode {
    startup::finish(env!("CARGO_BIN_NAME"), run())
}

fn run() -> Result<u8, Fatal> {
    let cli: Cli = startup::parse()?;
    let config = Config {
        layout: LayoutFlags {
            run_dir: cli.run_dir,
            state_dir: cli.state_dir,
            sites_dir: cli.sites_dir,
        }
        .layout(),
        action: match cli.action {
            ActionArg::Stop => Action::Stop,
            ActionArg::Pause => Action::Pause,
        },
        stop_timeout: cli.stop_timeout,
        jobs: cli.jobs,
        dry_run: cli.dry_run,
        heal: !cli.no_heal,
        memory_budget: cli.memory_budget,
        memory_min_idle: cli.memory_min_idle,
        status_path: Some(cli.status_path).filter(|p| !p.is_empty()),
        drain_timeout: cli.drain_timeout,
        stop_after: cli.stop_after,
        proxy_only: cli.proxy_only,
        ..Config::default()
    };
    let rt = startup::runtime()?;
    let shutdown =
        startup::shutdown_on_signals(&rt, "finishing the sites under way, starting no more")?;
    let output = Output {
        format: cli.format,
        changes_only: cli.changes_only,
    };
    rt.block_on(pass(config, output, cli.metrics_file, shutdown))
}

/// How the plan is printed.
struct Output {
    format: Format,
    /// Only the sites that are not quiet ([`reaper::Report::changes_only`]).
    changes_only: bool,
}

async fn pass(
    config: Config,
    output: Output,
    metrics_file: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<u8, Fatal> {
    let engine = Engine::from_env();
    let report = reaper::run(&engine, &config, &shutdown)
        .await
        .map_err(|e| Fatal::new(e.exit_code(), e))?;
    let shown = match output.changes_only {
        true => &report.changes_only(),
        false => &report,
    };
    let out = match output.format {
        // A quiet pass prints nothing, not even the header.
        Format::Table if shown.sites.is_empty() && output.changes_only => String::new(),
        Format::Table => reaper::render_table(shown),
        Format::Json => {
            let json = reaper::render_json(shown).map_err(|e| Fatal::new(exit::SOFTWARE, e))?;
            format!("{json:#}\n")
        }
    };
    print!("{out}");
    if report.interrupted {
        warn!("interrupted: sites not yet examined were left alone");
    }
    let code = report.exit_code();
    let Some(path) = metrics_file else {
        return Ok(code);
    };
    match metrics::write(&path, &metrics::render(&report)) {
        Ok(()) => Ok(code),
        Err(e) => {
            // The pass itself is done and reported; the numbers are stale,
            // which is an error of this run.
            error!(error = %exit::chain(&e), "metrics not written");
            Ok(code.max(exit::FAILURE))
        }
    }
}
