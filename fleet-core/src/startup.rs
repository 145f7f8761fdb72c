//! What every binary does before and after its own work, done one way: the
//! command line (clap's errors exit 64, not clap's 2), logging, the tokio
//! runtime, the shutdown signal, the [`Layout`] from flags and environment,
//! and the last line `<binary>: <error chain>` with its exit code.
//!
//! A binary's `main` is `startup::finish(env!("CARGO_BIN_NAME"), run())`,
//! where `run` returns its exit code or a [`Fatal`].

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::site::Layout;

/// Why a binary stops early: its exit code and the error to print, if any
/// (none when it was printed already, as clap's are).
#[derive(Debug)]
pub struct Fatal {
    code: u8,
    error: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Fatal {
    /// Exit with `code`, printing `error` with its sources.
    pub fn new(code: u8, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Fatal {
            code,
            error: Some(error.into()),
        }
    }

    /// A usage error (64): bad flags, a bad site name.
    pub fn usage(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::new(exit::USAGE, error)
    }

    /// Exit with `code`, printing nothing more.
    pub fn quiet(code: u8) -> Self {
        Fatal { code, error: None }
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
}

/// Why the runtime or the shutdown signal could not be set up (exit 71).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install the SIGTERM/SIGINT handlers")]
    Signals(#[source] std::io::Error),
}

impl From<StartupError> for Fatal {
    fn from(e: StartupError) -> Self {
        Fatal::new(exit::OSERR, e)
    }
}

/// Parses the command line, then sets up logging (after, so `--help` prints
/// nothing else). `--help` and `--version` print and exit 0; any other clap
/// error prints and exits 64.
pub fn parse<C: clap::Parser>() -> Result<C, Fatal> {
    let cli = C::try_parse().map_err(|e| {
        // Printing to a closed stdout or stderr changes nothing about the code.
        let _ = e.print();
        Fatal::quiet(clap_exit_code(&e))
    })?;
    crate::logging::init();
    Ok(cli)
}

/// 0 for `--help` and `--version` (clap prints them to stdout), 64 for every
/// error clap prints to stderr.
fn clap_exit_code(e: &clap::Error) -> u8 {
    if e.use_stderr() {
        exit::USAGE
    } else {
        exit::OK
    }
}

/// A current-thread runtime: every binary's work is I/O bound, and one
/// thread keeps the waker (one per awake site) small.
pub fn runtime() -> Result<Runtime, StartupError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)
}

/// A token cancelled at the first SIGTERM or SIGINT, which is logged as
/// `<signal>: <then>`. Installed on `rt`, so a signal that arrives before the
/// binary's work starts is not lost.
pub fn shutdown_on_signals(
    rt: &Runtime,
    then: &'static str,
) -> Result<CancellationToken, StartupError> {
    let _entered = rt.enter();
    let mut term = signal(SignalKind::terminate()).map_err(StartupError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartupError::Signals)?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    rt.spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "{name}: {then}");
        token.cancel();
    });
    Ok(shutdown)
}

/// The `--run-dir`, `--state-dir` and `--sites-dir` a binary was given
/// (`None`: not given, or the binary has no such flag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutFlags {
    pub run_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub sites_dir: Option<PathBuf>,
}

impl LayoutFlags {
    /// Flags win over `FLEET_*` variables, which win over the defaults; an
    /// empty variable counts as unset (as everywhere in fleet).
    pub fn layout(self) -> Layout {
        self.over(Layout::from_env())
    }

    /// These flags over `base` (pure: [`LayoutFlags::layout`] without the environment).
    pub fn over(self, base: Layout) -> Layout {
        Layout {
            run_dir: self.run_dir.unwrap_or(base.run_dir),
            state_dir: self.state_dir.unwrap_or(base.state_dir),
            sites_dir: self.sites_dir.unwrap_or(base.sites_dir),
        }
    }
}

/// Prints `<binary>: <error chain>` to stderr.
fn print_error(binary: &str, err: &(dyn std::error::Error + 'static)) {
    eprintln!("{binary}: {}", exit::chain(err));
}

/// The end of `main`: `run`'s exit code, or the [`Fatal`]'s after printing
/// its error as `<binary>: <chain>`.
pub fn finish(binary: &str, result: Result<u8, Fatal>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            if let Some(e) = &fatal.error {
                print_error(binary, e.as_ref());
            }
            ExitCode::from(fatal.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::{DEFAULT_RUN_DIR, DEFAULT_SITES_DIR, DEFAULT_STATE_DIR};
    use clap::Parser;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> Layout {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Layout::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn flags(run: Option<&str>, state: Option<&str>, sites: Option<&str>) -> LayoutFlags {
        LayoutFlags {
            run_dir: run.map(PathBuf::from),
            state_dir: state.map(PathBuf::from),
            sites_dir: sites.map(PathBuf::from),
        }
    }

    #[test]
    fn no_flags_no_env_is_the_defaults() {
        let l = LayoutFlags::default().over(env(&[]));
        assert_eq!(l.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(l.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(l.sites_dir, PathBuf::from(DEFAULT_SITES_DIR));
    }

    #[test]
    fn env_wins_over_defaults_and_flags_over_env() {
        let base = env(&[
            ("FLEET_RUN_DIR", "/env/run"),
            ("FLEET_STATE_DIR", "/env/state"),
            ("FLEET_SITES_DIR", "/env/sites"),
        ]);
        let l = flags(Some("/flag/run"), None, Some("/flag/sites")).over(base);
        assert_eq!(l.run_dir, PathBuf::from("/flag/run"));
        assert_eq!(l.state_dir, PathBuf::from("/env/state"));
        assert_eq!(l.sites_dir, PathBuf::from("/flag/sites"));
    }

    #[test]
    fn an_empty_variable_is_unset() {
        let base = env(&[
            ("FLEET_RUN_DIR", ""),
            ("FLEET_STATE_DIR", ""),
            ("FLEET_SITES_DIR", "/env/sites"),
        ]);
        let l = flags(None, Some("/flag/state"), None).over(base);
        assert_eq!(l.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(l.state_dir, PathBuf::from("/flag/state"));
        assert_eq!(l.sites_dir, PathBuf::from("/env/sites"));
    }

    #[derive(Debug, Parser)]
    #[command(name = "t", version)]
    struct Cli {
        site: String,
        #[arg(long)]
        jobs: Option<u32>,
    }

    fn code(args: &[&str]) -> u8 {
        match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => clap_exit_code(&e),
        }
    }

    #[test]
    fn help_and_version_exit_0_other_clap_errors_64() {
        assert_eq!(code(&["t", "--help"]), exit::OK);
        assert_eq!(code(&["t", "-h"]), exit::OK);
        assert_eq!(code(&["t", "--version"]), exit::OK);
        assert_eq!(code(&["t"]), exit::USAGE, "missing argument");
        assert_eq!(code(&["t", "a", "--bogus"]), exit::USAGE);
        assert_eq!(code(&["t", "a", "--jobs", "x"]), exit::USAGE);
        assert_eq!(code(&["t", "a", "b"]), exit::USAGE, "extra argument");
    }

    #[test]
    fn finish_uses_the_code() {
        assert_eq!(finish("t", Ok(1)), ExitCode::from(1));
        assert_eq!(finish("t", Err(Fatal::quiet(0))), ExitCode::SUCCESS);
        let e = std::io::Error::other("x");
        assert_eq!(finish("t", Err(Fatal::usage(e))), ExitCode::from(64));
    }
}
