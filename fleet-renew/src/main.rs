//! fleet-renew: bring sites whose socket unit, service and container disagree
//! back to a clean, listening state. Replaces `renew-fpm-socket.sh`.
//! Exit codes: see `--help` (`cli.rs`).

use std::process::ExitCode;

use fleet_core::Site;
use fleet_core::exit;
use fleet_core::renew::{self, Config, Outcome, StepReport};
use fleet_core::startup::{self, Fatal, LayoutFlags};
use fleet_renew::cli::Args;

fn main() -> ExitCode {
    startup::finish(env!("CARGO_BIN_NAME"), start())
}

fn start() -> Result<u8, Fatal> {
    let args: Args = startup::parse()?;
    // No shutdown token: SIGTERM and SIGINT keep their default and end a
    // renew at once, between or within steps, as before.
    let rt = startup::runtime()?;
    Ok(rt.block_on(run(args)))
}

async fn run(args: Args) -> u8 {
    let layout = LayoutFlags {
        run_dir: args.run_dir,
        state_dir: args.state_dir,
        sites_dir: None,
    }
    .layout();
    let mut cfg = Config::new(layout);
    cfg.socket_unit = args.socket_unit;
    cfg.service_unit = args.service_unit;
    cfg.dry_run = args.dry_run;
    cfg.stop_grace = args.stop_timeout;
    cfg.limits = fleet_core::rundir::Limits {
        size: args.run_dir_size,
        inodes: args.run_dir_inodes,
    };
    let engine = fleet_core::docker::Engine::from_env();

    let mut invalid = 0usize;
    let mut failed = 0usize;
    let mut unreachable = 0usize;
    let total = args.sites.len();
    for name in &args.sites {
        let site = match Site::new(name) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fleet-renew: {name:?}: {e}; skipped");
                println!("{name}\tFAILED\tinvalid site name: {e}");
                invalid += 1;
                continue;
            }
        };
        if let Err(e) = cfg.layout.check_socket_paths(&site) {
            eprintln!("fleet-renew: {e}; skipped");
            println!("{name}\tFAILED\t{e}");
            invalid += 1;
            continue;
        }
        if args.mount_only {
            let step = renew::Step::PrepareRunDir(cfg.layout.site_dir(&site));
            if cfg.dry_run {
                println!("{site}\t{step}\twould run (dry run)");
                continue;
            }
            match renew::prepare_run_dir(&cfg, &site) {
                Ok(text) => println!("{site}\t{step}\tok: {text}"),
                Err(e) => {
                    println!("{site}\tFAILED\t{}", exit::chain(&e));
                    failed += 1;
                }
            }
            continue;
        }
        let report = renew::renew_site(&cfg, &engine, &site, print_step).await;
        let verdict = if cfg.dry_run {
            "DRY-RUN"
        } else if report.healthy() {
            "HEALTHY"
        } else {
            failed += 1;
            if report.steps.iter().any(|s| {
                matches!(&s.outcome, Outcome::Failed(renew::RenewError::Docker(d)) if d.is_unreachable())
            }) {
                unreachable += 1;
            }
            "FAILED"
        };
        println!("{site}\t{verdict}");
    }
    if invalid == total {
        exit::USAGE
    } else if unreachable > 0 && unreachable + invalid == total {
        exit::UNAVAILABLE
    } else if invalid > 0 || failed > 0 {
        exit::FAILURE
    } else {
        exit::OK
    }
}

fn print_step(site: &Site, r: &StepReport) {
    match &r.outcome {
        Outcome::Done(text) => println!("{site}\t{}\tok: {text}", r.step),
        Outcome::DryRun => println!("{site}\t{}\twould run (dry run)", r.step),
        Outcome::Skipped(why) => println!("{site}\t{}\tskipped: {why}", r.step),
        Outcome::Failed(e) => println!("{site}\t{}\tFAILED: {}", r.step, exit::chain(e)),
    }
}
