//! The one error type of every `cargo xtask` command.
//!
//! Each command returns [`Error`]; `main` prints it once, as
//! `xtask <command>: <error and its sources>`, and exits with
//! [`Error::exit_code`] (sysexits: 69 when something needed is missing, 1
//! when a step ran and failed; usage errors, 64, are clap's and never get
//! here).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// sysexits: usage error (clap's parse errors).
pub const EX_USAGE: u8 = 64;
/// sysexits: a needed program, package, privilege or service is unavailable.
pub const EX_UNAVAILABLE: u8 = 69;

/// Why an xtask command stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program, package, privilege or service the step needs is not there.
    #[error("{what}: {why}")]
    Unavailable {
        /// The step or thing that was needed.
        what: String,
        /// What is missing and, where known, how to get it.
        why: String,
    },
    /// Several prerequisites are missing, each named with how to get it.
    #[error("cannot run; missing:\n  - {}", .0.join("\n  - "))]
    Missing(Vec<String>),
    /// A step ran and failed.
    #[error("{what}: {why}")]
    Failed {
        /// The step.
        what: String,
        /// How it failed (a program's status and stderr, a check's finding).
        why: String,
    },
    /// Reading or writing a file or directory failed.
    #[error("{what} {}", .path.display())]
    Io {
        /// What was done (`read`, `write`, `mkdir` …).
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// Building or finding the php-fpm test image.
    #[error("php-fpm image")]
    Image(#[from] crate::image::Error),
}

impl Error {
    /// A step failed: `what` and why.
    pub fn failed(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Failed {
            what: what.into(),
            why: why.to_string(),
        }
    }

    /// Something needed is missing: `what` and why.
    pub fn unavailable(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Unavailable {
            what: what.into(),
            why: why.to_string(),
        }
    }

    /// An I/O error on `path`, as a closure for `map_err`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// The process exit code for this error (sysexits).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unavailable { .. } | Error::Missing(_) | Error::Image(_) => EX_UNAVAILABLE,
            Error::Failed { .. } | Error::Io { .. } => 1,
        }
    }
}

/// An error and its sources, `: `-joined (how every xtask error is printed).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Runs `program args` (an argv, never a shell) and returns its stdout.
/// Not found → [`Error::Unavailable`]; a failure status → [`Error::Failed`]
/// with the status and stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_in(None, program, args)
}

/// [`run`] in directory `dir` (or the current one).
pub fn run_in(dir: Option<&Path>, program: &str, args: &[&str]) -> Result<String, Error> {
    let what = || format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::unavailable(what(), format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(
            what(),
            format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_exit_codes() {
        let io =
            Error::io("read", "/nowhere/x")(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(chain(&io), "read /nowhere/x: entity not found");
        assert_eq!(io.exit_code(), 1);
        let missing = Error::Missing(vec!["root".into(), "nginx".into()]);
        assert_eq!(
            missing.to_string(),
            "cannot run; missing:\n  - root\n  - nginx"
        );
        assert_eq!(missing.exit_code(), EX_UNAVAILABLE);
        assert_eq!(Error::unavailable("x", "y").exit_code(), EX_UNAVAILABLE);
    }

    #[test]
    fn run_reports_status_and_stderr() {
        assert_eq!(run("echo", &["hi"]).expect("echo runs"), "hi\n");
        let e = run("ls", &["/nonexistent-xtask-test"]).expect_err("ls fails");
        assert!(matches!(e, Error::Failed { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent-xtask-test"), "{e}");
        let e = run("/nonexistent/program", &[]).expect_err("not found");
        assert_eq!(e.exit_code(), EX_UNAVAILABLE);
    }
}
