//! fleet-waker: socket-activated wake-and-proxy for one site.
//!
//! Takes the listening socket systemd passes (or binds `--listen`), connects
//! each connection to php-fpm's socket, starting or unpausing the site's
//! container first when php-fpm is not there, and proxies.
//!
//! Exit codes: 0 stopped by SIGTERM/SIGINT or idle (`--exit-idle-time`), and
//! for `--help`/`--version`;
//! 64 bad command line, bad site name, or no socket passed and no `--listen`;
//! 71 an operating-system call failed (runtime, binding); 70 internal error.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fleet_core::exit;
use fleet_core::listen::{self, ListenError};
use fleet_core::notify::Notifier;
use fleet_core::waker::{self, Config};
use fleet_core::{Layout, Site};
use fleet_waker::cli::Args;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => exit::OK,
                _ => exit::USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    fleet_core::logging::init();
    let site = match Site::new(&args.site) {
        Ok(s) => s,
        Err(e) => return fail(exit::USAGE, &e),
    };
    let mut layout = Layout::from_env();
    if let Some(d) = args.run_dir.clone() {
        layout.run_dir = d;
    }
    if let Some(d) = args.state_dir.clone() {
        layout.state_dir = d;
    }
    if let Err(e) = layout.check_socket_paths(&site) {
        return fail(exit::USAGE, &e);
    }
    // The socket first, while the process has one thread.
    let listener = match &args.listen {
        Some(path) => listen::bind_listener(path, 0o660),
        // SAFETY: no runtime and no other thread exists yet (logging spawns
        // none), and nothing else in this process took fd 3.
        None => unsafe { listen::take_listener() },
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e @ (ListenError::Bind { .. } | ListenError::Inspect { .. })) => {
            return fail(exit::OSERR, &e);
        }
        Err(e) => return fail(exit::USAGE, &e),
    };
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
    // One thread: the waker's work is I/O bound, and this keeps it small.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(exit::OSERR, &e),
    };
    let site = cfg.site.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let shutdown = CancellationToken::new();
        let (term, int) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        );
        tokio::spawn(on_signal(term, int, shutdown.clone()));
        waker::run(listener, cfg, shutdown)
            .await
            .map_err(std::io::Error::other)
    });
    // Do not wait for connections left over after the grace.
    rt.shutdown_background();
    if let Some(path) = &args.listen {
        // Ours: bound above. A systemd socket is systemd's to remove.
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(how) => {
            tracing::info!(site = %site, ?how, "exiting");
            ExitCode::SUCCESS
        }
        Err(e) => fail(exit::OSERR, &e),
    }
}

async fn on_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

fn fail(code: u8, err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("fleet-waker: {}", exit::chain(err));
    ExitCode::from(code)
}
