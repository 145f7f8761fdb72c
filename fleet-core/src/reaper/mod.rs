//! fleet-reaper's pass: put idle sites to sleep.
//!
//! For every `<site>.conf` of the sites directory ([`crate::conf`]) the pass
//! inspects `<site>.fpm`, reads the waker's state file and, only when that
//! does not settle it, asks Docker whether the container logged anything
//! within the site's timeout ([`crate::docker::reap`]). [`decide`] turns
//! that into a [`Verdict`] with a reason. An idle site is stopped (or
//! paused) after the state file has been read once more and the container
//! inspected once more, just before acting.
//!
//! **Invariants.** The pass never starts, unpauses or removes a container and
//! never touches a container other than `<site>.fpm` of a listed, valid
//! site. "Unknown" (a state file or log that cannot be read) never leads to
//! an action. The one file it makes is the refusing placeholder at php-fpm's
//! socket path of a listed site it stopped or found stopped
//! ([`crate::placeholder`]), and only where nothing exists yet. One bad site never stops the others: its problem is reported
//! in its [`SiteReport`] and the pass goes on.
//!
//! Sites are examined concurrently, at most [`Config::jobs`] at a time, all
//! in the caller's task (no spawned tasks to leak). Cancelling the shutdown
//! token stops launching sites and abandons examinations under way; an
//! action already sent to Docker is awaited so its result is reported.
//!
//! Two fleet duties ride on the same pass. **Self-healing** ([`crate::heal`],
//! unless [`Config::heal`] is off): a listed site whose socket unit is failed
//! or not listening gets the socket-side steps of `fleet-renew` (never its
//! container). **The memory guard** ([`crate::memory`], with
//! [`Config::memory_budget`]): once every site is examined, when the awake
//! sites' containers use more than the budget, the least recently active
//! sites quiet for at least [`Config::memory_min_idle`] are stopped, never a
//! busy one, nor one whose status page was not read unless
//! [`Config::proxy_only`] (nothing could drain it), through the same
//! re-check and stop as an idle site.

mod decide;
#[cfg(test)]
mod pinned;
mod report;
mod traffic;

pub use decide::{
    Decision, FpmInput, Inputs, LogInput, StateInput, Verdict, ago, decide, decide_without_logs,
    human, needs_log_check,
};
pub use report::{render_json, render_table};

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conf::{self, SiteListError};
use crate::docker::reap::LogProbe;
use crate::docker::{ContainerInfo, ContainerState, DockerError, Engine};
use crate::drain::{self, SleepLock};
use crate::exit;
use crate::heal::{self, Heal};
use crate::memory;
use crate::placeholder;
use crate::renew;
use crate::site::{Layout, Site};
use crate::state::{self, Activity};

/// Default `--jobs`.
pub const DEFAULT_JOBS: usize = 16;
/// Default `--stop-timeout`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `--stop-timeout`: Docker's stop request must answer within the
/// client's request timeout (120 s), grace included.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(100);
/// Default `--memory-min-idle`: a site used or woken within the last minute
/// is never stopped for memory (it would likely be woken again at once).
pub const DEFAULT_MEMORY_MIN_IDLE: Duration = Duration::from_secs(60);
/// Default `--drain-timeout`: how long the reaper waits for php-fpm to
/// finish what it is serving before it gives up putting the site to sleep.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one status-page request.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do with an idle container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `docker stop` with the grace period (default).
    Stop,
    /// `docker pause`.
    Pause,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Pause => "pause",
        }
    }
}

/// The pass's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub action: Action,
    /// Grace period of a stop before Docker kills.
    pub stop_timeout: Duration,
    /// Sites examined at once (at least 1).
    pub jobs: usize,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Heal listed sites' failed or non-listening socket units.
    pub heal: bool,
    /// Stop the least recently active awake sites while their containers
    /// together use more than this many bytes.
    pub memory_budget: Option<u64>,
    /// The memory guard never stops a site used or started more recently.
    pub memory_min_idle: Duration,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// php-fpm's status page (`pm.status_path`); `None`: never asked.
    pub status_path: Option<String>,
    /// Longest wait for php-fpm to finish its requests before acting.
    pub drain_timeout: Duration,
    /// Tiered sleep for every site whose conf has no line 2: pause after
    /// the conf's timeout, stop after this long idle.
    pub stop_after: Option<Duration>,
    /// nginx only talks to the waker: a site with no status page may still
    /// be put to sleep on the waker's state (and logs) alone.
    pub proxy_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            layout: Layout::default(),
            action: Action::Stop,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            jobs: DEFAULT_JOBS,
            dry_run: false,
            heal: true,
            memory_budget: None,
            memory_min_idle: DEFAULT_MEMORY_MIN_IDLE,
            cgroup_root: PathBuf::from(memory::DEFAULT_CGROUP_ROOT),
            status_path: Some(crate::fpm_status::DEFAULT_STATUS_PATH.to_owned()),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stop_after: None,
            proxy_only: false,
        }
    }
}

/// What was done about an examined site's container. The variants that
/// count as an error of the site carry the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Left alone: not idle.
    None,
    /// Left alone: something could not be read (the verdict is
    /// [`Verdict::Unknown`]), an error of the site.
    Unknown(SiteProblem),
    Stopped,
    Paused,
    /// Dry run: would have stopped.
    WouldStop,
    /// Dry run: would have paused.
    WouldPause,
    /// Chosen at first, but left running on the re-check just before acting.
    Skipped(Skip),
    /// The stop or pause (or what comes just before it) failed.
    Failed(SiteProblem),
    /// Shutdown arrived after the verdict, before the site was acted on:
    /// the one point an examined site looks at the shutdown token.
    Interrupted,
}

/// Why a site chosen for sleep was left running on the re-check just before
/// acting. The reason column is made from it ([`render_table`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The waker held the site lock: a request was at php-fpm through it.
    WakerRequest,
    /// The re-check's verdict was not idle.
    NotIdle { verdict: Verdict, reason: String },
    /// The memory guard's re-check.
    NotQuiet(NotQuiet),
    /// The container is no longer the run that was examined (a wake in
    /// between restarted or unpaused it), as seen at `seen_at`.
    ContainerChanged {
        state: ContainerState,
        started_at: Option<SystemTime>,
        seen_at: SystemTime,
    },
    /// php-fpm was not drained.
    NotDrained(NotDrained),
}

/// Why the memory guard's re-check left a site running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotQuiet {
    /// The re-check's verdict was busy, unknown or not running.
    Verdict { verdict: Verdict, reason: String },
    /// The container has no start time to be quiet since.
    NoStartTime,
    /// Active at `since`, less than `min_idle` before `at`.
    Recent {
        since: SystemTime,
        min_idle: Duration,
        at: SystemTime,
    },
}

/// Why php-fpm was not drained before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDrained {
    /// Still serving requests, or with some queued, after `--drain-timeout`.
    StillServing {
        serving: u64,
        queued: u64,
        timeout: Duration,
    },
    /// Its socket could not be moved aside or its status page read: the
    /// error.
    Failed(String),
    /// Paused with php-fpm's socket in place (not by the reaper, which moves
    /// it aside first): nginx's connections may wait in the frozen backlog,
    /// and a stop would cut them.
    PausedInPlace,
    /// Running with no status page read, without `--proxy-only`: in direct
    /// mode nginx's requests reach php-fpm without the waker, and nothing
    /// tells when php-fpm has finished them.
    NoStatusPage,
}

/// Why the memory guard chose a site: the awake sites' memory over the
/// budget, and the site's last activity as the guard saw it at `at` (a
/// re-check may see a later one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPick {
    pub awake: u64,
    pub budget: u64,
    pub last_activity: Option<SystemTime>,
    pub at: SystemTime,
}

/// Why the memory guard, over its budget, never weighed a site it would
/// otherwise have: the pass's memory, and the site's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLeft {
    pub awake: u64,
    pub budget: u64,
    pub why: MemoryExempt,
}

/// What keeps a site quiet enough for the memory guard out of its choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryExempt {
    /// Running with no status page read, without `--proxy-only`: it could
    /// not be drained before the stop ([`NotDrained::NoStatusPage`]).
    NoStatusPage,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::None | Outcome::Unknown(_) => "none",
            Outcome::Stopped => "stopped",
            Outcome::Paused => "paused",
            Outcome::WouldStop => "would-stop",
            Outcome::WouldPause => "would-pause",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// A problem with one site; the others are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteProblem {
    /// The whole error chain.
    pub message: String,
    /// Docker itself could not be reached.
    pub unreachable: bool,
}

impl SiteProblem {
    pub fn new(err: &(dyn std::error::Error + 'static), unreachable: bool) -> Self {
        SiteProblem {
            message: exit::chain(err),
            unreachable,
        }
    }
}

/// How far a site got before shutdown arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Its examination had not begun.
    NotExamined,
    /// Its examination was abandoned.
    Examining,
}

/// A verdict and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examination {
    /// The examination's verdict (a re-check's that differs is in
    /// [`Skip::NotIdle`]).
    pub verdict: Verdict,
    /// The verdict's reason. What the memory guard or the re-check found is
    /// in [`Examination::memory_pick`] and the [`Outcome`].
    pub reason: String,
    /// The latest activity seen (waker or log).
    pub last_activity: Option<SystemTime>,
    pub outcome: Outcome,
    /// Chosen by the memory guard (not for its idle timeout).
    pub memory_pick: Option<MemoryPick>,
    /// Left out of the memory guard's choice while over its budget.
    pub memory_left: Option<MemoryLeft>,
}

/// What the pass made of one site: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteResult {
    /// An error came before any verdict; the site was left alone.
    Error(SiteProblem),
    /// Shutdown arrived before the site had a verdict.
    Interrupted(Stage),
    /// The site was examined.
    Examined(Examination),
}

/// One line of the plan: what was seen of the site, and its [`SiteResult`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteReport {
    /// The site name, or the file name when it is not a valid site.
    pub site: String,
    /// The conf file.
    #[serde(serialize_with = "report::path")]
    pub conf: PathBuf,
    /// `<site>.fpm`, when the name is valid.
    pub container: Option<String>,
    /// The container's state when examined (or found on the re-check).
    pub state: Option<ContainerState>,
    /// The container's id (for its cgroup).
    #[serde(skip)]
    pub container_id: Option<String>,
    /// The waker's state file as last read.
    #[serde(flatten, serialize_with = "report::activity")]
    pub activity: Option<Activity>,
    /// The container's memory, when the memory guard measured it.
    #[serde(rename = "memory_bytes")]
    pub memory: Option<u64>,
    /// What self-healing found and did; `None` when it did not look.
    pub heal: Option<Heal>,
    #[serde(serialize_with = "report::unix_opt")]
    pub started_at: Option<SystemTime>,
    /// The site's idle timeout.
    #[serde(rename = "timeout_secs", serialize_with = "report::secs_opt")]
    pub timeout: Option<Duration>,
    /// The log check, when it was made.
    #[serde(flatten, serialize_with = "report::log")]
    pub log: Option<LogProbe>,
    /// When the site was examined.
    #[serde(serialize_with = "report::unix")]
    pub examined_at: SystemTime,
    /// Time spent on the site, action included.
    #[serde(rename = "elapsed_secs", serialize_with = "report::secs")]
    pub elapsed: Duration,
    /// Its JSON keys (`verdict`, `reason`, `action`, `error`, ...) are added
    /// by [`render_json`]: `last_activity_ago_secs` needs `examined_at` too.
    #[serde(skip)]
    pub result: SiteResult,
}

impl SiteReport {
    /// A site not examined yet: what it is should the pass stop now.
    pub(crate) fn new(site: String, conf: PathBuf) -> Self {
        SiteReport {
            site,
            conf,
            container: None,
            state: None,
            container_id: None,
            activity: None,
            memory: None,
            heal: None,
            started_at: None,
            timeout: None,
            log: None,
            examined_at: SystemTime::now(),
            elapsed: Duration::ZERO,
            result: SiteResult::Interrupted(Stage::NotExamined),
        }
    }

    /// The examination, when the site got a verdict.
    pub fn examination(&self) -> Option<&Examination> {
        match &self.result {
            SiteResult::Examined(e) => Some(e),
            SiteResult::Error(_) | SiteResult::Interrupted(_) => None,
        }
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.examination().map(|e| &e.outcome)
    }

    pub fn last_activity(&self) -> Option<SystemTime> {
        self.examination().and_then(|e| e.last_activity)
    }

    pub fn memory_stop(&self) -> bool {
        self.examination().is_some_and(|e| e.memory_pick.is_some())
    }

    /// The site's error, if it has one.
    pub fn problem(&self) -> Option<&SiteProblem> {
        match &self.result {
            SiteResult::Error(p) => Some(p),
            SiteResult::Examined(Examination {
                outcome: Outcome::Unknown(p) | Outcome::Failed(p),
                ..
            }) => Some(p),
            SiteResult::Examined(_) | SiteResult::Interrupted(_) => None,
        }
    }

    /// Shutdown arrived before the site was done with.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self.result,
            SiteResult::Interrupted(_)
                | SiteResult::Examined(Examination {
                    outcome: Outcome::Interrupted,
                    ..
                })
        )
    }

    /// The site counts as an error (exit code 1): a problem, or a socket
    /// unit that needed healing and is not healed.
    pub fn is_error(&self) -> bool {
        self.problem().is_some() || self.heal.as_ref().is_some_and(|h| h.status.is_error())
    }

    /// The container's state after the pass: what was examined, or what the
    /// pass made it.
    pub fn state_after(&self) -> Option<ContainerState> {
        match self.outcome() {
            Some(Outcome::Stopped) => Some(ContainerState::Exited),
            Some(Outcome::Paused) => Some(ContainerState::Paused),
            _ => self.state,
        }
    }
}

/// Whether self-healing ran this pass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum HealMode {
    /// `--no-heal`.
    Off,
    /// systemd is not the system manager here: there is no socket unit.
    NoSystemd,
    /// Every listed site was looked at (each [`SiteReport::heal`]).
    Checked,
    /// The units could not be listed: no site was looked at.
    Failed { error: String },
}

/// What the memory guard found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemorySummary {
    #[serde(rename = "budget_bytes")]
    pub budget: u64,
    /// The awake sites' containers before the guard acted.
    #[serde(rename = "awake_before_bytes")]
    pub awake_before: u64,
    /// After it (or, in a dry run, after what it would do).
    #[serde(rename = "awake_after_bytes")]
    pub awake_after: u64,
    /// Awake sites whose memory could not be read (not counted).
    pub unreadable: usize,
}

/// The result of a pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub action: Action,
    pub dry_run: bool,
    /// Shutdown arrived during the pass.
    pub interrupted: bool,
    /// One entry per `*.conf` file, sorted by site.
    #[serde(serialize_with = "report::sites")]
    pub sites: Vec<SiteReport>,
    #[serde(rename = "elapsed_secs", serialize_with = "report::secs")]
    pub elapsed: Duration,
    pub heal: HealMode,
    /// With a memory budget.
    pub memory: Option<MemorySummary>,
    /// When the pass ended.
    #[serde(skip)]
    pub finished_at: SystemTime,
}

impl Report {
    /// The exit code: 75 interrupted, 69 Docker unreachable, 1 any site
    /// error, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            exit::TEMPFAIL
        } else if self
            .sites
            .iter()
            .any(|s| s.problem().is_some_and(|p| p.unreachable))
        {
            exit::UNAVAILABLE
        } else if self.sites.iter().any(SiteReport::is_error)
            || matches!(self.heal, HealMode::Failed { .. })
        {
            exit::FAILURE
        } else {
            exit::OK
        }
    }
}

/// A pass that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("cannot list the sites")]
    Sites(#[source] SiteListError),
    #[error("cannot examine any site")]
    Docker(#[source] DockerError),
}

impl PassError {
    /// Exit code: 64 for an unreadable sites directory (a bad `--sites-dir`),
    /// 69 when Docker cannot be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            PassError::Sites(_) => exit::USAGE,
            PassError::Docker(e) if e.is_unreachable() => exit::UNAVAILABLE,
            PassError::Docker(_) => exit::FAILURE,
        }
    }
}

/// Runs one pass over the sites directory.
pub async fn run(
    engine: &Engine,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Report, PassError> {
    let started = Instant::now();
    let list = conf::list_sites(&config.layout.sites_dir).map_err(PassError::Sites)?;
    if list.missing {
        // One line per pass, at warning level: the pass succeeds (nothing is
        // listed, so nothing is idle), and the admin learns which path is read.
        warn!(
            sites_dir = %config.layout.sites_dir.display(),
            "the sites directory does not exist, so no site is on the on-demand list; \
             create it (mkdir -p) or point --sites-dir / FLEET_SITES_DIR at your list"
        );
    }
    let mut sites = Vec::with_capacity(list.sites.len() + list.errors.len());
    for err in list.errors {
        let path = err.path().to_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        warn!(path = %path.display(), error = %exit::chain(&err), "bad entry in the sites directory");
        let mut r = SiteReport::new(name, path);
        r.result = SiteResult::Error(SiteProblem::new(&err, false));
        sites.push(r);
    }
    if !list.sites.is_empty() && !shutdown.is_cancelled() {
        // Connect once up front: an unreachable engine is one clear error
        // (exit 69), not one per site.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            r = engine.client() => { r.map_err(PassError::Docker)?; }
        }
    }
    let renew_cfg = heal::renew_config(&config.layout, config.dry_run);
    let (heal_mode, snapshot) = heal_snapshot(config, &renew_cfg, !list.sites.is_empty()).await;
    let healing = snapshot.as_ref().map(|s| (s, &renew_cfg));
    let jobs = config.jobs.max(1);
    let mut examined: Vec<Examined> = futures_util::stream::iter(list.sites)
        .map(|(site, path)| reap_site(engine, config, shutdown, healing, site, path))
        .buffer_unordered(jobs)
        .collect()
        .await;
    let memory = match config.memory_budget {
        Some(budget) if !shutdown.is_cancelled() => {
            Some(memory_guard(engine, config, shutdown, &mut examined, budget).await)
        }
        _ => None,
    };
    sites.extend(examined.into_iter().map(|e| e.report));
    sites.sort_by(|a, b| a.site.cmp(&b.site).then_with(|| a.conf.cmp(&b.conf)));
    let interrupted = shutdown.is_cancelled() || sites.iter().any(SiteReport::is_interrupted);
    Ok(Report {
        action: config.action,
        dry_run: config.dry_run,
        interrupted,
        sites,
        elapsed: started.elapsed(),
        heal: heal_mode,
        memory,
        finished_at: SystemTime::now(),
    })
}

/// A site after its examination: the report, and what the verdict was made
/// from (for the memory guard).
struct Examined {
    report: SiteReport,
    site: Option<Site>,
    inputs: Option<Inputs>,
}

/// The pass's one look at systemd for self-healing.
async fn heal_snapshot(
    config: &Config,
    renew_cfg: &renew::Config,
    any_site: bool,
) -> (HealMode, Option<heal::Snapshot>) {
    if !config.heal {
        return (HealMode::Off, None);
    }
    if !heal::systemd_booted() {
        debug!("systemd is not the system manager here: no socket unit to heal");
        return (HealMode::NoSystemd, None);
    }
    if !any_site {
        return (HealMode::Checked, None);
    }
    match heal::snapshot(renew_cfg).await {
        Ok(s) => (HealMode::Checked, Some(s)),
        Err(e) => {
            let message = exit::chain(&e);
            warn!(error = %message, "cannot list the socket units; no site healed this pass");
            (HealMode::Failed { error: message }, None)
        }
    }
}

/// The host memory guard: measures the awake sites' containers and, over
/// the budget, stops the least recently active idle-enough ones.
async fn memory_guard(
    engine: &Engine,
    config: &Config,
    shutdown: &CancellationToken,
    examined: &mut [Examined],
    budget: u64,
) -> MemorySummary {
    let now = SystemTime::now();
    let mut total = 0u64;
    let mut unreadable = 0usize;
    let mut candidates = Vec::new();
    let mut exempt = Vec::new();
    for (index, e) in examined.iter_mut().enumerate() {
        let r = &mut e.report;
        if r.state_after() != Some(ContainerState::Running)
            || matches!(r.outcome(), Some(Outcome::WouldStop | Outcome::WouldPause))
        {
            continue;
        }
        let Some(id) = r.container_id.as_deref() else {
            continue;
        };
        let bytes = match memory::container_memory(&config.cgroup_root, id) {
            Ok(b) => b,
            Err(err) => {
                unreadable += 1;
                warn!(site = %r.site, error = %exit::chain(&err), "cannot read the container's memory; not counted, never stopped for memory");
                continue;
            }
        };
        r.memory = Some(bytes);
        total = total.saturating_add(bytes);
        let eligible = match (r.examination(), e.inputs.as_ref()) {
            (Some(ex), Some(i)) => memory_eligibility(ex, i),
            _ => Eligibility::Never,
        };
        if let Eligibility::Exempt(why) = eligible {
            exempt.push((index, why, bytes));
        }
        let eligible = eligible == Eligibility::Candidate;
        let times = e.inputs.as_ref().and_then(|i| {
            let started = i.started_at?;
            let last = i.last_activity();
            Some((
                last.unwrap_or(started),
                last.map_or(started, |a| a.max(started)),
            ))
        });
        if let (true, Some((last_active, quiet_since))) = (eligible, times) {
            candidates.push(memory::Candidate {
                index,
                bytes,
                last_active,
                quiet_since,
            });
        }
    }
    let (chosen, _) = memory::choose(candidates, total, budget, now, config.memory_min_idle);
    if total > budget {
        info!(
            awake = %memory::human_size(total),
            budget = %memory::human_size(budget),
            to_stop = chosen.len(),
            exempt = exempt.len(),
            "awake sites use more memory than the budget"
        );
        // Stopping every candidate cannot reach a budget these alone exceed:
        // the admin's to fix (a status page, or a larger budget).
        let exempt_bytes = exempt.iter().map(|(_, _, b)| b).sum::<u64>();
        if exempt_bytes > budget {
            warn!(
                exempt = %memory::human_size(exempt_bytes),
                budget = %memory::human_size(budget),
                sites = exempt.len(),
                "sites the memory guard may not stop use more than the budget alone; every quiet site it may stop is stopped and the budget is still not met"
            );
        }
        for (index, why, _) in exempt {
            let r = &mut examined[index].report;
            debug!(site = %r.site, reason = ?why, "not a memory guard candidate");
            if let SiteResult::Examined(ex) = &mut r.result {
                ex.memory_left = Some(MemoryLeft {
                    awake: total,
                    budget,
                    why,
                });
            }
        }
    }
    let jobs = config.jobs.max(1);
    futures_util::stream::iter(
        examined
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| chosen.contains(i))
            .map(|(_, e)| e),
    )
    .map(|e| async move {
        let (Some(site), Some(inputs)) = (e.site.clone(), e.inputs.clone()) else {
            return;
        };
        let r = &mut e.report;
        let SiteResult::Examined(ex) = &mut r.result else {
            return;
        };
        ex.memory_pick = Some(MemoryPick {
            awake: total,
            budget,
            last_activity: inputs.last_activity(),
            at: now,
        });
        let container = site.container();
        let recheck = Recheck::Memory {
            min_idle: config.memory_min_idle,
        };
        act(
            engine,
            config,
            shutdown,
            &site,
            &container,
            inputs,
            &mut r.state,
            ex,
            recheck,
        )
        .await;
    })
    .buffer_unordered(jobs)
    .collect::<Vec<()>>()
    .await;
    let freed: u64 = examined
        .iter()
        .filter(|e| {
            e.report.memory_stop()
                && matches!(
                    e.report.outcome(),
                    Some(Outcome::Stopped | Outcome::WouldStop)
                )
        })
        .filter_map(|e| e.report.memory)
        .sum();
    MemorySummary {
        budget,
        awake_before: total,
        awake_after: total.saturating_sub(freed),
        unreadable,
    }
}

/// Whether the memory guard may weigh a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eligibility {
    Candidate,
    /// Busy, unknown, asleep, or acted on or skipped already this pass.
    Never,
    /// Quiet enough, but it could not be stopped safely.
    Exempt(MemoryExempt),
}

/// The memory guard's choice of candidates, from a site's examination and
/// what it was made from. Pure.
fn memory_eligibility(ex: &Examination, inputs: &Inputs) -> Eligibility {
    let quiet = matches!(
        ex,
        Examination {
            outcome: Outcome::None,
            verdict: Verdict::ActiveWaker
                | Verdict::ActiveLogs
                | Verdict::ActiveFpm
                | Verdict::Young,
            ..
        }
    );
    if !quiet {
        Eligibility::Never
    } else if !inputs.proxy_only && !matches!(inputs.fpm, FpmInput::Read { .. }) {
        // Young, or active through the waker or the log, says nothing of
        // the requests nginx's direct mode sends straight to php-fpm.
        Eligibility::Exempt(MemoryExempt::NoStatusPage)
    } else {
        Eligibility::Candidate
    }
}

/// Reads the state file into a [`StateInput`] and tells whether its waker lives.
fn read_state(layout: &Layout, site: &Site) -> (StateInput, Option<bool>) {
    match state::load(&layout.state_file(site)) {
        Ok(None) => (StateInput::Missing, None),
        Ok(Some(a)) => {
            let alive = a.pid.and_then(process_alive);
            (StateInput::Read(a), alive)
        }
        Err(e) => (StateInput::Unreadable(exit::chain(&e)), None),
    }
}

/// Whether process `pid` exists (signal 0). `None` when it cannot be told.
fn process_alive(pid: u32) -> Option<bool> {
    let pid = i32::try_from(pid).ok().filter(|&p| p > 0)?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(true),
        Err(nix::errno::Errno::ESRCH) => Some(false),
        Err(_) => None,
    }
}

/// Examines and, when idle, acts on one site. Never fails: problems go into
/// the report.
async fn reap_site(
    engine: &Engine,
    config: &Config,
    shutdown: &CancellationToken,
    healing: Option<(&heal::Snapshot, &renew::Config)>,
    site: Site,
    path: PathBuf,
) -> Examined {
    let mut r = SiteReport::new(site.to_string(), path);
    let inputs = reap_site_inner(engine, config, shutdown, healing, &site, &mut r).await;
    Examined {
        report: r,
        site: Some(site),
        inputs,
    }
}

async fn reap_site_inner(
    engine: &Engine,
    config: &Config,
    shutdown: &CancellationToken,
    healing: Option<(&heal::Snapshot, &renew::Config)>,
    site: &Site,
    r: &mut SiteReport,
) -> Option<Inputs> {
    let started = Instant::now();
    let container = site.container();
    r.container = Some(container.clone());
    if let Err(e) = config.layout.check_socket_paths(site) {
        warn!(site = %site, error = %e, "site refused");
        r.result = SiteResult::Error(SiteProblem::new(&e, false));
        return None;
    }
    if shutdown.is_cancelled() {
        return None; // the report says "not examined" from the start
    }
    if let Some((snapshot, renew_cfg)) = healing {
        // First, so a dark site listens again as soon as possible; only the
        // socket side is touched, whatever the verdict below.
        let h = heal::heal_site(renew_cfg, engine, snapshot, site).await;
        match h.status {
            heal::HealStatus::Healed => {
                warn!(site = %site, detail = %h.detail, "socket unit healed");
            }
            s if s.is_error() => {
                warn!(site = %site, status = s.as_str(), detail = %h.detail, "socket unit not healed");
            }
            heal::HealStatus::Ok => {}
            s => info!(site = %site, status = s.as_str(), detail = %h.detail, "socket unit"),
        }
        r.heal = Some(h);
    }
    let examined = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        e = examine(engine, config, site, &container, r) => Some(e),
    };
    let (inputs, log_problem) = match examined {
        None => {
            r.result = SiteResult::Interrupted(Stage::Examining);
            r.elapsed = started.elapsed();
            return None;
        }
        Some(Err(problem)) => {
            r.result = SiteResult::Error(problem);
            r.elapsed = started.elapsed();
            return None;
        }
        Some(Ok(examined)) => examined,
    };
    let d = decide(&inputs);
    let outcome = if d.verdict == Verdict::Unknown {
        // Something could not be read: an error of this site (exit 1), even
        // though the site is safely left alone.
        warn!(site = %site, container = %container, reason = %d.reason, "unknown; site left alone");
        Outcome::Unknown(log_problem.unwrap_or_else(|| SiteProblem {
            message: d.reason.clone(),
            unreachable: false,
        }))
    } else {
        // The plan has a row per site; one line a site a minute would flood the journal.
        debug!(site = %site, container = %container, verdict = %d.verdict, reason = %d.reason, "examined");
        Outcome::None
    };
    let mut ex = Examination {
        verdict: d.verdict,
        reason: d.reason,
        last_activity: inputs.last_activity(),
        outcome,
        memory_pick: None,
        memory_left: None,
    };
    if d.verdict == Verdict::Idle {
        act(
            engine,
            config,
            shutdown,
            site,
            &container,
            inputs.clone(),
            &mut r.state,
            &mut ex,
            Recheck::Idle,
        )
        .await;
    } else if matches!(
        inputs.container,
        ContainerState::Exited | ContainerState::Created
    ) && !config.dry_run
    {
        // Asleep but not by this reaper (never started, stopped by hand, or
        // the host rebooted and /run is empty): give it the placeholder too.
        // A socket left aside by an interrupted pass is dead now.
        if let Err(e) = drain::discard_aside(&config.layout.fpm_socket(site)) {
            warn!(site = %site, error = %exit::chain(&e), "cannot remove the socket aside");
        }
        leave_placeholder(config, site);
    }
    r.result = SiteResult::Examined(ex);
    r.elapsed = started.elapsed();
    Some(inputs)
}

/// After a stop, or for a site found stopped: a refusing socket file at
/// php-fpm's socket path, so that nginx in direct mode logs the fallback to
/// the waker at `error`, not `crit` (see [`placeholder`]). Best effort: a
/// failure is a warning and changes nothing else.
///
/// It runs right after Docker reported the container stopped. php-fpm
/// replaces the file at its next start (unlink, then bind); a wake that
/// started the container at the same moment would need php-fpm to reach that
/// unlink within the microseconds between Docker's answer and this bind,
/// while a container start takes far longer.
fn leave_placeholder(config: &Config, site: &Site) {
    let path = config.layout.fpm_socket(site);
    match placeholder::ensure(&path) {
        Ok(placeholder::Placed::Created) => {
            debug!(site = %site, path = %path.display(), "left a refusing placeholder at php-fpm's socket path");
        }
        Ok(placeholder::Placed::Exists) => {}
        Err(e) => {
            warn!(site = %site, error = %exit::chain(&e), "no placeholder socket; nginx in direct mode logs this site's next wake at crit");
        }
    }
}

/// Reads everything the verdict needs, and the log check's problem when it
/// failed (the verdict is then unknown). `Err` when the site failed before.
async fn examine(
    engine: &Engine,
    config: &Config,
    site: &Site,
    container: &str,
    r: &mut SiteReport,
) -> Result<(Inputs, Option<SiteProblem>), SiteProblem> {
    let site_conf = match conf::load_conf(&r.conf) {
        Ok(t) => t,
        Err(e) => {
            warn!(site = %site, error = %exit::chain(&e), "bad conf file; site left alone");
            return Err(SiteProblem::new(&e, false));
        }
    };
    let timeout = site_conf.timeout;
    r.timeout = Some(timeout);
    let info = match engine.inspect(container).await {
        Ok(info) => info,
        Err(e) => {
            warn!(site = %site, container = %container, error = %exit::chain(&e), "cannot inspect");
            return Err(SiteProblem::new(&e, e.is_unreachable()));
        }
    };
    r.state = Some(info.state);
    r.started_at = info.started_at;
    r.container_id = Some(info.id.clone()).filter(|id| !id.is_empty());
    let (state, waker_alive) = read_state(&config.layout, site);
    if let StateInput::Read(a) = &state {
        r.activity = Some(*a);
    }
    let (fpm, fpm_traffic) = read_fpm(config, site, info.state, info.started_at).await;
    let now = SystemTime::now();
    r.examined_at = now;
    let mut inputs = Inputs {
        now,
        timeout,
        container: info.state,
        started_at: info.started_at,
        state,
        waker_alive,
        log: LogInput::NotChecked,
        fpm,
        fpm_traffic,
        stop_after: site_conf.stop_after.or(config.stop_after),
        proxy_only: config.proxy_only,
    };
    let mut log_problem = None;
    if needs_log_check(&inputs) {
        match engine.last_log_after(container, inputs.cutoff()).await {
            Ok(probe) => {
                r.log = Some(probe);
                inputs.log = LogInput::Checked {
                    after_cutoff: probe.after_cutoff,
                    line_at: probe.line_at,
                };
            }
            Err(e) => {
                let message = exit::chain(&e);
                warn!(site = %site, container = %container, error = %message, "cannot read the log; site will not be stopped");
                log_problem = Some(SiteProblem {
                    message: message.clone(),
                    unreachable: e.is_unreachable(),
                });
                inputs.log = LogInput::Failed(message);
            }
        }
    }
    Ok((inputs, log_problem))
}

/// Reads php-fpm's status page of a running container and updates the
/// record kept across passes ([`traffic`]); for any other state only the
/// record's last traffic.
async fn read_fpm(
    config: &Config,
    site: &Site,
    state: ContainerState,
    started_at: Option<SystemTime>,
) -> (FpmInput, Option<SystemTime>) {
    let path = config.layout.fpm_record(site);
    let prev = traffic::load(&path);
    if state != ContainerState::Running {
        return (FpmInput::NotChecked, prev.and_then(|p| p.traffic));
    }
    let Some(status_path) = config.status_path.as_deref() else {
        return (
            FpmInput::Unavailable("not asked (--status-path is empty)".to_owned()),
            None,
        );
    };
    let socket = config.layout.fpm_socket(site);
    match crate::fpm_status::query(&socket, status_path, STATUS_TIMEOUT).await {
        Ok(st) => {
            let first = prev
                .as_ref()
                .is_none_or(|p| !traffic::same_run(p, started_at));
            let rec = traffic::observe(
                prev.as_ref(),
                started_at,
                st.accepted_conn,
                1,
                SystemTime::now(),
            );
            remember(config, site, &rec);
            (
                FpmInput::Read {
                    busy: st.active_processes.saturating_sub(1),
                    queued: st.listen_queue,
                    first,
                },
                rec.traffic,
            )
        }
        Err(e) => {
            let message = exit::chain(&e);
            debug!(site = %site, error = %message, "no status page");
            (FpmInput::Unavailable(message), None)
        }
    }
}

/// Keeps php-fpm's counter for the next pass, `--dry-run` too: the record is
/// the reaper's memory, not an action, and a dry run that forgot its own
/// status request would make the next pass see it as traffic.
fn remember(config: &Config, site: &Site, rec: &traffic::Record) {
    let path = config.layout.fpm_record(site);
    if let Err(e) = traffic::store(&path, rec) {
        warn!(site = %site, path = %path.display(), error = ?e, "cannot keep php-fpm's counter; its next reading counts as traffic");
    }
}

/// Why a site is acted on, and so what the re-check before acting asks.
#[derive(Debug, Clone, Copy)]
enum Recheck {
    /// Idle for its timeout: still idle ([`decide`]).
    Idle,
    /// Chosen by the memory guard: still not busy, nothing unreadable, and
    /// quiet for `min_idle`. Always a stop: a paused container keeps its
    /// memory.
    Memory { min_idle: Duration },
}

/// The memory guard's re-check: `Err(why not)` when the site must be left.
fn memory_recheck(inputs: &Inputs, min_idle: Duration) -> Result<(), NotQuiet> {
    let d = decide(inputs);
    if matches!(
        d.verdict,
        Verdict::Busy | Verdict::Unknown | Verdict::NotRunning
    ) {
        return Err(NotQuiet::Verdict {
            verdict: d.verdict,
            reason: d.reason,
        });
    }
    let quiet_since = match (inputs.started_at, inputs.last_activity()) {
        (Some(s), Some(a)) => s.max(a),
        (Some(s), None) => s,
        (None, _) => return Err(NotQuiet::NoStartTime),
    };
    match inputs.now.duration_since(quiet_since) {
        Ok(q) if q >= min_idle => Ok(()),
        _ => Err(NotQuiet::Recent {
            since: quiet_since,
            min_idle,
            at: inputs.now,
        }),
    }
}

/// Stops or pauses a site after re-checking it: sets `ex`'s outcome (and
/// `examined_state` when the container changed since it was examined).
#[allow(clippy::too_many_arguments)]
async fn act(
    engine: &Engine,
    config: &Config,
    shutdown: &CancellationToken,
    site: &Site,
    container: &str,
    mut inputs: Inputs,
    examined_state: &mut Option<ContainerState>,
    r: &mut Examination,
    recheck: Recheck,
) {
    let action = match recheck {
        Recheck::Idle if inputs.stop_not_pause(config.action == Action::Stop) => Action::Stop,
        Recheck::Idle => Action::Pause,
        Recheck::Memory { .. } => Action::Stop,
    };
    if config.dry_run {
        r.outcome = match action {
            Action::Stop => Outcome::WouldStop,
            Action::Pause => Outcome::WouldPause,
        };
        return;
    }
    if shutdown.is_cancelled() {
        r.outcome = Outcome::Interrupted;
        return;
    }
    // The site lock first: from here on no request of the waker's is at
    // php-fpm, and any that arrives waits until the site is asleep.
    let lock = match SleepLock::try_take(&config.layout.lock_file(site)) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            info!(site = %site, "a request is at php-fpm through the waker; left running");
            r.outcome = Outcome::Skipped(Skip::WakerRequest);
            return;
        }
        Err(e) => {
            warn!(site = %site, error = %exit::chain(&e), "no site lock; left running");
            r.outcome = Outcome::Failed(SiteProblem::new(&e, false));
            return;
        }
    };
    // Re-read the state file just before acting: a connection that arrived
    // during the examination keeps the site awake.
    let (state, waker_alive) = read_state(&config.layout, site);
    inputs.state = state;
    inputs.waker_alive = waker_alive;
    inputs.now = SystemTime::now();
    if let Recheck::Memory { min_idle } = recheck {
        if let Err(why) = memory_recheck(&inputs, min_idle) {
            info!(site = %site, reason = ?why, "not idle enough on re-check; left running");
            r.last_activity = inputs.last_activity();
            r.outcome = Outcome::Skipped(Skip::NotQuiet(why));
            return;
        }
    }
    let again = decide(&inputs);
    if matches!(recheck, Recheck::Idle) && again.verdict != Verdict::Idle {
        info!(site = %site, verdict = %again.verdict, reason = %again.reason, "not idle on re-check; left running");
        r.last_activity = inputs.last_activity();
        r.outcome = Outcome::Skipped(Skip::NotIdle {
            verdict: again.verdict,
            reason: again.reason,
        });
        return;
    }
    // The same container run as examined? (A wake in between restarts it.)
    match engine.inspect(container).await {
        Ok(ContainerInfo {
            state: s @ (ContainerState::Running | ContainerState::Paused),
            started_at,
            ..
        }) if s == inputs.container && started_at == inputs.started_at => {}
        Ok(info) => {
            *examined_state = Some(info.state);
            r.outcome = Outcome::Skipped(Skip::ContainerChanged {
                state: info.state,
                started_at: info.started_at,
                seen_at: SystemTime::now(),
            });
            return;
        }
        Err(e) => {
            r.outcome = Outcome::Failed(SiteProblem::new(&e, e.is_unreachable()));
            return;
        }
    }
    let socket = config.layout.fpm_socket(site);
    if inputs.container == ContainerState::Paused
        && !config.proxy_only
        && drain::paused_in_place(&socket)
    {
        info!(site = %site, "paused with php-fpm's socket in place; not stopped");
        r.outcome = Outcome::Skipped(Skip::NotDrained(NotDrained::PausedInPlace));
        return;
    }
    if inputs.container == ContainerState::Running {
        if let Err(why) = steer_and_drain(config, site, &socket, &inputs).await {
            put_back(site, &socket);
            info!(site = %site, reason = ?why, "not drained; left running");
            r.outcome = Outcome::Skipped(Skip::NotDrained(why));
            return;
        }
    }
    let result = match action {
        Action::Stop => engine.stop(container, config.stop_timeout).await,
        Action::Pause => engine.pause(container).await,
    };
    match result {
        Ok(()) => {
            r.outcome = match action {
                Action::Stop => Outcome::Stopped,
                Action::Pause => Outcome::Paused,
            };
            info!(site = %site, container = %container, action = action.as_str(), reason = %r.reason, memory_guard = r.memory_pick.is_some(), "container put to sleep");
            if action == Action::Stop {
                // php-fpm is gone: what is aside is dead.
                if let Err(e) = drain::discard_aside(&socket) {
                    warn!(site = %site, error = %exit::chain(&e), "cannot remove the socket aside");
                }
                leave_placeholder(config, site);
            }
        }
        Err(e) => {
            warn!(site = %site, container = %container, error = %exit::chain(&e), "action failed");
            put_back(site, &socket);
            r.outcome = Outcome::Failed(SiteProblem::new(&e, e.is_unreachable()));
        }
    }
    drop(lock);
}

/// Steers new connections away from php-fpm and waits until it has
/// nothing in progress or queued ([`drain`]). `Err(why)` when it does not
/// drain within `--drain-timeout`, or php-fpm's socket cannot be moved.
async fn steer_and_drain(
    config: &Config,
    site: &Site,
    socket: &std::path::Path,
    inputs: &Inputs,
) -> Result<(), NotDrained> {
    let failed = |e: &(dyn std::error::Error + 'static)| NotDrained::Failed(exit::chain(e));
    let status_path = drain_status_path(
        &inputs.fpm,
        config.status_path.as_deref(),
        config.proxy_only,
    )?;
    match drain::move_aside(socket) {
        Ok(drain::Moved::Aside) => {
            // nginx's next connect is refused (and logged at error, not
            // crit) and falls back to the waker, which waits for us.
            if let Err(e) = placeholder::ensure(socket) {
                warn!(site = %site, error = %exit::chain(&e), "no placeholder socket; nginx in direct mode logs the fallback at crit");
            }
        }
        Ok(moved) => debug!(site = %site, ?moved, "php-fpm's socket was not there to move"),
        Err(e) => return Err(failed(&e)),
    }
    let Some(status_path) = status_path else {
        // --proxy-only: the site lock is the drain, since nginx does not
        // talk to php-fpm directly.
        return Ok(());
    };
    let aside = drain::aside_path(socket);
    let started = Instant::now();
    let mut queries = 0u64;
    let mut watch = drain::DrainWatch::default();
    loop {
        let asked = Instant::now();
        queries += 1;
        let next = crate::fpm_status::query(&aside, status_path, STATUS_TIMEOUT)
            .await
            .map_err(|e| failed(&e))?;
        let (accepted, serving, queued) = (
            next.accepted_conn,
            next.active_processes.saturating_sub(1),
            next.listen_queue,
        );
        if watch.observe(next, asked, Instant::now()) {
            // The counter since the examination's reading: growth beyond
            // our own requests is traffic that came meanwhile (served, as
            // the drain waited for it), dated now.
            let rec = traffic::observe(
                traffic::load(&config.layout.fpm_record(site)).as_ref(),
                inputs.started_at,
                accepted,
                queries,
                SystemTime::now(),
            );
            remember(config, site, &rec);
            debug!(site = %site, ms = started.elapsed().as_millis() as u64, "php-fpm drained");
            return Ok(());
        }
        if queries > 1 && started.elapsed() >= config.drain_timeout {
            return Err(NotDrained::StillServing {
                serving,
                queued,
                timeout: config.drain_timeout,
            });
        }
        // Every pair spans the gap, the first one too: a connection a
        // worker accepted just before a reading shows in the next one.
        tokio::time::sleep(drain::DRAIN_GAP).await;
    }
}

/// The status page a running site is drained by: `Ok(None)` (the site lock
/// alone) only with `--proxy-only`. Without a reading this pass, and nginx
/// free to connect to php-fpm, a stop or pause could cut a request nobody
/// saw. Pure.
fn drain_status_path<'a>(
    fpm: &FpmInput,
    status_path: Option<&'a str>,
    proxy_only: bool,
) -> Result<Option<&'a str>, NotDrained> {
    match (fpm, status_path) {
        (FpmInput::Read { .. }, Some(path)) => Ok(Some(path)),
        _ if proxy_only => Ok(None),
        _ => Err(NotDrained::NoStatusPage),
    }
}

/// Undoes [`steer_and_drain`]'s move when the site stays awake.
fn put_back(site: &Site, socket: &std::path::Path) {
    match drain::restore(socket) {
        Ok(drain::Restored::Nothing | drain::Restored::Back) => {}
        Ok(other) => {
            warn!(site = %site, result = ?other, "php-fpm's socket aside was not put back")
        }
        Err(e) => warn!(site = %site, error = %exit::chain(&e), "cannot put php-fpm's socket back"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_live_and_gone_processes() {
        assert_eq!(process_alive(std::process::id()), Some(true));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(process_alive(pid), Some(false));
        assert_eq!(process_alive(0), None, "0 would mean our process group");
        assert_eq!(process_alive(u32::MAX), None, "-1 would mean every process");
    }

    /// A running site examined as young (started within its timeout).
    fn young(fpm: FpmInput, proxy_only: bool) -> (Examination, Inputs) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_462_970);
        let inputs = Inputs {
            now,
            timeout: Duration::from_secs(3600),
            container: ContainerState::Running,
            started_at: Some(now - Duration::from_secs(120)),
            state: StateInput::Missing,
            waker_alive: None,
            log: LogInput::NotChecked,
            fpm,
            fpm_traffic: None,
            stop_after: None,
            proxy_only,
        };
        let d = decide(&inputs);
        assert_eq!(d.verdict, Verdict::Young, "{d:?}");
        let ex = Examination {
            verdict: d.verdict,
            reason: d.reason,
            last_activity: None,
            outcome: Outcome::None,
            memory_pick: None,
            memory_left: None,
        };
        (ex, inputs)
    }

    const READ: FpmInput = FpmInput::Read {
        busy: 0,
        queued: 0,
        first: false,
    };

    /// In direct mode a site with no status page is young (or active through
    /// the waker or its log) whatever nginx sends straight to php-fpm: the
    /// memory guard never chooses it, since nothing could drain it.
    #[test]
    fn memory_guard_needs_a_status_reading_unless_proxy_only() {
        let none = || FpmInput::Unavailable("404".into());
        let (ex, i) = young(none(), false);
        assert_eq!(
            memory_eligibility(&ex, &i),
            Eligibility::Exempt(MemoryExempt::NoStatusPage)
        );
        let (ex, i) = young(none(), true);
        assert_eq!(memory_eligibility(&ex, &i), Eligibility::Candidate);
        let (ex, i) = young(READ, false);
        assert_eq!(memory_eligibility(&ex, &i), Eligibility::Candidate);
        // Busy is never a candidate, status page or not.
        let (mut ex, i) = young(none(), false);
        ex.verdict = Verdict::Busy;
        assert_eq!(memory_eligibility(&ex, &i), Eligibility::Never);
        let (mut ex, i) = young(READ, false);
        ex.outcome = Outcome::Skipped(Skip::WakerRequest);
        assert_eq!(memory_eligibility(&ex, &i), Eligibility::Never);
    }

    /// A running site is drained by its status page; without one, only
    /// `--proxy-only` lets the site lock alone be the drain.
    #[test]
    fn drain_needs_a_status_reading_unless_proxy_only() {
        let none = FpmInput::Unavailable("404".into());
        assert_eq!(
            drain_status_path(&none, Some("/status"), false),
            Err(NotDrained::NoStatusPage)
        );
        assert_eq!(drain_status_path(&none, Some("/status"), true), Ok(None));
        assert_eq!(
            drain_status_path(&READ, None, false),
            Err(NotDrained::NoStatusPage),
            "--status-path empty"
        );
        assert_eq!(
            drain_status_path(&READ, Some("/status"), false),
            Ok(Some("/status"))
        );
        assert_eq!(
            drain_status_path(&READ, Some("/status"), true),
            Ok(Some("/status")),
            "drained by the page whenever there is one"
        );
    }

    #[test]
    fn pass_errors_map_to_exit_codes() {
        let e = PassError::Sites(SiteListError::ReadDir {
            path: "/nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(exit::chain(&e).contains("/nope"));
    }
}
