//! The one error type of every `cargo xtask` command.
//!
//! Each command returns [`Error`]; `main` prints it once, as
//! `xtask <command>: <error and its sources>`, and exits with
//! [`Error::exit_code`] (sysexits: 69 when something needed is missing, 1
//! when a step ran and failed; usage errors, 64, are clap's and never get
//! here).

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

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
        source: io::Error,
    },
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
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// The process exit code for this error (sysexits).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unavailable { .. } | Error::Missing(_) => EX_UNAVAILABLE,
            Error::Failed { .. } | Error::Io { .. } => 1,
        }
    }
}

/// An error and its sources, `: `-joined (how every xtask error is printed):
/// the binaries' own formatter, so both print a chain alike.
pub use fleet_core::exit::chain;

/// The value, or a panic with the error's [`chain`]: the tests' form of a
/// `try_` function.
#[track_caller]
pub fn or_panic<T>(result: Result<T, Error>) -> T {
    result.unwrap_or_else(|e| panic!("{}", chain(&e)))
}

/// Runs `program args` (an argv, never a shell) and returns its stdout:
/// `Cmd::new(program).args(args).stdout()`.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    Cmd::new(program).args(args).stdout()
}

/// The one subprocess runner of xtask and the tests: an argv (never a
/// shell), optional extra environment, directory and stdin bytes; output
/// captured. [`Cmd::stdout`] fails on a failure status with the stderr in
/// the error; [`Cmd::output`] hands back any status for callers that must
/// see it. Long-running children are [`crate::kit::process`]'s.
///
/// ```no_run
/// # fn import(tag: &str, tar: Vec<u8>) -> Result<String, xtask::Error> {
/// use xtask::error::Cmd;
/// let id = Cmd::new("docker").args(["import", "-", tag]).stdin(tar).stdout()?;
/// # Ok(id) }
/// ```
#[derive(Debug, Clone)]
pub struct Cmd {
    // The launcher runs these under `systemd-socket-activate` too.
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    env_clear: bool,
    env_remove: Vec<OsString>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
}

/// The thread writing a child's stdin.
type Writer = JoinHandle<io::Result<()>>;

/// Which output stream [`Cmd::each_line`] reads (the other passes through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Cmd {
    /// Run `program` (a name looked up on `PATH`, or a path).
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            env_remove: Vec::new(),
            dir: None,
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Set one environment variable (on top of ours).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// Start from an empty environment (then only [`Cmd::env`]'s variables).
    pub fn env_clear(mut self) -> Cmd {
        self.env_clear = true;
        self
    }

    /// Leave `key` out of the environment it inherits from us.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.env_remove.push(key.as_ref().to_os_string());
        self
    }

    /// Run in `dir` instead of the current directory.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Feed `bytes` on stdin (else stdin is /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// The command line, for messages (it runs as an argv).
    pub fn line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it to the end and returns its output whatever the status.
    /// Cannot be started → [`Error::Unavailable`]; stdin not taken whole
    /// by a child that then succeeded → [`Error::Failed`].
    pub fn output(&self) -> Result<Output, Error> {
        let mut cmd = self.command();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (child, writer) = self.spawn(&mut cmd)?;
        let out = child.wait_with_output().map_err(|e| self.waiting(e))?;
        let written = self.written(writer);
        // A child that failed may well have stopped reading: its status and
        // stderr say why, not the broken pipe.
        if out.status.success() {
            written?;
        }
        Ok(out)
    }

    /// Runs it with stdout and stderr passed through (cargo's or apt's
    /// progress is the user's to see); a failure status → [`Error::Failed`].
    pub fn status(&self) -> Result<(), Error> {
        let (mut child, writer) = self.spawn(&mut self.command())?;
        let status = child.wait().map_err(|e| self.waiting(e))?;
        let written = self.written(writer);
        if !status.success() {
            return Err(Error::failed(self.line(), status));
        }
        written
    }

    /// Runs it, handing each line of `stream` to `f` as it comes (a long
    /// step's progress, counted or echoed by the caller); the other stream
    /// passes through. Returns the exit status for the caller to judge.
    pub fn each_line(
        &self,
        stream: Stream,
        mut f: impl FnMut(&str),
    ) -> Result<std::process::ExitStatus, Error> {
        let mut cmd = self.command();
        match stream {
            Stream::Stdout => cmd.stdout(Stdio::piped()),
            Stream::Stderr => cmd.stderr(Stdio::piped()),
        };
        let (mut child, writer) = self.spawn(&mut cmd)?;
        let out: Option<Box<dyn io::Read>> = match stream {
            Stream::Stdout => child.stdout.take().map(|o| Box::new(o) as _),
            Stream::Stderr => child.stderr.take().map(|e| Box::new(e) as _),
        };
        if let Some(out) = out {
            // Bytes, not `lines()`: a line that is not UTF-8 must not end
            // the reading (the rest lost, the child killed by EPIPE).
            let mut reader = io::BufReader::new(out);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                f(text.strip_suffix('\n').unwrap_or(&text));
                line.clear();
            }
        }
        let status = child.wait().map_err(|e| self.waiting(e))?;
        // The status is the caller's to judge, a broken pipe with it.
        let _ = self.written(writer);
        Ok(status)
    }

    /// How the [`Cmd::spawn`] thread's write went.
    fn written(&self, writer: Option<Writer>) -> Result<(), Error> {
        let why = match writer.map(JoinHandle::join) {
            Some(Ok(Err(e))) => format!("writing its stdin: {e}"),
            Some(Err(_)) => "the stdin writer panicked".to_owned(),
            _ => return Ok(()),
        };
        Err(Error::failed(self.line(), why))
    }

    /// A `std` command: argv, environment, directory; stdin null unless
    /// bytes are to be fed.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if self.env_clear {
            cmd.env_clear();
        }
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        let fed = self.stdin.is_some();
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if fed { Stdio::piped() } else { Stdio::null() });
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts `cmd` and the thread that feeds it the stdin bytes: a child
    /// that writes much before reading all its input would otherwise block
    /// us both.
    fn spawn(&self, cmd: &mut Command) -> Result<(Child, Option<Writer>), Error> {
        let mut child = cmd.spawn().map_err(|e| {
            let program = self.program.to_string_lossy();
            Error::unavailable(self.line(), format!("cannot run {program}: {e}"))
        })?;
        let writer = self
            .stdin
            .clone()
            .zip(child.stdin.take())
            .map(|(data, mut pipe)| std::thread::spawn(move || pipe.write_all(&data)));
        Ok((child, writer))
    }

    fn waiting(&self, e: io::Error) -> Error {
        Error::failed(self.line(), format!("waiting for it: {e}"))
    }

    /// Runs it and returns its stdout; a failure status → [`Error::Failed`]
    /// with the status and stderr (or stdout, when stderr is empty).
    pub fn stdout(&self) -> Result<String, Error> {
        let out = self.output()?;
        let [stdout, stderr] = [&out.stdout, &out.stderr].map(|b| String::from_utf8_lossy(b));
        if out.status.success() {
            return Ok(stdout.into_owned());
        }
        let said = [stderr, stdout].into_iter().find(|s| !s.trim().is_empty());
        let why = format!("{}: {}", out.status, said.unwrap_or_default().trim());
        Err(Error::failed(self.line(), why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_exit_codes() {
        let io = Error::io("read", "/nowhere/x")(io::Error::from(io::ErrorKind::NotFound));
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

    #[test]
    fn each_line_streams_the_chosen_output_and_returns_the_status() {
        // The status and the lines `cmd` wrote on `stream`.
        let lines_of = |cmd: Cmd, stream| {
            let mut lines = Vec::new();
            let status = cmd.each_line(stream, |l| lines.push(l.to_owned()));
            (status.expect("cat runs"), lines)
        };
        let (status, lines) = lines_of(Cmd::new("cat").stdin("one\ntwo\n"), Stream::Stdout);
        assert!(status.success());
        assert_eq!(lines, ["one", "two"]);
        let missing = "/nonexistent/fleet-each-line";
        let (status, errs) = lines_of(Cmd::new("cat").arg(missing), Stream::Stderr);
        assert!(!status.success());
        assert!(errs.len() == 1 && errs[0].contains(missing), "{errs:?}");
    }

    #[test]
    fn cmd_feeds_stdin_and_shows_failing_status() {
        let big = vec![b'x'; 1 << 20];
        let n = Cmd::new("wc").arg("-c").stdin(big).stdout();
        assert_eq!(n.expect("wc runs").trim(), "1048576");
        let out = Cmd::new("printenv")
            .arg("XTASK_CMD_TEST")
            .env("XTASK_CMD_TEST", "set")
            .output()
            .expect("printenv runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "set\n");
        let out = Cmd::new("printenv").arg("XTASK_CMD_UNSET").output();
        assert_eq!(out.expect("printenv runs").status.code(), Some(1));
        let e = Cmd::new("cat")
            .arg("/nonexistent-xtask-test")
            .dir("/")
            .stdout();
        let e = e.expect_err("cat fails");
        assert!(
            e.to_string().starts_with("cat /nonexistent-xtask-test: "),
            "{e}"
        );
    }
}
