//! fleet-waker: socket-activated wake-and-proxy for one site.
//!
//! Takes the listening socket systemd passes (or binds `--listen`), connects
//! each connection to php-fpm's socket, starting or unpausing the site's
//! container first when php-fpm is not there, and proxies. Exit codes: see
//! `--help` (`cli.rs`).

use std::process::ExitCode;
use std::sync::Arc;

use fleet_core::Site;
use fleet_core::exit;
use fleet_core::listen::{self, ListenError};
use fleet_core::notify::Notifier;
use fleet_core::startup::{self, Fatal, LayoutFlags};
use fleet_core::waker::{self, Config};
use fleet_waker::cli::Args;

fn main() -> ExitCode {
    startup::finish(env!("CARGO_BIN_NAME"), run())
}

fn run() -> Result<u8, Fatal> {
    let args: Args = startup::parse()?;
    let site = Site::new(&args.site).map_err(Fatal::usage)?;
    let layout = LayoutFlags {
        run_dir: args.run_dir,
        state_dir: args.state_dir,
        sites_dir: None,
    }
    .layout();
    layout.check_socket_paths(&site).map_err(Fatal::usage)?;
    // The socket first, while the process has one thread.
    let listener = match &args.listen {
        Some(path) => listen::bind_listener(path, 0o660),
        // SAFETY: no runtime and no other thread exists yet (logging spawns
        // none), and nothing else in this process took fd 3.
        None => unsafe { listen::take_listener() },
    }
    .map_err(|e| match e {
        ListenError::Bind { .. } | ListenError::Inspect { .. } => Fatal::new(exit::OSERR, e),
        _ => Fatal::usage(e),
    })?;
    let (connections_max, nofile) = waker::fit_connections(args.connections_max as usize);
    if connections_max < args.connections_max as usize {
        tracing::warn!(
            site = %site,
            wanted = args.connections_max,
            connections_max,
            nofile,
            "--connections-max does not fit the open-file limit (2 per connection); raise LimitNOFILE="
        );
    }
    let cfg = Config {
        container: args.container.unwrap_or_else(|| site.container()),
        upstream: args.upstream.unwrap_or_else(|| layout.fpm_socket(&site)),
        start_timeout: args.start_timeout,
        slot_hold_max: args.slot_hold_max,
        connections_max,
        exit_idle_time: args.exit_idle_time,
        state_file: layout.state_file(&site),
        lock_file: layout.lock_file(&site),
        shutdown_grace: args.shutdown_grace,
        engine: Arc::new(fleet_core::docker::Engine::from_env()),
        notifier: Notifier::from_env(),
        peer_check: args.peer_check,
        admission: match args
            .max_concurrent_wakes
            .unwrap_or_else(fleet_core::admission::default_slots)
        {
            0 => None,
            k => Some(fleet_core::admission::Admission::new(
                &layout.state_dir,
                k,
                args.max_queue_wait,
            )),
        },
        site,
    };
    let rt = startup::runtime()?;
    let shutdown = startup::shutdown_on_signals(&rt, "accepting no more connections")?;
    let site = cfg.site.clone();
    let result = rt.block_on(async move {
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|e| Fatal::new(exit::OSERR, e))?;
        // `run` refuses only a configuration built wrong above: a bug.
        waker::run(listener, cfg, shutdown)
            .await
            .map_err(|e| Fatal::new(exit::SOFTWARE, e))
    });
    // Do not wait for connections left over after the grace.
    rt.shutdown_background();
    if let Some(path) = &args.listen {
        // Ours: bound above. A systemd socket is systemd's to remove.
        let _ = std::fs::remove_file(path);
    }
    let how = result?;
    tracing::info!(site = %site, ?how, "exiting");
    Ok(exit::OK)
}
