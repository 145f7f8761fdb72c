//! Run binaries under real socket activation ([`SocketActivated`]) or
//! directly ([`Spawned`]), with stdout/stderr captured to files.

use std::ffi::OsStr;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{find_in_path, wait_until};

/// Variables passed through to socket-activated children when set here
/// (`systemd-socket-activate` starts them with an empty environment).
pub const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "DOCKER_HOST",
    "DOCKER_API_VERSION",
    "FLEET_RUN_DIR",
    "FLEET_STATE_DIR",
    "FLEET_SITES_DIR",
    "NO_COLOR",
];

/// A child process in its own process group, output in `<dir>/stdout`,
/// `<dir>/stderr`. Killed (whole group, SIGKILL) on drop.
#[derive(Debug)]
struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("fleet-it-proc-")
            .tempdir_in("/tmp")
            .expect("create log dir");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout log"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr log"))
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            status: None,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    fn kill(&self, signal: Signal) {
        if self.status.is_none() {
            // ESRCH (already gone but not reaped) is fine.
            let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_status().is_some());
        self.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

macro_rules! proc_methods {
    () => {
        /// Pid of the child (for [`SocketActivated`], the activated binary:
        /// `systemd-socket-activate` execs it in place).
        pub fn pid(&self) -> u32 {
            self.proc.pid()
        }

        /// What the child wrote to stdout so far.
        pub fn stdout(&self) -> String {
            self.proc.stdout()
        }

        /// What the child wrote to stderr so far.
        pub fn stderr(&self) -> String {
            self.proc.stderr()
        }

        /// stdout followed by stderr.
        pub fn logs(&self) -> String {
            format!("{}{}", self.proc.stdout(), self.proc.stderr())
        }

        /// Send `signal` to the child (not its group).
        pub fn kill(&self, signal: Signal) {
            self.proc.kill(signal)
        }

        /// Exit status once it exited, else `None` (non-blocking).
        pub fn try_status(&mut self) -> Option<ExitStatus> {
            self.proc.try_status()
        }

        /// Wait up to `timeout` for the child to exit.
        pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
            self.proc.wait_exit(timeout)
        }

        /// Wait until the logs contain `needle`; false after `timeout`.
        pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
            wait_until(timeout, || self.logs().contains(needle))
        }
    };
}

/// A binary under real socket activation:
/// `systemd-socket-activate --listen=<socket> -E … -- <bin> <args>`.
/// systemd-socket-activate listens, and on the first connection execs the
/// binary with `LISTEN_FDS=1`, `LISTEN_PID=<its pid>` and the socket as fd 3.
#[derive(Debug)]
pub struct SocketActivated {
    proc: Proc,
    socket: PathBuf,
}

impl SocketActivated {
    /// Start listening on `socket` for `bin args…`; `env` is added to the
    /// child's environment, as are [`PASSTHROUGH_ENV`] variables set here.
    /// Returns once the socket listens (systemd-socket-activate said
    /// "Listening on"), before any connection: the binary is not running yet.
    pub fn start<S: AsRef<OsStr>>(
        socket: &Path,
        bin: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> SocketActivated {
        let activate =
            find_in_path("systemd-socket-activate").expect("systemd-socket-activate on PATH");
        let mut cmd = Command::new(activate);
        cmd.arg(format!("--listen={}", socket.display()));
        for var in PASSTHROUGH_ENV {
            if std::env::var_os(var).is_some() && !env.iter().any(|(k, _)| k == var) {
                cmd.arg("-E").arg(var);
            }
        }
        for (k, v) in env {
            cmd.arg("-E").arg(format!("{k}={v}"));
        }
        cmd.arg("--").arg(bin).args(args);
        let proc = Proc::spawn(cmd);
        let this = SocketActivated {
            proc,
            socket: socket.to_path_buf(),
        };
        let mut this = this;
        let listening = wait_until(Duration::from_secs(10), || {
            this.proc.stderr().contains("Listening on") || this.proc.try_status().is_some()
        });
        assert!(
            listening && this.proc.status.is_none(),
            "systemd-socket-activate did not listen on {}: status {:?}, logs:\n{}",
            socket.display(),
            this.proc.status,
            this.logs()
        );
        this
    }

    /// The listening socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    proc_methods!();
}

/// A binary run directly (e.g. the waker in `--listen` mode), in its own
/// process group, output captured; killed on drop.
#[derive(Debug)]
pub struct Spawned {
    proc: Proc,
}

impl Spawned {
    /// Run `bin args…` with our environment plus `env`.
    pub fn start<S: AsRef<OsStr>>(bin: &Path, args: &[S], env: &[(&str, &str)]) -> Spawned {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Spawned {
            proc: Proc::spawn(cmd),
        }
    }

    proc_methods!();
}

/// Signal number of a status, if it was killed by one.
pub fn signal_of(status: ExitStatus) -> Option<i32> {
    status.signal()
}
