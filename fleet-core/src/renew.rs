//! Recovery: bring a site whose socket unit, service and container disagree
//! back to a clean, listening state (`fleet-renew`).
//!
//! Per site, in order (each step reported with its outcome):
//!
//! 1. stop the socket unit (`fleet-waker@<site>.socket`);
//! 2. stop the service unit (`fleet-waker@<site>.service`);
//! 3. stop the container `<site>.fpm` (already stopped is fine; missing is an error);
//! 4. remove the waker's socket file when nothing listens on it;
//! 5. make the runtime directory a size-limited tmpfs of its own ([`crate::rundir`]);
//! 6. leave a refusing placeholder at php-fpm's socket path ([`crate::placeholder`],
//!    so nginx's direct mode logs the fallback at `error`), keeping whatever is there;
//! 7. `reset-failed` both units (clears `trigger-limit-hit` and `start-limit-hit`);
//! 8. start the socket unit;
//! 9. verify the socket unit is active and its socket is listening, reading the
//!    kernel's table of listening unix sockets (`/proc/net/unix`) instead of
//!    connecting, since a connect would wake the site.
//!
//! php-fpm's socket is never removed: a live one is the site, a dead one
//! refuses connections just like the placeholder, and php-fpm replaces it
//! when it starts. Whether anything listens on it is found by connecting to
//! it (never through a symlink), since its listener lives in the container's
//! network namespace, which the host's `/proc/net/unix` does not show. The
//! directory is only mounted over, and the placeholder only made, once the
//! container is known to be stopped: when its stop failed or its state is
//! unknown, they are left and the report says so.
//!
//! systemd is driven through `systemctl` with an argument vector, never a
//! shell. Why not D-Bus: `systemctl` is the interface the sysadmin already
//! uses and reads, its errors are the ones they know, it works as root
//! without a bus daemon (it talks to `/run/systemd/private`), including inside
//! a namespace where systemd runs as PID 1 for tests, and it needs no D-Bus
//! stack in this binary. The cost (a fork per step) is irrelevant for a
//! recovery command.
//!
//! A failed step does not stop the later ones: the point of the command is to
//! get as close to a clean state as it can, and the final verification says
//! whether it did.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::docker::{DockerError, Engine};
use crate::rundir::{self, Limits, Prepared, RunDirError};
use crate::site::{Layout, Site};
use crate::upstream::{self, Liveness};

/// Default socket unit template; `{site}` is replaced by the site name.
pub const DEFAULT_SOCKET_UNIT: &str = "fleet-waker@{site}.socket";
/// Default service unit template.
pub const DEFAULT_SERVICE_UNIT: &str = "fleet-waker@{site}.service";

/// Grace period given to the container when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A unit name template that must contain `{site}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTemplate(String);

/// A unit template without `{site}`, or one that makes an invalid unit name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unit template {template:?} does not contain {{site}}")]
    NoPlaceholder { template: String },
    #[error(
        "unit template {template:?} has {found:?} (rule: unit names use ASCII letters, digits, ':', '-', '_', '.', '@' and '\\')"
    )]
    BadCharacter { template: String, found: char },
    #[error("unit template {template:?} has no unit type suffix such as .socket or .service")]
    NoSuffix { template: String },
}

impl UnitTemplate {
    /// Validates a template such as `fleet-waker@{site}.socket`.
    pub fn new(template: &str) -> Result<Self, TemplateError> {
        if !template.contains("{site}") {
            return Err(TemplateError::NoPlaceholder {
                template: template.to_owned(),
            });
        }
        let rest = template.replace("{site}", "");
        if let Some(found) = rest
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || ":-_.@\\".contains(c)))
        {
            return Err(TemplateError::BadCharacter {
                template: template.to_owned(),
                found,
            });
        }
        let suffix_ok = template
            .rsplit_once('.')
            .is_some_and(|(_, s)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()));
        if !suffix_ok {
            return Err(TemplateError::NoSuffix {
                template: template.to_owned(),
            });
        }
        Ok(UnitTemplate(template.to_owned()))
    }

    /// The unit name for `site`. Site names only hold characters that are
    /// valid in unit names, so no escaping is needed.
    pub fn for_site(&self, site: &Site) -> String {
        self.0.replace("{site}", site.as_str())
    }
}

impl std::str::FromStr for UnitTemplate {
    type Err = TemplateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitTemplate::new(s)
    }
}

/// One step of a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    StopUnit(String),
    StopContainer(String),
    /// php-fpm's socket: a refusing placeholder when nothing is there; kept
    /// otherwise.
    FpmPlaceholder(PathBuf),
    /// The waker's socket: removed when the kernel's table shows no
    /// listener (a connect would start a wake).
    RemoveSocket(PathBuf),
    PrepareRunDir(PathBuf),
    ResetFailed(String),
    StartUnit(String),
    Verify {
        unit: String,
        socket: PathBuf,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::StopUnit(u) => write!(f, "stop {u}"),
            Step::StopContainer(c) => write!(f, "stop container {c}"),
            Step::RemoveSocket(p) => write!(f, "remove stale socket {}", p.display()),
            Step::FpmPlaceholder(p) => {
                write!(f, "leave a refusing placeholder at {}", p.display())
            }
            Step::PrepareRunDir(p) => write!(f, "make {} a tmpfs of its own", p.display()),
            Step::ResetFailed(u) => write!(f, "reset-failed {u}"),
            Step::StartUnit(u) => write!(f, "start {u}"),
            Step::Verify { unit, socket } => {
                write!(
                    f,
                    "verify {unit} is active and {} listens",
                    socket.display()
                )
            }
        }
    }
}

/// How a step ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done; the text says what happened ("stopped", "already stopped", …).
    Done(String),
    /// Not done because of `--dry-run`.
    DryRun,
    /// Not done, on purpose; the text says why (not a failure).
    Skipped(String),
    /// Failed; the site is not healthy.
    Failed(RenewError),
}

impl Outcome {
    /// True for [`Outcome::Failed`].
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// A step and its outcome.
#[derive(Debug)]
pub struct StepReport {
    pub step: Step,
    pub outcome: Outcome,
}

/// Everything that happened to one site.
#[derive(Debug)]
pub struct SiteReport {
    pub site: Site,
    pub steps: Vec<StepReport>,
}

impl SiteReport {
    /// True when no step failed.
    pub fn healthy(&self) -> bool {
        !self.steps.iter().any(|s| s.outcome.failed())
    }
}

/// Why a step failed. Every variant names the unit, container or path.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`systemctl {args}` failed ({status}): {stderr}")]
    Systemctl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot remove socket file {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the kernel's unix socket table {path}")]
    ProcNetUnix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Placeholder(#[from] crate::placeholder::PlaceholderError),
    #[error("{unit} is {state}, not active")]
    NotActive { unit: String, state: String },
    #[error("nothing listens on {path}")]
    NotListening { path: PathBuf },
}

/// How renewals are done.
#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub socket_unit: UnitTemplate,
    pub service_unit: UnitTemplate,
    pub dry_run: bool,
    /// The `systemctl` program.
    pub systemctl: PathBuf,
    /// The kernel's unix socket table.
    pub proc_net_unix: PathBuf,
    /// Grace given to the container on stop.
    pub stop_grace: Duration,
    /// The runtime directory's tmpfs.
    pub limits: Limits,
}

impl Config {
    /// Defaults for `layout`.
    pub fn new(layout: Layout) -> Self {
        Config {
            layout,
            socket_unit: UnitTemplate(DEFAULT_SOCKET_UNIT.to_owned()),
            service_unit: UnitTemplate(DEFAULT_SERVICE_UNIT.to_owned()),
            dry_run: false,
            systemctl: PathBuf::from("systemctl"),
            proc_net_unix: PathBuf::from("/proc/net/unix"),
            stop_grace: STOP_GRACE,
            limits: Limits::default(),
        }
    }
}

/// One entry of `/proc/net/unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketEntry {
    /// True when the socket accepts connections (`__SO_ACCEPTCON` set).
    pub listening: bool,
    /// Bound path; abstract names start with `@`.
    pub path: String,
}

/// `__SO_ACCEPTCON` in the Flags column of `/proc/net/unix`.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Parses the text of `/proc/net/unix`:
/// `Num RefCount Protocol Flags Type St Inode Path`. Lines that do not parse
/// are skipped (the format is the kernel's, stable for decades, but a reader
/// must not fail on one odd line).
fn parse_proc_net_unix(text: &str) -> Vec<UnixSocketEntry> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut rest = line.trim_start();
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
        if fields.iter().any(|f| f.is_empty()) || rest.is_empty() {
            continue; // unbound socket, or garbage
        }
        let Ok(flags) = u32::from_str_radix(fields[3], 16) else {
            continue;
        };
        out.push(UnixSocketEntry {
            listening: flags & SO_ACCEPTCON != 0,
            path: rest.to_owned(),
        });
    }
    out
}

/// True when the table lists a listening socket bound to `path`.
pub fn is_listening(entries: &[UnixSocketEntry], path: &Path) -> bool {
    let want = path.to_string_lossy();
    entries.iter().any(|e| e.listening && e.path == want)
}

/// The kernel's table of unix sockets at `cfg.proc_net_unix`, parsed.
pub fn read_unix_table(cfg: &Config) -> Result<Vec<UnixSocketEntry>, RenewError> {
    let text =
        std::fs::read_to_string(&cfg.proc_net_unix).map_err(|source| RenewError::ProcNetUnix {
            path: cfg.proc_net_unix.clone(),
            source,
        })?;
    Ok(parse_proc_net_unix(&text))
}

/// Runs `systemctl <args>` and returns its stdout.
pub async fn systemctl(cfg: &Config, args: &[&str]) -> Result<String, RenewError> {
    let out = tokio::process::Command::new(&cfg.systemctl)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| RenewError::Spawn {
            program: cfg.systemctl.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(RenewError::Systemctl {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The state `systemctl is-active` prints (it exits non-zero when not active,
/// which is not an error here).
async fn unit_state(cfg: &Config, unit: &str) -> Result<String, RenewError> {
    let out = tokio::process::Command::new(&cfg.systemctl)
        .args(["is-active", unit])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| RenewError::Spawn {
            program: cfg.systemctl.display().to_string(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Leaves a refusing placeholder at php-fpm's socket `path` when nothing is
/// there; whatever is there is kept, and said (a connect, never through a
/// symlink, tells a live socket from a dead one in any network namespace).
fn fpm_placeholder(path: &Path) -> Result<String, RenewError> {
    Ok(match upstream::probe(path) {
        Liveness::Absent => match crate::placeholder::ensure(path)? {
            crate::placeholder::Placed::Created => "created".into(),
            crate::placeholder::Placed::Exists => "something appeared there; left alone".into(),
        },
        Liveness::Dead => "a socket nobody listens on is there already; kept".into(),
        Liveness::NotSocket(kind) => format!("{kind}, not a socket file; left alone"),
        Liveness::Listening => "in use; left alone".into(),
        Liveness::Unknown(why) => format!("cannot tell whether anything listens ({why}); kept"),
    })
}

/// Makes the site's runtime directory its own tmpfs (see [`rundir`]).
pub fn prepare_run_dir(cfg: &Config, site: &Site) -> Result<String, RenewError> {
    Ok(match rundir::prepare(&cfg.layout, site, cfg.limits)? {
        Prepared::Mounted => format!("mounted ({})", cfg.limits.options()),
        Prepared::AlreadyMounted(false) => "already a mount point".into(),
        Prepared::AlreadyMounted(true) => "already a mount point; remounted nosymfollow".into(),
        Prepared::InUse(names) => {
            let symlinks = match rundir::forbid_symlinks_in_place(&cfg.layout, site)? {
                true => "; bound onto itself nosymfollow",
                false => "",
            };
            format!(
                "holds {}; not mounted over (stop the container, then run fleet-renew){symlinks}",
                names.join(", ")
            )
        }
    })
}

/// Removes `path` when it is a socket file nothing listens on.
fn remove_if_stale(cfg: &Config, path: &Path) -> Result<String, RenewError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("absent".into()),
        Err(source) => {
            return Err(RenewError::Remove {
                path: path.to_owned(),
                source,
            });
        }
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Ok("not a socket file; left alone".into());
    }
    if is_listening(&read_unix_table(cfg)?, path) {
        return Ok("in use; left alone".into());
    }
    std::fs::remove_file(path).map_err(|source| RenewError::Remove {
        path: path.to_owned(),
        source,
    })?;
    Ok("removed".into())
}

/// The steps for `site`, in order.
pub fn plan(cfg: &Config, site: &Site) -> Vec<Step> {
    let mut steps = vec![
        Step::StopUnit(cfg.socket_unit.for_site(site)),
        Step::StopUnit(cfg.service_unit.for_site(site)),
        Step::StopContainer(site.container()),
        Step::RemoveSocket(cfg.layout.waker_socket(site)),
        Step::PrepareRunDir(cfg.layout.site_dir(site)),
        Step::FpmPlaceholder(cfg.layout.fpm_socket(site)),
    ];
    // Then the socket side, as healing does it.
    steps.extend(socket_plan(cfg, site, false));
    steps
}

async fn run_step(
    cfg: &Config,
    engine: &Engine,
    site: &Site,
    step: &Step,
) -> Result<String, RenewError> {
    match step {
        Step::StopUnit(unit) => systemctl(cfg, &["stop", unit])
            .await
            .map(|_| "stopped".into()),
        Step::StopContainer(container) => {
            let before = engine.inspect(container).await?;
            use crate::docker::ContainerState as S;
            if !matches!(before.state, S::Running | S::Paused | S::Restarting) {
                return Ok(format!("already {}", before.state));
            }
            engine.stop(container, cfg.stop_grace).await?;
            Ok(format!("stopped (was {})", before.state))
        }
        Step::RemoveSocket(path) => remove_if_stale(cfg, path),
        Step::FpmPlaceholder(path) => fpm_placeholder(path),
        Step::PrepareRunDir(_) => prepare_run_dir(cfg, site),
        Step::ResetFailed(unit) => systemctl(cfg, &["reset-failed", unit])
            .await
            .map(|_| "reset".into())
            .or_else(|e| match e {
                // reset-failed of a unit systemd has not loaded is not an error
                RenewError::Systemctl { ref stderr, .. } if stderr.contains("not loaded") => {
                    Ok("not loaded".into())
                }
                e => Err(e),
            }),
        Step::StartUnit(unit) => systemctl(cfg, &["start", unit])
            .await
            .map(|_| "started".into()),
        Step::Verify { unit, socket } => {
            let state = unit_state(cfg, unit).await?;
            if state != "active" {
                return Err(RenewError::NotActive {
                    unit: unit.clone(),
                    state,
                });
            }
            if !is_listening(&read_unix_table(cfg)?, socket) {
                return Err(RenewError::NotListening {
                    path: socket.clone(),
                });
            }
            Ok("active and listening".into())
        }
    }
}

/// Renews one site, calling `on_step` as each step finishes (so a person
/// sees progress), and returns the whole report.
pub async fn renew_site(
    cfg: &Config,
    engine: &Engine,
    site: &Site,
    mut on_step: impl FnMut(&Site, &StepReport),
) -> SiteReport {
    let mut steps = Vec::new();
    // php-fpm's socket and directory are only touched once the container is
    // known to be stopped.
    let mut stopped = false;
    for step in plan(cfg, site) {
        let needs_stopped = matches!(step, Step::FpmPlaceholder(_) | Step::PrepareRunDir(_));
        let outcome = if cfg.dry_run {
            Outcome::DryRun
        } else if needs_stopped && !stopped {
            Outcome::Skipped(format!(
                "container {} may still run (its stop failed or its state is unknown); left alone",
                site.container()
            ))
        } else {
            match run_step(cfg, engine, site, &step).await {
                Ok(text) => {
                    if matches!(step, Step::StopContainer(_)) {
                        stopped = true;
                    }
                    Outcome::Done(text)
                }
                Err(e) => {
                    tracing::warn!(site = %site, step = %step, error = %crate::exit::chain(&e), "renew step failed");
                    Outcome::Failed(e)
                }
            }
        };
        let report = StepReport { step, outcome };
        on_step(site, &report);
        steps.push(report);
    }
    SiteReport {
        site: site.clone(),
        steps,
    }
}

/// The socket-side steps of [`plan`] only, for the reaper's self-healing
/// ([`crate::heal`]): reset-failed of both units, start the socket unit,
/// verify it listens; with `restart`, the socket unit is stopped first (the
/// caller does that only while no waker runs behind it). The container,
/// php-fpm's socket and the runtime directory are never touched, so healing
/// cuts no request, not even a warm one of nginx's direct mode.
pub fn socket_plan(cfg: &Config, site: &Site, restart: bool) -> Vec<Step> {
    let socket = cfg.socket_unit.for_site(site);
    let service = cfg.service_unit.for_site(site);
    let mut steps = Vec::with_capacity(5);
    if restart {
        steps.push(Step::StopUnit(socket.clone()));
    }
    steps.extend([
        Step::ResetFailed(socket.clone()),
        Step::ResetFailed(service),
        Step::StartUnit(socket.clone()),
        Step::Verify {
            unit: socket,
            socket: cfg.layout.waker_socket(site),
        },
    ]);
    steps
}

/// Runs `steps` for `site` in order, as [`renew_site`] runs its plan (a
/// failed step does not stop the later ones; `cfg.dry_run` runs none).
pub async fn run_steps(cfg: &Config, engine: &Engine, site: &Site, steps: Vec<Step>) -> SiteReport {
    let mut reports = Vec::with_capacity(steps.len());
    for step in steps {
        let outcome = if cfg.dry_run {
            Outcome::DryRun
        } else {
            match run_step(cfg, engine, site, &step).await {
                Ok(text) => Outcome::Done(text),
                Err(e) => Outcome::Failed(e),
            }
        };
        reports.push(StepReport { step, outcome });
    }
    SiteReport {
        site: site.clone(),
        steps: reports,
    }
}

impl UnitTemplate {
    /// The template as a `systemctl` glob matching every site's unit
    /// (`fleet-waker@*.socket`), for one listing of all of them.
    pub fn pattern(&self) -> String {
        self.0.replace("{site}", "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let site = Site::new("example.com").expect("valid");
        let t = UnitTemplate::new("fleet-waker@{site}.socket").expect("valid");
        assert_eq!(t.for_site(&site), "fleet-waker@example.com.socket");
        assert!(matches!(
            UnitTemplate::new("fleet-waker.socket"),
            Err(TemplateError::NoPlaceholder { .. })
        ));
        assert!(matches!(
            UnitTemplate::new("fleet waker@{site}.socket"),
            Err(TemplateError::BadCharacter { found: ' ', .. })
        ));
        assert!(matches!(
            UnitTemplate::new("x@{site}.socket;rm"),
            Err(TemplateError::BadCharacter { found: ';', .. })
        ));
        assert!(matches!(
            UnitTemplate::new("x@{site}"),
            Err(TemplateError::NoSuffix { .. })
        ));
    }

    #[test]
    fn proc_net_unix() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/docker-apps/a.com/vhost-waker.sock
0000000000000000: 00000002 00000000 00000000 0001 03 12346 /run/docker-apps/b.com/vhost-waker.sock
0000000000000000: 00000003 00000000 00000000 0001 03 12347
0000000000000000: 00000002 00000000 00010000 0001 01 12348 @abstract
0000000000000000: 00000002 00000000 00010000 0001 01 12349 /tmp/with space.sock
garbage line
";
        let entries = parse_proc_net_unix(text);
        assert_eq!(entries.len(), 4);
        assert!(is_listening(
            &entries,
            Path::new("/run/docker-apps/a.com/vhost-waker.sock")
        ));
        assert!(!is_listening(
            &entries,
            Path::new("/run/docker-apps/b.com/vhost-waker.sock")
        ));
        assert!(is_listening(&entries, Path::new("/tmp/with space.sock")));
        assert!(!is_listening(&entries, Path::new("/nowhere")));
    }

    #[test]
    fn plan_order() {
        let site = Site::new("a.example").expect("valid");
        let cfg = Config::new(Layout::default());
        let steps: Vec<String> = plan(&cfg, &site).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            steps,
            [
                "stop fleet-waker@a.example.socket",
                "stop fleet-waker@a.example.service",
                "stop container a.example.fpm",
                "remove stale socket /run/docker-apps/a.example/vhost-waker.sock",
                "make /run/docker-apps/a.example a tmpfs of its own",
                "leave a refusing placeholder at /run/docker-apps/a.example/php-fpm.sock",
                "reset-failed fleet-waker@a.example.socket",
                "reset-failed fleet-waker@a.example.service",
                "start fleet-waker@a.example.socket",
                "verify fleet-waker@a.example.socket is active and /run/docker-apps/a.example/vhost-waker.sock listens",
            ]
        );
    }

    #[test]
    fn real_proc_net_unix_parses() {
        // The running kernel's own table: at least the header parses and no
        // line makes the parser panic.
        if let Ok(text) = std::fs::read_to_string("/proc/net/unix") {
            let _ = parse_proc_net_unix(&text);
        }
    }

    #[test]
    fn stale_socket_removed_live_one_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live.sock");
        let stale = dir.path().join("stale.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let cfg = Config::new(Layout::default());
        assert_eq!(
            remove_if_stale(&cfg, &live).expect("live"),
            "in use; left alone"
        );
        assert!(live.exists());
        assert_eq!(remove_if_stale(&cfg, &stale).expect("stale"), "removed");
        assert!(!stale.exists());
        assert_eq!(remove_if_stale(&cfg, &stale).expect("absent"), "absent");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        assert_eq!(
            remove_if_stale(&cfg, &plain).expect("plain"),
            "not a socket file; left alone"
        );
    }
}
