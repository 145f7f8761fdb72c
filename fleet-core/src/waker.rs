//! fleet-waker's engine: accept connections on a listening socket, connect
//! each to php-fpm, waking the site's container first when php-fpm is not
//! there, and proxy.
//!
//! * **Warm path**: connect to the upstream socket without following it
//!   ([`crate::upstream`]: it must be a socket, not a symlink or the waker's
//!   own socket); if it accepts (and the process behind it is not frozen by
//!   `docker pause`, a cgroup file read), proxy. The listener is checked to
//!   be in the site's own container once per socket file and listener pid
//!   (the container's id comes from one Docker inspect, kept for the
//!   waker's life); after that, no Docker call.
//! * **Refusal**: an upstream that fails a check gets no byte; the
//!   connection counts as "not ready", so a wake follows, and the wake fails
//!   at `start_timeout` naming the refusal, which is logged once per file.
//! * **Wake**: the first connection that finds no php-fpm starts one wake
//!   task; every connection arriving meanwhile joins it (a `watch` channel),
//!   so there is one start call however many connections arrive. The wake
//!   starts the container (unpauses it when php-fpm was found frozen, and
//!   inspects only when Docker refuses the start), and waits for php-fpm:
//!   inotify on the runtime directory for the socket's creation, confirmed
//!   by a real connect, retries backing off in steps of at most 5 ms, and a
//!   Docker `die` event (subscribed 25 ms in) failing the wake at once.
//!   All of it is bounded by
//!   `start_timeout`; on failure every held connection is closed and the next
//!   connection tries again.
//! * **Relay**: [`crate::proxy::relay`], FastCGI-aware: a kept (pooled)
//!   connection gets a fresh php-fpm connection, through the same
//!   connect-or-wake, when its next request finds the old one gone or
//!   frozen.
//! * **Activity**: requests in flight (connections, for streams that are
//!   not FastCGI), open connections and the last request's start/end go to
//!   the state file and to systemd's STATUS, coalesced by one reporter task
//!   so the per-request cost is an in-memory update.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::docker::Engine;
use crate::docker::wake::{WakeAction, WakeError};
use crate::notify::Notifier;
use crate::site::Site;
use crate::state;
use crate::upstream::{self, FileId, Refusal};

/// Longest step between two readiness retries.
pub const MAX_RETRY_STEP: Duration = Duration::from_millis(5);
/// How long a wake runs before it subscribes to the container's `die`
/// events (see `watch_death_later`).
pub const DEATH_WATCH_DELAY: Duration = Duration::from_millis(25);
/// Least time between two state-file writes (coalescing).
pub const STATE_WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Everything [`run`] needs.
#[derive(Debug)]
pub struct Config {
    pub site: Site,
    /// Docker container to wake (`<site>.fpm`).
    pub container: String,
    /// php-fpm's socket.
    pub upstream: PathBuf,
    /// Bound on one wake, from the first connection that needs it.
    pub start_timeout: Duration,
    /// Connections served at once; beyond, they wait in the kernel backlog.
    pub connections_max: usize,
    /// Exit after this long with no connection.
    pub exit_idle_time: Option<Duration>,
    /// The activity state file.
    pub state_file: PathBuf,
    /// The lock shared with the reaper ([`crate::drain`]).
    pub lock_file: PathBuf,
    /// How long open connections may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// The Docker engine (connects lazily).
    pub engine: Arc<Engine>,
    /// sd_notify target.
    pub notifier: Notifier,
    /// How the process listening on `upstream` is checked.
    pub peer_check: PeerCheck,
    /// Host-wide wake slots (`None`: starts are not limited).
    pub admission: Option<crate::admission::Admission>,
}

/// Consecutive failed wakes after which the waker backs off.
pub const BACKOFF_AFTER: u32 = 2;
/// The first back-off; it doubles with each further failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Crash-loop back-off: a container that fails to start (or dies while
/// starting) again and again is not started on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failed wakes in a row.
    pub failures: u32,
    /// No wake is tried before this.
    pub until: Option<Instant>,
}

impl Backoff {
    /// Counts a failed wake; the back-off it starts, if any.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < BACKOFF_AFTER {
            return None;
        }
        let shift = (self.failures - BACKOFF_AFTER).min(16);
        let d = BACKOFF_FIRST.saturating_mul(1 << shift).min(BACKOFF_MAX);
        self.until = Some(now + d);
        Some(d)
    }

    /// How long until a wake may be tried again.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .map(|u| u.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// How the waker checks the process listening on php-fpm's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerCheck {
    /// Its cgroup must name the site's container (from Docker). Needs the
    /// waker in the host's PID namespace, where the listener is visible.
    #[default]
    Cgroup,
    /// Only the file checks (a socket, not a symlink, not the waker's own
    /// socket): for a waker in a PID namespace that cannot see the
    /// container's processes, such as a containerised systemd.
    Socket,
}

impl std::str::FromStr for PeerCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cgroup" => Ok(PeerCheck::Cgroup),
            "socket" => Ok(PeerCheck::Socket),
            _ => Err(format!("{s:?} is not a peer check (cgroup or socket)")),
        }
    }
}

/// Descriptors the waker keeps besides its connections (listener, inotify,
/// Docker, state file, journal, runtime).
pub const FD_RESERVE: u64 = 64;

/// The connections that fit in an open-file limit: each takes two
/// descriptors (client and upstream).
pub fn connections_within(limit: u64, wanted: usize) -> usize {
    let fit = limit.saturating_sub(FD_RESERVE) / 2;
    wanted
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(1)
}

/// Raises the soft open-file limit to the hard one and returns how many of
/// `wanted` connections fit in it, so `--connections-max` never runs into
/// EMFILE (connections beyond it wait in the kernel backlog instead).
pub fn fit_connections(wanted: usize) -> (usize, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (wanted, 0);
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    (connections_within(limit, wanted), limit)
}

/// Why [`run`] returned normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM/SIGINT).
    Shutdown,
    /// `exit_idle_time` passed with no connection.
    Idle,
}

/// Why the waker could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum WakerError {
    #[error("connections-max must be at least 1")]
    NoConnections,
}

/// Why one wake failed. Every connection held by that wake is closed.
#[derive(Debug, thiserror::Error)]
pub enum WakeFailure {
    #[error("cannot wake container {container} for site {site}")]
    Docker {
        site: Site,
        container: String,
        #[source]
        source: WakeError,
    },
    #[error(
        "php-fpm of site {site} (container {container}) did not accept on {path} within {timeout}"
    )]
    Timeout {
        site: Site,
        container: String,
        path: PathBuf,
        timeout: humantime::Duration,
    },
    #[error(
        "php-fpm of site {site} (container {container}): {path} was refused for {timeout}: {why}"
    )]
    Refused {
        site: Site,
        container: String,
        path: PathBuf,
        timeout: humantime::Duration,
        why: Refusal,
    },
    #[error("cannot connect to {path}")]
    Upstream {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no wake slot for site {site}")]
    Queued {
        site: Site,
        #[source]
        source: crate::admission::AdmissionError,
    },
    #[error(
        "site {site}: {failures} wakes of {container} failed in a row; not trying again for {remaining}"
    )]
    BackingOff {
        site: Site,
        container: String,
        failures: u32,
        remaining: humantime::Duration,
    },
}

impl WakeFailure {
    /// A failure of the container itself: it could not be started, or died
    /// while starting. Only these count towards the back-off: an
    /// unreachable Docker, a missing container or a slow or refused php-fpm
    /// socket costs no start, and is retried on the next request.
    pub fn is_the_containers(&self) -> bool {
        use crate::docker::DockerError as D;
        match self {
            WakeFailure::Docker { source, .. } => match source {
                WakeError::Exited { .. } | WakeError::Unwakeable { .. } => true,
                WakeError::Docker(D::Unreachable { .. } | D::NoSuchContainer { .. }) => false,
                WakeError::Docker(_) => true,
            },
            _ => false,
        }
    }

    /// For a wake that was not even tried: the seconds after which a client
    /// should retry (answered as a FastCGI 503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            WakeFailure::Queued { source, .. } => Some(source.retry_after()),
            WakeFailure::BackingOff { remaining, .. } => {
                Some(Duration::from(*remaining).as_secs().max(1))
            }
            _ => None,
        }
    }
}

type WakeOutcome = Option<Result<(), Arc<WakeFailure>>>;

/// What the waker is doing, for the state file and STATUS.
#[derive(Debug, Clone)]
struct Activity {
    /// Client connections open (idle pooled ones included).
    open: u64,
    /// FastCGI requests in flight plus open connections of other streams
    /// (and connections not yet past their first bytes): what keeps the
    /// site busy.
    busy: u64,
    waking: bool,
    /// Waiting for a host-wide wake slot, with this many wakes ahead.
    queued: Option<usize>,
    /// Wakes that started or unpaused the container, and how long the last
    /// one took (for the reaper's metrics).
    wakes: u64,
    last_wake_ms: Option<u64>,
    last_start: Option<SystemTime>,
    last_end: Option<SystemTime>,
    /// When a connection last failed to get php-fpm (a failed wake), unless
    /// one got it since.
    failed_at: Option<SystemTime>,
    /// When `open` last became 0 (or start-up), for the idle exit.
    idle_since: Instant,
}

impl Activity {
    /// Nothing open, nothing served yet, idle from now.
    fn new() -> Self {
        Activity {
            open: 0,
            busy: 0,
            waking: false,
            queued: None,
            wakes: 0,
            last_wake_ms: None,
            last_start: None,
            last_end: None,
            failed_at: None,
            idle_since: Instant::now(),
        }
    }
}

/// `STATUS=` before the waker has served anything.
const STATUS_STARTED: &str = "started, no request yet";

struct Shared {
    cfg: Config,
    /// The wake in flight, if any.
    wake: Mutex<Option<watch::Receiver<WakeOutcome>>>,
    activity: watch::Sender<Activity>,
    /// (pid, freezer state file) of the upstream's listener, cached.
    /// The file stays open and is re-read with `pread` at offset 0 (one
    /// syscall per connection on the warm path).
    freezer: Mutex<Option<(i32, Option<OpenFreezer>)>>,
    /// The last failed attempt found php-fpm frozen: the wake can unpause
    /// without inspecting first.
    saw_frozen: std::sync::atomic::AtomicBool,
    /// inotify on the upstream's directory, kept between wakes.
    dirwatch: Mutex<Option<DirWatch>>,
    /// The waker's own listening socket: its file and bound path, never an
    /// upstream.
    own: Option<(FileId, PathBuf)>,
    /// The upstream socket file and listener pid last checked and found to
    /// be the site's container's: connections to it are not checked again.
    verified: Mutex<Option<(FileId, i32)>>,
    /// The upstream file last refused (not connected to again), and the
    /// refusal last logged (each is logged once).
    refused: Mutex<Option<(FileId, Refusal)>>,
    logged: Mutex<Option<Refusal>>,
    /// The refusal seen by the latest attempt, for the wake's error.
    last_refusal: Mutex<Option<Refusal>>,
    /// The container's id, from Docker; a wake-time fact kept for the
    /// waker's life (re-asked when a listener does not match it).
    container_id: tokio::sync::Mutex<Option<String>>,
    backoff: Mutex<Backoff>,
    /// Held shared while a request is at php-fpm or a wake runs: the
    /// reaper does not act then.
    gate: Arc<crate::drain::Gate>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("cfg", &self.cfg).finish()
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled or the
/// idle time passes. Sends `READY=1` once accepting and `STOPPING=1` when
/// stopping; open connections get `shutdown_grace` to finish.
pub async fn run(
    listener: UnixListener,
    cfg: Config,
    shutdown: CancellationToken,
) -> Result<Exit, WakerError> {
    if cfg.connections_max == 0 {
        return Err(WakerError::NoConnections);
    }
    let sem = Arc::new(Semaphore::new(cfg.connections_max));
    let (activity, mut idle_rx) = watch::channel(Activity::new());
    let own = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .and_then(|p| FileId::of_path(&p).ok().map(|id| (id, p)));
    let cfg_lock_file = cfg.lock_file.clone();
    let shared = Arc::new(Shared {
        cfg,
        wake: Mutex::new(None),
        activity,
        freezer: Mutex::new(None),
        saw_frozen: std::sync::atomic::AtomicBool::new(false),
        dirwatch: Mutex::new(None),
        own,
        verified: Mutex::new(None),
        refused: Mutex::new(None),
        logged: Mutex::new(None),
        last_refusal: Mutex::new(None),
        container_id: tokio::sync::Mutex::new(None),
        backoff: Mutex::new(Backoff::default()),
        gate: crate::drain::Gate::new(cfg_lock_file),
    });
    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(report(
        shared.clone(),
        shared.activity.subscribe(),
        reporter_stop.clone(),
    ));
    shared.cfg.notifier.ready(STATUS_STARTED);
    tracing::info!(
        site = %shared.cfg.site,
        container = %shared.cfg.container,
        upstream = %shared.cfg.upstream.display(),
        "accepting connections"
    );

    let tracker = TaskTracker::new();
    let idle_time = shared.cfg.exit_idle_time;
    let mut accept_errors = 0u32;
    let exit = loop {
        let next = async {
            // Permit first: beyond connections-max, connections stay in the
            // kernel backlog instead of being accepted and dropped.
            let permit = sem.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Exit::Shutdown,
            (permit, accepted) = next => {
                let Ok(permit) = permit else { break Exit::Shutdown };
                match accepted {
                    Ok((stream, _)) => {
                        accept_errors = 0;
                        tracker.spawn(serve(shared.clone(), stream, permit));
                    }
                    Err(e) => {
                        // EMFILE and the like: no event tells when it clears.
                        accept_errors = accept_errors.saturating_add(1);
                        if accept_errors == 1 {
                            tracing::warn!(site = %shared.cfg.site, error = %e, "accept failed");
                        }
                        drop(permit);
                        tokio::time::sleep(MAX_RETRY_STEP).await;
                    }
                }
            }
            _ = idle_wait(&mut idle_rx, idle_time) => break Exit::Idle,
        }
    };
    drop(listener);
    tracker.close();
    shared.cfg.notifier.stopping();
    let open = shared.activity.borrow().open;
    match exit {
        Exit::Idle => tracing::info!(site = %shared.cfg.site, "idle, exiting"),
        Exit::Shutdown => tracing::info!(
            site = %shared.cfg.site,
            open,
            grace = %humantime::Duration::from(shared.cfg.shutdown_grace),
            "stopping"
        ),
    }
    if tokio::time::timeout(shared.cfg.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        let open = shared.activity.borrow().open;
        tracing::warn!(site = %shared.cfg.site, open, "grace over, closing open connections");
    }
    reporter_stop.cancel();
    let _ = reporter.await;
    // Final word: nothing open any more (connections still running are
    // dropped with the runtime).
    let mut last = shared.activity.borrow().clone();
    if last.open > 0 {
        if last.busy > 0 {
            last.last_end = Some(SystemTime::now());
        }
        last.open = 0;
        last.busy = 0;
    }
    let _ = write_state(&shared, &last);
    Ok(exit)
}

/// Resolves once nothing has been open (and no wake in flight) for `idle`.
async fn idle_wait(rx: &mut watch::Receiver<Activity>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let (busy, since) = {
            let a = rx.borrow_and_update();
            (a.open > 0 || a.waking, a.idle_since)
        };
        if busy {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        // A time too far to represent (e.g. 100y) is "never".
        let Some(deadline) = since.checked_add(idle) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => return,
            r = rx.changed() => if r.is_err() { return std::future::pending().await },
        }
    }
}

/// Writes the state file and STATUS when activity changes, at most once per
/// [`STATE_WRITE_INTERVAL`]. A failing write is logged once (and once more
/// when it recovers), never per connection.
async fn report(shared: Arc<Shared>, mut rx: watch::Receiver<Activity>, stop: CancellationToken) {
    let mut failing = false;
    let mut last_status = String::from(STATUS_STARTED);
    loop {
        let a = rx.borrow_and_update().clone();
        let status = status(&a, &shared.cfg.container);
        if status != last_status {
            shared.cfg.notifier.status(&status);
            last_status = status;
        }
        match write_state(&shared, &a) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(site = %shared.cfg.site, path = %shared.cfg.state_file.display(), "state file writable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::error!(
                    site = %shared.cfg.site,
                    error = %crate::exit::chain(&e),
                    "cannot write the activity state file; proxying goes on"
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATE_WRITE_INTERVAL) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// The `STATUS=` line: only what the waker knows. It does not watch the
/// container, so an idle site says when its last request ended, never
/// "awake" or "asleep"; the README lists these forms.
fn status(a: &Activity, container: &str) -> String {
    let s = |n: u64| if n == 1 { "" } else { "s" };
    let open = format!("{} connection{} open", a.open, s(a.open));
    if let (true, Some(ahead)) = (a.waking, a.queued) {
        format!("queued for a wake slot, {ahead} ahead")
    } else if a.waking {
        format!("waking {container}")
    } else if a.busy > 0 {
        format!("serving, {} request{} in flight, {open}", a.busy, s(a.busy))
    } else if let Some(t) = a.failed_at {
        format!(
            "wake failed at {}, php-fpm not accepting; the next request tries again",
            humantime::format_rfc3339_seconds(t)
        )
    } else if let Some(t) = a.last_end.or(a.last_start) {
        format!(
            "idle since {}, {open}",
            humantime::format_rfc3339_seconds(t)
        )
    } else {
        STATUS_STARTED.to_owned()
    }
}

fn write_state(shared: &Shared, a: &Activity) -> Result<(), state::StateError> {
    state::store(
        &shared.cfg.state_file,
        &state::Activity {
            pid: Some(std::process::id()),
            open: a.busy,
            connections: Some(a.open),
            last_start: a.last_start,
            last_end: a.last_end,
            wakes: a.wakes,
            last_wake_ms: a.last_wake_ms,
        },
    )
}

/// One client connection as the relay sees its owner: php-fpm connections
/// through connect-or-wake, and the activity of this connection's
/// requests.
struct Conn<'a> {
    shared: &'a Arc<Shared>,
    /// Units of activity this connection added to `busy` and not yet took
    /// back (1 from the accept on: its first request, or the stream).
    counted: u64,
    /// It got php-fpm at least once.
    connected: bool,
    /// Admitted through the site lock while `counted` > 0.
    gate: Option<crate::drain::GateGuard>,
}

impl crate::proxy::Upstreams for Conn<'_> {
    type Stream = UnixStream;

    async fn connect(&mut self) -> Option<UnixStream> {
        match connect_or_wake(self.shared).await {
            Ok(s) => {
                self.connected = true;
                Some(s)
            }
            Err(e) => {
                // The wake task logged the cause once.
                tracing::debug!(site = %self.shared.cfg.site, error = %crate::exit::chain(&*e), "closing a kept connection");
                self.failed();
                None
            }
        }
    }

    async fn thaw(&mut self) -> bool {
        match join_wake(self.shared).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(site = %self.shared.cfg.site, error = %crate::exit::chain(&*e), "closing a connection to a frozen php-fpm");
                self.failed();
                false
            }
        }
    }

    fn is_frozen(&mut self, s: &UnixStream) -> bool {
        self.shared.is_frozen(s)
    }

    fn began(&mut self) {
        self.counted += 1;
        self.shared.activity.send_modify(|a| {
            a.busy += 1;
            a.last_start = Some(SystemTime::now());
        });
    }

    fn ended(&mut self) {
        if self.counted > 0 {
            self.counted -= 1;
            self.shared.activity.send_modify(|a| {
                a.busy = a.busy.saturating_sub(1);
                a.last_end = Some(SystemTime::now());
            });
        }
        if self.counted == 0 {
            self.gate = None;
        }
    }

    fn admitted(&self) -> bool {
        self.gate.is_some()
    }

    async fn admit(&mut self) {
        self.gate = Some(admit(self.shared).await);
    }
}

impl Conn<'_> {
    fn failed(&self) {
        self.shared
            .activity
            .send_modify(|a| a.failed_at = Some(SystemTime::now()));
    }
}

/// One client connection, from accept to close.
async fn serve(
    shared: Arc<Shared>,
    mut client: UnixStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    shared.activity.send_modify(|a| {
        a.open += 1;
        a.busy += 1;
        a.last_start = Some(SystemTime::now());
    });
    let gate = admit(&shared).await;
    let mut conn = Conn {
        shared: &shared,
        counted: 1,
        connected: false,
        gate: Some(gate),
    };
    match connect_or_wake(&shared).await {
        Ok(upstream) => {
            conn.connected = true;
            let r = crate::proxy::relay(&mut client, upstream, &mut conn).await;
            if let Some(e) = &r.error {
                tracing::debug!(site = %shared.cfg.site, error = %e, requests = r.requests, "a direction of the connection ended with an error");
            }
        }
        Err(e) => {
            // The wake task logged the cause once. A wake not even tried
            // (queue too long, backing off) is answered "retry later";
            // otherwise closing the client makes nginx answer 502 now.
            tracing::debug!(site = %shared.cfg.site, error = %crate::exit::chain(&*e), "closing held connection");
            conn.failed();
            if let Some(secs) = e.retry_after() {
                let why = format!("{}: {}", shared.cfg.site, crate::exit::chain(&*e));
                crate::reply::retry_later(&mut client, secs, &why, crate::proxy::LINGER).await;
            }
        }
    }
    drop(client);
    let (counted, connected) = (conn.counted, conn.connected);
    shared.activity.send_modify(|a| {
        a.open -= 1;
        a.busy = a.busy.saturating_sub(counted);
        if counted > 0 {
            a.last_end = Some(SystemTime::now());
        }
        if connected {
            a.failed_at = None;
        }
        if a.open == 0 {
            a.idle_since = Instant::now();
        }
    });
}

/// Passes the site lock ([`crate::drain::Gate`]): at once, unless the
/// reaper is putting the site to sleep right now; then when it is done.
async fn admit(shared: &Shared) -> crate::drain::GateGuard {
    let site = &shared.cfg.site;
    let (guard, err) = shared
        .gate
        .enter(|| tracing::info!(site = %site, "the reaper is putting the site to sleep; the request waits, then wakes it"))
        .await;
    if let Some(e) = err {
        tracing::warn!(site = %site, error = %crate::exit::chain(&e), "site lock unusable; the request goes on without it (the reaper may act under it)");
    }
    guard
}

/// How a connect attempt to the upstream went.
enum Attempt {
    Ready(UnixStream),
    /// Nothing accepts there (no file, stale file) or it is frozen.
    Asleep,
    /// The backlog is full (EAGAIN): php-fpm is there but busy.
    Busy,
    /// Something that must not be connected to is there (no byte sent).
    Rejected,
    Failed(io::Error),
}

/// One connect to the upstream, with the checks of [`crate::upstream`].
/// The connect is not awaited on the reactor: a unix `connect` completes
/// (or fails with EAGAIN when the backlog is full) at once.
async fn attempt(shared: &Shared) -> Attempt {
    let path = &shared.cfg.upstream;
    let outcome = {
        let refused = lock(&shared.refused);
        upstream::connect(
            path,
            shared.own.as_ref().map(|(id, _)| *id),
            refused.as_ref().map(|(f, r)| (*f, r)),
        )
    };
    match outcome {
        upstream::Outcome::Connected(c) => {
            let known = *lock(&shared.verified) == Some((c.file, c.pid));
            if !known {
                if let Err(why) = shared.verify(&c).await {
                    return shared.reject(Some(c.file), why, c.pid);
                }
                *lock(&shared.verified) = Some((c.file, c.pid));
                *lock(&shared.refused) = None;
                *lock(&shared.logged) = None;
            }
            *lock(&shared.last_refusal) = None;
            let s = match UnixStream::from_std(c.stream) {
                Ok(s) => s,
                Err(e) => return Attempt::Failed(e),
            };
            if shared.is_frozen_pid(c.pid) {
                shared
                    .saw_frozen
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Attempt::Asleep
            } else {
                Attempt::Ready(s)
            }
        }
        upstream::Outcome::Absent | upstream::Outcome::Refused => {
            *lock(&shared.last_refusal) = None;
            Attempt::Asleep
        }
        upstream::Outcome::Busy => Attempt::Busy,
        upstream::Outcome::Rejected { file, why } => shared.reject(file, why, 0),
        upstream::Outcome::Failed(e) => Attempt::Failed(e),
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn connect_or_wake(shared: &Arc<Shared>) -> Result<UnixStream, Arc<WakeFailure>> {
    let started = Instant::now();
    let mut step = Duration::from_micros(500);
    let mut wakes = 0;
    loop {
        match attempt(shared).await {
            Attempt::Ready(s) => return Ok(s),
            Attempt::Asleep | Attempt::Rejected => {
                // Bound the loop: a container that falls asleep again right
                // after each wake (stopped behind our back) gets a few tries.
                if wakes >= 3 || started.elapsed() > shared.cfg.start_timeout {
                    return Err(Arc::new(shared.timeout()));
                }
                wakes += 1;
                join_wake(shared).await?;
            }
            Attempt::Busy => {
                if started.elapsed() > shared.cfg.start_timeout {
                    return Err(Arc::new(shared.timeout()));
                }
                tokio::time::sleep(step).await;
                step = (step * 2).min(MAX_RETRY_STEP);
            }
            Attempt::Failed(source) => {
                return Err(Arc::new(WakeFailure::Upstream {
                    path: shared.cfg.upstream.clone(),
                    source,
                }));
            }
        }
    }
}

/// Joins the wake in flight, or starts one.
async fn join_wake(shared: &Arc<Shared>) -> Result<(), Arc<WakeFailure>> {
    let mut rx = {
        let mut slot = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(rx) => rx.clone(),
            None => {
                let backoff = lock(&shared.backoff).clone();
                if let Some(left) = backoff.remaining(Instant::now()) {
                    return Err(Arc::new(WakeFailure::BackingOff {
                        site: shared.cfg.site.clone(),
                        container: shared.cfg.container.clone(),
                        failures: backoff.failures,
                        remaining: Duration::from_secs(left.as_secs_f64().ceil() as u64).into(),
                    }));
                }
                let (tx, rx) = watch::channel(None);
                *slot = Some(rx.clone());
                tokio::spawn(wake_task(shared.clone(), tx));
                rx
            }
        }
    };
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    match outcome {
        Some(r) => r,
        None => Err(Arc::new(shared.timeout())),
    }
}

/// Reports the queue position to the activity (STATUS=).
struct QueueProgress<'a>(&'a Shared);

impl crate::admission::Progress for QueueProgress<'_> {
    fn queued(&mut self, ahead: usize) {
        self.0.activity.send_modify(|a| a.queued = Some(ahead));
    }
}

async fn wake_task(shared: Arc<Shared>, tx: watch::Sender<WakeOutcome>) {
    let cfg = &shared.cfg;
    shared.activity.send_modify(|a| a.waking = true);
    let t0 = Instant::now();
    tracing::info!(site = %cfg.site, container = %cfg.container, "waking");
    // A start takes a host-wide slot first (an unpause is quick and
    // does not); the start timeout counts from admission.
    let frozen = shared.saw_frozen.load(std::sync::atomic::Ordering::Relaxed) || paused_aside(cfg);
    let admitted = match (&cfg.admission, frozen) {
        (Some(adm), false) => {
            let r = adm.acquire(&mut QueueProgress(&shared)).await;
            shared.activity.send_modify(|a| a.queued = None);
            match r {
                Ok(slot) => {
                    let queued_ms = t0.elapsed().as_millis() as u64;
                    tracing::info!(site = %cfg.site, slot = slot.index(), queued_ms, "admitted to a wake slot");
                    Ok(Some(slot))
                }
                Err(source) => Err(WakeFailure::Queued {
                    site: cfg.site.clone(),
                    source,
                }),
            }
        }
        _ => Ok(None),
    };
    let t1 = Instant::now();
    let (result, slot) = match admitted {
        Ok(slot) => (
            match tokio::time::timeout(cfg.start_timeout, wake(&shared)).await {
                Ok(r) => r,
                Err(_) => Err(shared.timeout()),
            },
            slot,
        ),
        Err(e) => (Err(e), None),
    };
    let took = t1.elapsed();
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let result = match result {
        Ok(action) => {
            tracing::info!(site = %cfg.site, container = %cfg.container, action, ms, "php-fpm accepts");
            if matches!(action, "started" | "unpaused") {
                shared.activity.send_modify(|a| {
                    a.wakes += 1;
                    a.last_wake_ms = Some(ms as u64);
                });
            }
            *lock(&shared.backoff) = Backoff::default();
            Ok(())
        }
        Err(e @ WakeFailure::Queued { .. }) => {
            tracing::warn!(
                site = %cfg.site,
                cause = %crate::exit::chain(&e),
                ms,
                "not woken: the host's wake queue is too long; answering 503 with Retry-After"
            );
            Err(Arc::new(e))
        }
        Err(e) => {
            let backoff = if e.is_the_containers() {
                lock(&shared.backoff).failed(Instant::now())
            } else {
                None
            };
            tracing::error!(
                site = %cfg.site,
                container = %cfg.container,
                cause = %crate::exit::chain(&e),
                ms,
                "wake failed; closing held connections"
            );
            if let Some(d) = backoff {
                tracing::warn!(
                    site = %cfg.site,
                    container = %cfg.container,
                    failures = lock(&shared.backoff).failures,
                    backoff = %humantime::Duration::from(d),
                    "wakes keep failing; backing off (requests get 503 with Retry-After until then)"
                );
            }
            Err(Arc::new(e))
        }
    };
    // Let the next site in only now: its wake's log lines come after ours.
    if let Some(slot) = slot {
        slot.release(took);
    }
    {
        let mut slot = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
        *slot = None;
    }
    let _ = tx.send(Some(result));
    shared.activity.send_modify(|a| {
        a.waking = false;
        if a.open == 0 {
            a.idle_since = Instant::now();
        }
    });
}

/// Makes the container run and waits until php-fpm accepts.
async fn wake(shared: &Shared) -> Result<&'static str, WakeFailure> {
    let cfg = &shared.cfg;
    // Watch before anything can happen, so no creation goes unseen.
    // One inotify instance for the waker's life: closing one waits for an
    // SRCU grace period in the kernel (measured 12 ms here), which would
    // stall this thread right when the held connections should proceed.
    let mut watch = {
        let kept = lock(&shared.dirwatch).take();
        match kept {
            Some(mut w) => {
                if w.drain().is_ok() {
                    Some(w)
                } else {
                    DirWatch::new(&cfg.upstream)
                }
            }
            _ => DirWatch::new(&cfg.upstream),
        }
    };
    let r = wake_with(shared, &mut watch).await;
    *shared.dirwatch.lock().unwrap_or_else(|p| p.into_inner()) = watch;
    r
}

async fn wake_with(
    shared: &Shared,
    watch: &mut Option<DirWatch>,
) -> Result<&'static str, WakeFailure> {
    let cfg = &shared.cfg;
    // Another wake may have just finished.
    if let Attempt::Ready(_) = attempt(shared).await {
        return Ok("was ready");
    }
    let since = SystemTime::now();
    let docker = |source| WakeFailure::Docker {
        site: cfg.site.clone(),
        container: cfg.container.clone(),
        source,
    };
    // Frozen behind a live socket: that is `docker pause`; unpause straight
    // away (one API call fewer), and inspect only if that fails.
    let frozen = shared
        .saw_frozen
        .swap(false, std::sync::atomic::Ordering::Relaxed)
        || paused_aside(cfg);
    let action = if frozen {
        cfg.engine
            .unpause(&cfg.container)
            .await
            .ok()
            .map(|()| WakeAction::Unpaused)
    } else {
        None
    };
    let action = match action {
        Some(a) => a,
        None => cfg
            .engine
            .make_running(&cfg.container)
            .await
            .map_err(docker)?,
    };
    tracing::debug!(site = %cfg.site, container = %cfg.container, action = action.as_str(), "container");
    if !matches!(action, WakeAction::Started) {
        put_back(cfg);
    }
    let death = tokio::select! {
        r = wait_ready(shared, watch) => return r.map(|()| action.as_str()),
        e = watch_death_later(cfg, since) => e,
    };
    // Seen "running" while it was in fact dying (php-fpm's master had just
    // crashed): this wake did not start it, so start it now, once. Docker
    // can also answer a start that races with such a death with 204 and
    // start nothing; then the container's last start (from the inspect
    // the death watch made) is older than this wake, and the death is the
    // previous life's.
    let not_ours = match action {
        WakeAction::AlreadyRunning | WakeAction::Restarting => true,
        WakeAction::Started => death.started_before(since),
        WakeAction::Unpaused => false,
    };
    if !not_ours {
        return Err(docker(death));
    }
    tracing::info!(site = %cfg.site, container = %cfg.container, cause = %death, "container died under the wake; starting it");
    let since = SystemTime::now();
    let action = cfg
        .engine
        .make_running(&cfg.container)
        .await
        .map_err(docker)?;
    tokio::select! {
        r = wait_ready(shared, watch) => r.map(|()| action.as_str()),
        e = watch_death_later(cfg, since) => Err(docker(e)),
    }
}

/// True when the reaper paused the site: php-fpm's socket is aside and
/// still listening (a frozen process's socket accepts into its backlog).
/// Then the wake unpauses at once, with no start attempt and no wake slot.
fn paused_aside(cfg: &Config) -> bool {
    upstream::probe(&crate::drain::aside_path(&cfg.upstream)) == upstream::Liveness::Listening
}

/// After an unpause (or finding the container running): php-fpm's socket
/// goes back to its path if the reaper left it aside ([`crate::drain`]).
fn put_back(cfg: &Config) {
    match crate::drain::restore(&cfg.upstream) {
        Ok(crate::drain::Restored::Nothing) => {}
        Ok(crate::drain::Restored::Back) => {
            tracing::debug!(site = %cfg.site, "php-fpm's socket is back in place");
        }
        Ok(r) => tracing::info!(site = %cfg.site, result = ?r, "php-fpm's socket aside"),
        Err(e) => {
            tracing::warn!(site = %cfg.site, error = %crate::exit::chain(&e), "cannot put php-fpm's socket back");
        }
    }
}

/// Docker's `die` events for the container from `since` on, subscribed to
/// only after [`DEATH_WATCH_DELAY`]: an unpause is usually ready before
/// that, and then the engine is spared an event subscription while it
/// thaws the container. Nothing is missed: `since` replays a death that
/// happened in the meantime.
async fn watch_death_later(cfg: &Config, since: SystemTime) -> WakeError {
    tokio::time::sleep(DEATH_WATCH_DELAY).await;
    cfg.engine.watch_death(&cfg.container, since).await
}

/// Waits until a real connect to the upstream succeeds. Before the socket
/// shows up, inotify wakes us; once something happened to it (created, moved
/// in, chmod-ed) we retry with steps growing to at most [`MAX_RETRY_STEP`]
/// (php-fpm binds, then listens). Without inotify we poll in those steps.
async fn wait_ready(shared: &Shared, watch: &mut Option<DirWatch>) -> Result<(), WakeFailure> {
    let mut step = Duration::from_micros(250);
    // A slow safety net for events we cannot see (the directory replaced).
    const SLOW: Duration = Duration::from_millis(100);
    let mut fast = watch.is_none();
    let t0 = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt(shared).await {
            Attempt::Ready(_) => {
                tracing::debug!(
                    site = %shared.cfg.site,
                    tries,
                    us = t0.elapsed().as_micros() as u64,
                    "php-fpm ready"
                );
                return Ok(());
            }
            Attempt::Failed(source) => {
                return Err(WakeFailure::Upstream {
                    path: shared.cfg.upstream.clone(),
                    source,
                });
            }
            Attempt::Busy => fast = true,
            Attempt::Asleep | Attempt::Rejected => {}
        }
        let wait = if fast { step } else { SLOW };
        match watch.as_mut() {
            Some(w) => {
                tokio::select! {
                    r = w.changed() => {
                        if r.is_err() { *watch = None; }
                        fast = true;
                        step = Duration::from_micros(250);
                        continue;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            None => tokio::time::sleep(step).await,
        }
        if fast || watch.is_none() {
            step = (step * 2).min(MAX_RETRY_STEP);
        }
    }
}

/// inotify on the upstream's directory, reporting events for its file name
/// (through the `inotify` crate's tokio stream: no unsafe of our own).
struct DirWatch {
    events: inotify::EventStream<[u8; 1024]>,
    name: std::ffi::OsString,
}

impl DirWatch {
    fn new(upstream: &Path) -> Option<Self> {
        use inotify::WatchMask;
        let dir = upstream.parent()?;
        let name = upstream.file_name()?.to_owned();
        let r = (|| -> io::Result<Self> {
            let ino = inotify::Inotify::init()?;
            ino.watches().add(
                dir,
                WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::ATTRIB
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF,
            )?;
            Ok(DirWatch {
                events: ino.into_event_stream([0u8; 1024])?,
                name: name.clone(),
            })
        })();
        match r {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "no inotify; polling for php-fpm");
                None
            }
        }
    }

    /// Discards queued events (from before this wake). An error (the
    /// directory's watch is gone) means: make a new one.
    fn drain(&mut self) -> io::Result<()> {
        use futures_util::{FutureExt, StreamExt};
        use inotify::EventMask;
        loop {
            match self.events.next().now_or_never() {
                None => return Ok(()),
                Some(None) => return Err(io::Error::other("inotify stream ended")),
                Some(Some(Err(e))) => return Err(e),
                Some(Some(Ok(e))) => {
                    if e.mask
                        .intersects(EventMask::IGNORED | EventMask::Q_OVERFLOW)
                    {
                        return Err(io::Error::other("inotify watch gone"));
                    }
                }
            }
        }
    }

    /// Resolves on the next event about the socket (or the directory itself).
    async fn changed(&mut self) -> io::Result<()> {
        use futures_util::StreamExt;
        use inotify::EventMask;
        loop {
            match self.events.next().await {
                None => return Err(io::Error::other("inotify stream ended")),
                Some(Err(e)) => return Err(e),
                Some(Ok(e)) => {
                    if e.mask.contains(EventMask::IGNORED) {
                        // The directory is gone: this watch is dead.
                        return Err(io::Error::other("inotify watch gone"));
                    }
                    if e.name.as_ref().is_none_or(|n| *n == self.name)
                        || e.mask
                            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Shared {
    /// The wake's failure at its deadline: the refusal, when the upstream
    /// was refused, else a timeout.
    fn timeout(&self) -> WakeFailure {
        match lock(&self.last_refusal).clone() {
            Some(why) => WakeFailure::Refused {
                site: self.cfg.site.clone(),
                container: self.cfg.container.clone(),
                path: self.cfg.upstream.clone(),
                timeout: self.cfg.start_timeout.into(),
                why,
            },
            None => WakeFailure::Timeout {
                site: self.cfg.site.clone(),
                container: self.cfg.container.clone(),
                path: self.cfg.upstream.clone(),
                timeout: self.cfg.start_timeout.into(),
            },
        }
    }

    /// Checks that the listener behind a new upstream socket file is the
    /// site's own php-fpm: not this waker (by its bound path), and, with
    /// [`PeerCheck::Cgroup`], a process whose cgroup names the container.
    async fn verify(&self, c: &upstream::Connected) -> Result<(), Refusal> {
        if let Some((_, own_path)) = &self.own
            && upstream::peer_path(&c.stream).as_deref() == Some(own_path.as_path())
        {
            return Err(Refusal::OwnSocket);
        }
        if self.cfg.peer_check == PeerCheck::Socket {
            return Ok(());
        }
        if c.pid <= 0 {
            return Err(Refusal::PeerInvisible);
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).map_err(|e| {
            Refusal::PeerUnreadable {
                pid: c.pid,
                error: e.to_string(),
            }
        })?;
        let mut id = self.container_id.lock().await;
        if let Some(known) = id.as_deref()
            && upstream::cgroup_names_container(&cgroup, known)
        {
            return Ok(());
        }
        // Not known yet, or the container was re-created since: ask Docker.
        let info = self
            .cfg
            .engine
            .inspect(&self.cfg.container)
            .await
            .map_err(|e| Refusal::NoContainerId {
                error: crate::exit::chain(&e),
            })?;
        let matches = upstream::cgroup_names_container(&cgroup, &info.id);
        *id = Some(info.id);
        if matches {
            Ok(())
        } else {
            let mut summary: String = cgroup.trim().replace('\n', "; ");
            summary.truncate(240);
            Err(Refusal::ForeignPeer {
                pid: c.pid,
                cgroup: summary,
            })
        }
    }

    /// Records a refusal: the file is not connected to again, the refusal
    /// is logged once, and the attempt counts as "not ready".
    fn reject(&self, file: Option<FileId>, why: Refusal, pid: i32) -> Attempt {
        if let Some(file) = file {
            *lock(&self.refused) = Some((file, why.clone()));
        }
        let mut logged = lock(&self.logged);
        if logged.as_ref() != Some(&why) {
            tracing::warn!(
                site = %self.cfg.site,
                path = %self.cfg.upstream.display(),
                peer_pid = pid,
                reason = %why,
                "refusing php-fpm's socket; no byte relayed"
            );
            *logged = Some(why.clone());
        }
        *lock(&self.last_refusal) = Some(why);
        Attempt::Rejected
    }

    /// True when the process listening behind `s` is frozen (`docker
    /// pause`): the kernel still queues connections for it, but nothing
    /// would answer. Reads one cgroup file; unknown counts as not frozen.
    fn is_frozen(&self, s: &UnixStream) -> bool {
        let pid = s.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
        self.is_frozen_pid(pid)
    }

    /// [`Shared::is_frozen`] for a listener pid already known (the connect
    /// in `attempt` has it: no second `SO_PEERCRED` on the warm path). Pid 0
    /// (not visible here) counts as not frozen.
    fn is_frozen_pid(&self, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        use std::os::unix::fs::FileExt;
        let mut cache = self.freezer.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|(p, _)| *p != pid) {
            let f = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|t| freezer_file(&t))
                .and_then(|f| std::fs::File::open(f.path()).ok().map(|file| (f, file)));
            *cache = Some((pid, f));
        }
        let Some((_, Some((kind, file)))) = cache.as_ref() else {
            return false;
        };
        let mut buf = [0u8; 32];
        match file.read_at(&mut buf, 0) {
            Ok(n) => kind.is_frozen(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {
                // The cgroup went away (container removed): look it up again.
                *cache = None;
                false
            }
        }
    }
}

/// A freezer state file, kept open.
type OpenFreezer = (FreezerFile, std::fs::File);

/// Where a process's freezer state is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezerFile {
    /// cgroup v1: `freezer.state` (`THAWED`, `FREEZING`, `FROZEN`).
    V1(PathBuf),
    /// cgroup v2: `cgroup.freeze` (`0` or `1`).
    V2(PathBuf),
}

impl FreezerFile {
    fn path(&self) -> &Path {
        match self {
            FreezerFile::V1(p) | FreezerFile::V2(p) => p,
        }
    }

    /// Interprets the file's content.
    pub fn is_frozen(&self, content: &str) -> bool {
        match self {
            FreezerFile::V1(_) => matches!(content.trim(), "FROZEN" | "FREEZING"),
            FreezerFile::V2(_) => content.trim() == "1",
        }
    }
}

/// From `/proc/<pid>/cgroup`, the file telling whether that process is
/// frozen; `None` for the root group (which cannot be frozen). A v1
/// `freezer` hierarchy wins over the v2 one (that is what Docker uses on
/// such hosts).
pub fn freezer_file(proc_cgroup: &str) -> Option<FreezerFile> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if rel.contains("..") {
            continue;
        }
        if ctrls.split(',').any(|c| c == "freezer") {
            if rel.is_empty() {
                return None;
            }
            return Some(FreezerFile::V1(
                Path::new("/sys/fs/cgroup/freezer")
                    .join(rel)
                    .join("freezer.state"),
            ));
        }
        if id == "0" && ctrls.is_empty() && !rel.is_empty() {
            v2 = Some(FreezerFile::V2(
                Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"),
            ));
        }
    }
    v2
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connections_fit_the_descriptor_limit() {
        assert_eq!(connections_within(1024, 256), 256);
        assert_eq!(connections_within(1024, 1000), 480);
        assert_eq!(connections_within(10, 5), 1);
        assert_eq!(connections_within(u64::MAX, 7), 7);
    }

    #[test]
    fn finds_freezer_files() {
        let v1 = "9:name=systemd:/docker/abc\n6:freezer:/docker/abc\n0::/\n";
        assert_eq!(
            freezer_file(v1),
            Some(FreezerFile::V1(
                "/sys/fs/cgroup/freezer/docker/abc/freezer.state".into()
            ))
        );
        assert_eq!(freezer_file("6:freezer:/\n0::/\n"), None);
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            freezer_file(v2),
            Some(FreezerFile::V2(
                "/sys/fs/cgroup/system.slice/docker-abc.scope/cgroup.freeze".into()
            ))
        );
        assert_eq!(freezer_file("0::/\n"), None);
        assert_eq!(freezer_file("garbage\n\n"), None);
        assert_eq!(freezer_file("6:freezer:/../../etc\n"), None);
        let f = FreezerFile::V1("x".into());
        assert!(f.is_frozen("FROZEN\n"));
        assert!(f.is_frozen("FREEZING\n"));
        assert!(!f.is_frozen("THAWED\n"));
        let f = FreezerFile::V2("x".into());
        assert!(f.is_frozen("1\n"));
        assert!(!f.is_frozen("0\n"));
    }

    fn config(dir: &Path, docker_host: &str) -> Config {
        Config {
            site: Site::new("unit.test").expect("site"),
            container: "unit.test.fpm".into(),
            upstream: dir.join("php-fpm.sock"),
            start_timeout: Duration::from_secs(2),
            connections_max: 4,
            exit_idle_time: None,
            state_file: dir.join("unit.test.state"),
            lock_file: dir.join("unit.test.lock"),
            shutdown_grace: Duration::from_secs(1),
            engine: Arc::new(Engine::new(docker_host)),
            notifier: Notifier::none(),
            // The unit tests' upstream is this very process.
            peer_check: PeerCheck::Socket,
            admission: None,
        }
    }

    /// Warm path with an unreachable Docker: proxies without any Docker
    /// call; with the upstream gone, the wake fails (Docker unreachable),
    /// the held connection is closed promptly, and the waker goes on.
    #[tokio::test(flavor = "current_thread")]
    async fn warm_path_needs_no_docker_and_failures_close_promptly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "unix:///nonexistent/docker.sock");
        let state_file = cfg.state_file.clone();
        let upstream = UnixListener::bind(&cfg.upstream).expect("upstream");
        let listen_path = dir.path().join("waker.sock");
        let listener = UnixListener::bind(&listen_path).expect("listener");
        let stop = CancellationToken::new();
        let waker = tokio::spawn(run(listener, cfg, stop.clone()));

        // Echo upstream, one connection.
        let echo = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.expect("accept");
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
            drop(upstream);
        });
        let mut c = UnixStream::connect(&listen_path).await.expect("connect");
        c.write_all(b"hello fastcgi").await.expect("write");
        c.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello fastcgi");
        echo.await.expect("echo");

        // Upstream gone (stale socket file left): Docker is needed and
        // unreachable; the connection must be closed well within the timeout.
        let t = Instant::now();
        let mut c = UnixStream::connect(&listen_path).await.expect("connect");
        let mut got = Vec::new();
        let n = c.read_to_end(&mut got).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Still serving.
        UnixStream::connect(&listen_path)
            .await
            .expect("still accepting");

        stop.cancel();
        let exit = waker.await.expect("join").expect("run");
        assert_eq!(exit, Exit::Shutdown);
        let st = state::load(&state_file).expect("load").expect("written");
        assert_eq!(st.open, 0);
        assert!(st.last_start.is_some() && st.last_end.is_some());
    }

    /// Every form of `STATUS=` (the README lists them): only what the waker
    /// knows, never a container state it has not seen.
    #[test]
    fn backoff_starts_at_the_second_failure_and_doubles_to_a_minute() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.failed(now), None);
        assert_eq!(b.remaining(now), None);
        assert_eq!(b.failed(now), Some(Duration::from_secs(1)));
        assert_eq!(b.remaining(now), Some(Duration::from_secs(1)));
        assert_eq!(b.remaining(now + Duration::from_secs(1)), None);
        assert_eq!(b.failed(now), Some(Duration::from_secs(2)));
        assert_eq!(b.failed(now), Some(Duration::from_secs(4)));
        for _ in 0..40 {
            b.failed(now);
        }
        assert_eq!(b.failed(now), Some(BACKOFF_MAX));
    }

    #[test]
    fn status_says_what_the_waker_knows() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_462_970);
        let mut a = Activity::new();
        assert_eq!(status(&a, "x.fpm"), "started, no request yet");
        a.waking = true;
        a.open = 1;
        a.busy = 1;
        assert_eq!(status(&a, "x.fpm"), "waking x.fpm");
        a.queued = Some(3);
        assert_eq!(status(&a, "x.fpm"), "queued for a wake slot, 3 ahead");
        a.queued = None;
        a.waking = false;
        a.open = 3;
        assert_eq!(
            status(&a, "x.fpm"),
            "serving, 1 request in flight, 3 connections open"
        );
        a.busy = 0;
        a.last_start = Some(t);
        a.last_end = Some(t + Duration::from_secs(1));
        assert_eq!(
            status(&a, "x.fpm"),
            "idle since 2026-11-23T19:42:51Z, 3 connections open"
        );
        a.open = 1;
        assert_eq!(
            status(&a, "x.fpm"),
            "idle since 2026-11-23T19:42:51Z, 1 connection open"
        );
        a.failed_at = Some(t);
        assert_eq!(
            status(&a, "x.fpm"),
            "wake failed at 2026-11-23T19:42:50Z, php-fpm not accepting; the next request tries again"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn exits_when_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), "unix:///nonexistent/docker.sock");
        cfg.exit_idle_time = Some(Duration::from_millis(300));
        let listener = UnixListener::bind(dir.path().join("w.sock")).expect("listener");
        let t = Instant::now();
        let exit = run(listener, cfg, CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(exit, Exit::Idle);
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(300) && e < Duration::from_secs(2),
            "{e:?}"
        );
    }

    /// `--connections-max`: beyond it, connections wait in the kernel
    /// backlog (not accepted, not dropped) and are served when a slot frees.
    /// Also the sd_notify lines a person sees in `systemctl status`.
    #[tokio::test(flavor = "current_thread")]
    async fn connections_beyond_max_wait_in_backlog_and_status_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), "unix:///nonexistent/docker.sock");
        cfg.connections_max = 2;
        let notify_path = dir.path().join("notify");
        let notify_rx = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify");
        notify_rx.set_nonblocking(true).expect("nonblocking");
        cfg.notifier = Notifier::to(&crate::notify::NotifyAddr::Path(notify_path)).expect("to");
        let upstream = UnixListener::bind(&cfg.upstream).expect("upstream");
        let listen_path = dir.path().join("waker.sock");
        let listener = UnixListener::bind(&listen_path).expect("listener");
        let stop = CancellationToken::new();
        let waker = tokio::spawn(run(listener, cfg, stop.clone()));

        let mut c1 = UnixStream::connect(&listen_path).await.expect("c1");
        let (mut u1, _) = upstream.accept().await.expect("u1");
        let _c2 = UnixStream::connect(&listen_path).await.expect("c2");
        let (_u2, _) = upstream.accept().await.expect("u2");
        // The third connects (kernel backlog) but is not taken on.
        let mut c3 = UnixStream::connect(&listen_path).await.expect("c3");
        let third = tokio::time::timeout(Duration::from_millis(300), upstream.accept()).await;
        assert!(
            third.is_err(),
            "a third connection was proxied beyond the limit"
        );
        // Free a slot: c3 is served, its bytes arrive intact.
        c1.shutdown().await.expect("c1 half-close");
        u1.shutdown().await.expect("u1 half-close");
        let mut sink = Vec::new();
        c1.read_to_end(&mut sink).await.expect("c1 end");
        drop((c1, u1));
        let (mut u3, _) = tokio::time::timeout(Duration::from_secs(2), upstream.accept())
            .await
            .expect("c3 served once a slot is free")
            .expect("u3");
        c3.write_all(b"third").await.expect("write");
        let mut buf = [0u8; 5];
        u3.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"third");

        tokio::time::sleep(STATE_WRITE_INTERVAL * 3).await;
        stop.cancel();
        drop((c3, u3));
        waker.await.expect("join").expect("run");
        let mut lines = Vec::new();
        let mut b = [0u8; 512];
        while let Ok(n) = notify_rx.recv(&mut b) {
            lines.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        assert_eq!(
            lines.first().map(String::as_str),
            Some("READY=1\nSTATUS=started, no request yet")
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "STATUS=serving, 2 requests in flight, 2 connections open"),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("STOPPING=1")),
            "{lines:?}"
        );
    }
}
