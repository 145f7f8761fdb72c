//! Run binaries under real socket activation ([`SocketActivated`]) or
//! directly ([`Spawned`]), with stdout/stderr captured to files.

use std::ffi::{OsStr, OsString};
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
        let dir = super::temp_dir("proc");
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

/// What to run: a binary, its arguments and extra environment. Finish with
/// [`Launch::spawn`] (run it directly → [`Spawned`]) or [`Launch::activate`]
/// (under `systemd-socket-activate` → [`SocketActivated`]).
///
/// ```ignore
/// let waker = Launch::new(bin("fleet-waker"))
///     .args(["--site", site.name()])
///     .envs(site.layout_env())
///     .env("RUST_LOG", "debug")
///     .activate(&site.waker_socket());
/// ```
#[derive(Debug, Clone)]
pub struct Launch {
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// Run `bin` (see [`super::bin`] for workspace binaries).
    pub fn new(bin: impl AsRef<Path>) -> Launch {
        Launch {
            bin: bin.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Set one environment variable for the child.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Set environment variables for the child (e.g. `TestSite::layout_env()`).
    pub fn envs<I, K, V>(mut self, vars: I) -> Launch
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Run directly: our environment plus the extra variables.
    pub fn spawn(self) -> Spawned {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Spawned {
            proc: Proc::spawn(cmd),
        }
    }

    /// Run under real socket activation on `socket`:
    /// `systemd-socket-activate --listen=<socket> -E … -- <bin> <args>`.
    /// The child gets only the extra variables plus those of
    /// [`PASSTHROUGH_ENV`] set here (systemd-socket-activate starts it with
    /// an otherwise empty environment). Returns once the socket listens,
    /// before any connection: the binary is not running yet.
    pub fn activate(self, socket: &Path) -> SocketActivated {
        let activate = find_in_path("systemd-socket-activate")
            .expect("systemd-socket-activate on PATH (apt-get install systemd)");
        let mut cmd = Command::new(activate);
        // Its own "Listening on" message must reach our stderr file.
        cmd.env("SYSTEMD_LOG_TARGET", "console");
        cmd.arg(format!("--listen={}", socket.display()));
        for var in PASSTHROUGH_ENV {
            if std::env::var_os(var).is_some() && !self.env.iter().any(|(k, _)| k == var) {
                cmd.arg("-E").arg(var);
            }
        }
        for (k, v) in &self.env {
            cmd.arg("-E").arg(format!("{k}={v}"));
        }
        cmd.arg("--").arg(&self.bin).args(&self.args);
        let mut this = SocketActivated {
            proc: Proc::spawn(cmd),
            socket: socket.to_path_buf(),
        };
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
}

/// A binary under real socket activation (see [`Launch::activate`]):
/// systemd-socket-activate listens, and on the first connection execs the
/// binary in place (same pid) with `LISTEN_FDS=1`, `LISTEN_PID=<pid>` and
/// the socket as fd 3. Killed (process group, SIGKILL) on drop.
#[derive(Debug)]
pub struct SocketActivated {
    proc: Proc,
    socket: PathBuf,
}

impl SocketActivated {
    /// Shorthand for `Launch::new(bin).args(args).envs(env).activate(socket)`.
    pub fn start<S: AsRef<OsStr>>(
        socket: &Path,
        bin: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> SocketActivated {
        Launch::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .activate(socket)
    }

    /// The listening socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// True once the binary has been exec'd (the pid no longer runs
    /// systemd-socket-activate), i.e. a connection activated it.
    pub fn activated(&self) -> bool {
        std::fs::read_link(format!("/proc/{}/exe", self.pid()))
            .is_ok_and(|exe| !exe.ends_with("systemd-socket-activate"))
    }

    proc_methods!();
}

/// A binary run directly (e.g. the waker in `--listen` mode; see
/// [`Launch::spawn`]), in its own process group, output captured; killed on drop.
#[derive(Debug)]
pub struct Spawned {
    proc: Proc,
}

impl Spawned {
    /// Shorthand for `Launch::new(bin).args(args).envs(env).spawn()`.
    pub fn start<S: AsRef<OsStr>>(bin: &Path, args: &[S], env: &[(&str, &str)]) -> Spawned {
        Launch::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .spawn()
    }

    proc_methods!();
}

/// Signal number of a status, if it was killed by one.
pub fn signal_of(status: ExitStatus) -> Option<i32> {
    status.signal()
}
