//! The one child-process launcher of the tests, benches, soak and demo: run
//! a binary directly ([`Spawned`]) or under real socket activation
//! ([`SocketActivated`]), output captured to files, optionally waiting for
//! its `READY=1`, stopped when the handle drops.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::error::{Cmd, Error};
use crate::wait::wait_until;

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

/// Look a program up on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Where a child's output goes: stdout to `out`, stderr to `err` (the same
/// file with [`Launch::log_to`]), which held `from` bytes before.
#[derive(Debug)]
struct Logs {
    out: PathBuf,
    err: PathBuf,
    from: u64,
}

impl Logs {
    fn read(&self, path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap_or_default();
        let from = (self.from as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }
}

/// A child process (run directly, e.g. the waker in `--listen` mode, see
/// [`Launch::spawn`]; or the `systemd-socket-activate` a [`SocketActivated`]
/// wraps), output captured; stopped on drop as its [`Launch`] said.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    status: Option<ExitStatus>,
    logs: Logs,
    group: bool,
    stop: (Signal, Duration),
    // Holds the split logs and the notify socket; removed on drop.
    _dir: tempfile::TempDir,
}

impl Spawned {
    fn spawn(mut cmd: Command, launch: &Launch, dir: tempfile::TempDir) -> Result<Spawned, Error> {
        let (out, err, from) = match &launch.log {
            Some(path) => {
                let from = std::fs::metadata(path).map_or(0, |m| m.len());
                (path.clone(), path.clone(), from)
            }
            None => (dir.path().join("stdout"), dir.path().join("stderr"), 0),
        };
        let logs = Logs { out, err, from };
        // One file for both streams is opened twice: appending, neither
        // stream overwrites the other.
        let mut options = std::fs::File::options();
        options.create(true).append(true);
        let open = |path: &Path| options.open(path).map_err(Error::io("open", path));
        let out = open(&logs.out)?;
        let err = open(&logs.err)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if launch.group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| {
            Error::unavailable(format!("spawn {}", cmd.get_program().to_string_lossy()), e)
        })?;
        Ok(Spawned {
            child,
            status: None,
            logs,
            group: launch.group,
            stop: launch.stop,
            _dir: dir,
        })
    }

    /// Pid of the child (for [`SocketActivated`], the activated binary:
    /// `systemd-socket-activate` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child wrote to stdout so far (with [`Launch::log_to`],
    /// its whole output since the start).
    pub fn stdout(&self) -> String {
        self.logs.read(&self.logs.out)
    }

    /// What the child wrote to stderr so far (with [`Launch::log_to`],
    /// its whole output since the start).
    pub fn stderr(&self) -> String {
        self.logs.read(&self.logs.err)
    }

    /// stdout followed by stderr (with [`Launch::log_to`], the file's
    /// text written since the start).
    pub fn logs(&self) -> String {
        let err = (self.logs.err != self.logs.out).then(|| self.stderr());
        self.stdout() + &err.unwrap_or_default()
    }

    /// Send `signal` to the child (not its group).
    pub fn kill(&self, signal: Signal) {
        if self.status.is_none() {
            // ESRCH (already gone but not reaped) is fine.
            let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
        }
    }

    /// Exit status once it exited, else `None` (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_status().is_some());
        self.status
    }

    /// Wait until the logs contain `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }
}

impl Drop for Spawned {
    /// Stops the child: the [`Launch::stop_with`] signal to it (to its
    /// process group when it has one of its own), up to the grace for it to
    /// exit, then SIGKILL (the group too: workers or helpers may outlive the
    /// leader) and reap. Errors are ignored: it may be gone.
    fn drop(&mut self) {
        if self.status.is_some() && !self.group {
            return;
        }
        let (signal, grace, group) = (self.stop.0, self.stop.1, self.group);
        let pid = Pid::from_raw(self.child.id() as i32);
        let send: fn(Pid, Signal) -> nix::Result<()> = if group { killpg } else { kill };
        if signal != Signal::SIGKILL {
            let _ = send(pid, signal);
            wait_until(grace, || matches!(self.child.try_wait(), Ok(Some(_))));
        }
        let _ = send(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// What to run: a binary, its arguments and extra environment, where its
/// output goes and how it is stopped. Finish with [`Launch::spawn`] (run it
/// directly → [`Spawned`]) or [`Launch::activate`] (under
/// `systemd-socket-activate` → [`SocketActivated`]); their `try_` forms
/// return an [`Error`] instead of panicking.
///
/// ```no_run
/// use xtask::kit::{process::Launch, release_bin, site::TestSite};
/// let site = TestSite::new();
/// let waker = Launch::new(release_bin("fleet-waker"))
///     .arg(site.name())
///     .envs(site.layout_env())
///     .env("RUST_LOG", "debug")
///     .activate(&site.waker_socket());
/// ```
#[derive(Debug, Clone)]
pub struct Launch {
    cmd: Cmd,
    log: Option<PathBuf>,
    ready: Option<Duration>,
    stop: (Signal, Duration),
    group: bool,
}

/// A [`Cmd`] to launch (under socket activation, only its program,
/// arguments and extra environment count).
impl From<Cmd> for Launch {
    fn from(cmd: Cmd) -> Launch {
        Launch {
            cmd,
            log: None,
            ready: None,
            stop: (Signal::SIGKILL, Duration::ZERO),
            group: true,
        }
    }
}

impl Launch {
    /// Run `bin`. By default output goes to a temp dir, the child has its
    /// own process group, and the group is SIGKILLed on drop.
    pub fn new(bin: impl AsRef<Path>) -> Launch {
        Launch::from(Cmd::new(bin.as_ref()))
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.cmd = self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Launch {
        self.cmd = self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Launch {
        self.cmd = self.cmd.env(key.into(), value.into());
        self
    }

    /// Set environment variables for the child (e.g. `TestSite::layout_env()`).
    pub fn envs<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Launch {
        vars.into_iter().fold(self, |l, (k, v)| l.env(k, v))
    }

    /// Append stdout and stderr to `path` (a log kept after the run, shared
    /// by several children) instead of files in a temp dir.
    pub fn log_to(mut self, path: impl AsRef<Path>) -> Launch {
        self.log = Some(path.as_ref().to_path_buf());
        self
    }

    /// [`Launch::try_spawn`] returns only once the child sent `READY=1` on
    /// a `NOTIFY_SOCKET` of our own (within `timeout`): the sd_notify way,
    /// not a probe connection, which could itself wake a sleeping site.
    pub fn notify_ready(mut self, timeout: Duration) -> Launch {
        self.ready = Some(timeout);
        self
    }

    /// On drop, send `signal` first and SIGKILL only after `grace`: for
    /// children that must get to clean up (a waker, systemd-socket-activate).
    pub fn stop_with(mut self, signal: Signal, grace: Duration) -> Launch {
        self.stop = (signal, grace);
        self
    }

    /// Leave the child in our process group, so that a Ctrl-C at the
    /// terminal reaches it too (for commands that do not catch SIGINT); drop
    /// then signals the child only.
    pub fn same_group(mut self) -> Launch {
        self.group = false;
        self
    }

    /// [`Launch::try_spawn`], panicking with the reason (for tests).
    #[track_caller]
    pub fn spawn(self) -> Spawned {
        crate::error::or_panic(self.try_spawn())
    }

    /// Run directly: our environment plus the extra variables; with
    /// [`Launch::notify_ready`], wait for its `READY=1` on a `NOTIFY_SOCKET`
    /// of our own, giving up early if the child exits.
    pub fn try_spawn(self) -> Result<Spawned, Error> {
        let dir = crate::kit::site::try_temp_dir_in(Path::new("/tmp"), "proc")?;
        let mut cmd = self.cmd.command();
        let Some(timeout) = self.ready else {
            return Spawned::spawn(cmd, &self, dir);
        };
        let path = dir.path().join("notify");
        cmd.env("NOTIFY_SOCKET", &path);
        let notify = UnixDatagram::bind(&path).map_err(Error::io("bind", &path))?;
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(Error::io("set a read timeout on", &path))?;
        let mut spawned = Spawned::spawn(cmd, &self, dir)?;
        let (mut buf, mut ready) = ([0u8; 4096], false);
        // The blocking recv (100 ms) is the wait: no sleep in between.
        crate::wait::poll(timeout, Duration::ZERO, Duration::ZERO, || {
            ready = notify.recv(&mut buf).is_ok_and(|n| {
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            });
            ready || spawned.try_status().is_some()
        });
        let why = match spawned.status {
            _ if ready => return Ok(spawned),
            Some(status) => format!("exited ({status}) before READY=1"),
            None => format!("no READY=1 within {timeout:?}"),
        };
        let logs = spawned.logs();
        let what = format!("{} (pid {})", self.cmd.line(), spawned.pid());
        Err(Error::failed(what, format!("{why}: {}", logs.trim())))
    }

    /// [`Launch::try_activate`], panicking with the reason (for tests).
    pub fn activate(self, socket: &Path) -> SocketActivated {
        crate::error::or_panic(self.try_activate(socket))
    }

    /// Run under real socket activation on `socket`:
    /// `systemd-socket-activate --listen=<socket> -E … -- <bin> <args>`.
    /// The child gets only the extra variables plus those of
    /// [`PASSTHROUGH_ENV`] set here (systemd-socket-activate starts it with
    /// an otherwise empty environment). Returns once the socket listens,
    /// before any connection: the binary is not running yet.
    pub fn try_activate(self, socket: &Path) -> Result<SocketActivated, Error> {
        let why = "not on PATH (apt-get install systemd)";
        let activate = find_in_path("systemd-socket-activate")
            .ok_or_else(|| Error::unavailable("systemd-socket-activate", why))?;
        let dir = crate::kit::site::try_temp_dir_in(Path::new("/tmp"), "proc")?;
        let mut cmd = Command::new(activate);
        // Its own "Listening on" message must reach our log.
        cmd.env("SYSTEMD_LOG_TARGET", "console");
        cmd.arg(format!("--listen={}", socket.display()));
        let (bin, args, env) = (&self.cmd.program, &self.cmd.args, &self.cmd.env);
        for var in PASSTHROUGH_ENV {
            if std::env::var_os(var).is_some() && !env.iter().any(|(k, _)| k == var) {
                cmd.arg("-E").arg(var);
            }
        }
        for (k, v) in env {
            let kv = [k.as_bytes(), b"=", v.as_bytes()].concat();
            cmd.arg("-E").arg(OsStr::from_bytes(&kv));
        }
        cmd.arg("--").arg(bin).args(args);
        let mut proc = Spawned::spawn(cmd, &self, dir)?;
        let listening = wait_until(Duration::from_secs(10), || {
            proc.stderr().contains("Listening on") || proc.try_status().is_some()
        });
        if !listening || proc.status.is_some() {
            let (status, logs) = (proc.status, proc.logs());
            let what = format!("systemd-socket-activate --listen={}", socket.display());
            let why = format!("did not listen: status {status:?}, logs:\n{logs}");
            return Err(Error::failed(what, why));
        }
        Ok(SocketActivated { proc })
    }
}

/// A binary under real socket activation (see [`Launch::activate`]):
/// systemd-socket-activate listens, and on the first connection execs the
/// binary in place (same pid) with `LISTEN_FDS=1`, `LISTEN_PID=<pid>` and
/// the socket as fd 3. The process is a [`Spawned`] (its methods through
/// `Deref`), stopped on drop (see [`Launch::stop_with`]).
#[derive(Debug)]
pub struct SocketActivated {
    proc: Spawned,
}

impl SocketActivated {
    /// True once the binary has been exec'd (the pid no longer runs
    /// systemd-socket-activate), i.e. a connection activated it.
    pub fn activated(&self) -> bool {
        std::fs::read_link(format!("/proc/{}/exe", self.pid()))
            .is_ok_and(|exe| !exe.ends_with("systemd-socket-activate"))
    }
}

impl std::ops::Deref for SocketActivated {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.proc
    }
}

impl std::ops::DerefMut for SocketActivated {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.proc
    }
}

/// Signal number of a status, if it was killed by one.
pub fn signal_of(status: ExitStatus) -> Option<i32> {
    status.signal()
}

/// Open descriptors of process `pid` (0 when it cannot be read): what the
/// soak and the fault tests watch for leaks.
pub fn fd_count(pid: u32) -> usize {
    fd_targets(pid).len()
}

/// What each open file descriptor of `pid` is (`/proc/<pid>/fd` links:
/// a path, `socket:[…]`, `anon_inode:inotify` …); empty when unreadable.
pub fn fd_targets(pid: u32) -> Vec<PathBuf> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"));
    let links = dir.into_iter().flatten().flatten();
    links
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_logs_and_stops() {
        let dir = crate::kit::site::temp_dir("proc-test");
        let log = dir.path().join("shared.log");
        std::fs::write(&log, "before\n").expect("write log");
        let mut echo = Launch::new("/bin/echo").arg("hello").log_to(&log).spawn();
        let exited = echo.wait_exit(Duration::from_secs(5));
        assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
        assert_eq!(echo.logs(), "hello\n");
        // Both streams append to the shared file: neither overwrites the other.
        let mut ls = Launch::new("/bin/ls")
            .args(["/", "/nonexistent-fleet-log"])
            .log_to(&log)
            .spawn();
        assert!(ls.wait_exit(Duration::from_secs(5)).is_some());
        let text = std::fs::read_to_string(&log).expect("read log");
        assert!(text.starts_with("before\nhello\n"), "{text}");
        assert!(
            text.contains("tmp") && text.contains("nonexistent-fleet-log"),
            "{text}"
        );
        assert_eq!(ls.stderr(), ls.logs());
        let mut sleep = Launch::new("/bin/sleep")
            .arg("60")
            .stop_with(Signal::SIGTERM, Duration::from_secs(3))
            .spawn();
        assert!(sleep.try_status().is_none());
        sleep.kill(Signal::SIGTERM);
        let status = sleep.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(signal_of(status), Some(Signal::SIGTERM as i32));
        let e = Launch::new("/bin/true")
            .notify_ready(Duration::from_secs(5))
            .try_spawn()
            .expect_err("true sends no READY=1");
        assert!(e.to_string().contains("before READY=1"), "{e}");
    }
}
