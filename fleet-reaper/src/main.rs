//! fleet-reaper: stop (or pause) the containers of idle on-demand sites.
//! Run every minute by `fleet-reaper.timer`. See `fleet_core::reaper`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fleet_core::docker::Engine;
use fleet_core::reaper::{self, Action, Config};
use fleet_core::site::Layout;
use fleet_core::{exit, logging, metrics};
use fleet_reaper::cli::{ActionArg, Cli, Format};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

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
        heal: !cli.no_heal,
        memory_budget: cli.memory_budget,
        memory_min_idle: cli.memory_min_idle,
        status_path: Some(cli.status_path).filter(|p| !p.is_empty()),
        drain_timeout: cli.drain_timeout,
        stop_after: cli.stop_after,
        proxy_only: cli.proxy_only,
        ..Config::default()
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
    ExitCode::from(runtime.block_on(run(config, cli.format, cli.metrics_file)))
}

async fn run(config: Config, format: Format, metrics_file: Option<PathBuf>) -> u8 {
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
            let code = report.exit_code();
            match metrics_file {
                Some(path) => match metrics::write(&path, &metrics::render(&report)) {
                    Ok(()) => code,
                    Err(e) => {
                        // The pass itself is done and reported; the numbers
                        // are stale, which is an error of this run.
                        error!(error = %exit::chain(&e), "metrics not written");
                        code.max(exit::FAILURE)
                    }
                },
                None => code,
            }
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
