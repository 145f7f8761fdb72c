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
//!   at `start_timeout` naming the refusal, which is logged once, at most
//!   one refusal line a minute (with a count of those left out). The
//!   refused file is not connected to again, unless the refusal is only
//!   that Docker could not tell the container's id: that is asked again
//!   on the next attempt, each inquiry bounded by the wake's deadline.
//! * **Wake**: the first connection that finds no php-fpm starts one wake
//!   task; every connection arriving meanwhile joins it (a `watch` channel),
//!   so there is one start call however many connections arrive. The wake
//!   starts the container (unpauses it when php-fpm was found frozen, and
//!   inspects only when Docker refuses the start), and waits for php-fpm:
//!   inotify on the runtime directory (an instance for this wake only)
//!   for the socket's creation, confirmed
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
//!
//! One file per concept: `server.rs` (accept loop, permits, the relay's
//! hooks, idle exit, activity reporting), `wake.rs` (one wake per site,
//! back-off, the death watch), `readiness.rs` (connect attempts and their
//! checks, the directory watch) and `freezer.rs` (is php-fpm paused).

mod freezer;
mod readiness;
mod server;
mod wake;

pub use freezer::{FreezerFile, freezer_file};
pub use readiness::MAX_RETRY_STEP;
pub use server::{FD_RESERVE, STATE_WRITE_INTERVAL, connections_within, fit_connections};
pub use wake::{
    BACKOFF_AFTER, BACKOFF_FIRST, BACKOFF_MAX, Backoff, DEATH_WATCH_DELAY, WakeFailure,
};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::docker::Engine;
use crate::notify::Notifier;
use crate::site::Site;
use crate::upstream::{FileId, Refusal};

use freezer::OpenFreezer;
use readiness::RefusalLog;
use server::LiveActivity;
use wake::WakeOutcome;

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
    /// The longest a start holds its wake slot while php-fpm boots.
    pub slot_hold_max: Duration,
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

/// What every connection and the wake task share; each concept's file
/// adds the methods it needs.
struct Shared {
    cfg: Config,
    /// The wake in flight, if any.
    wake: Mutex<Option<watch::Receiver<WakeOutcome>>>,
    activity: watch::Sender<LiveActivity>,
    /// (pid, freezer state file) of the upstream's listener, cached.
    /// The file stays open and is re-read with `pread` at offset 0 (one
    /// syscall per connection on the warm path).
    freezer: Mutex<Option<(i32, Option<OpenFreezer>)>>,
    /// The last failed attempt found php-fpm frozen: the wake can unpause
    /// without inspecting first.
    saw_frozen: std::sync::atomic::AtomicBool,
    /// The waker's own listening socket: its file and bound path, never an
    /// upstream.
    own: Option<(FileId, PathBuf)>,
    /// The upstream socket file and listener pid last checked and found to
    /// be the site's container's: connections to it are not checked again.
    verified: Mutex<Option<(FileId, i32)>>,
    /// The upstream file last refused (not connected to again; never for
    /// a Docker that could not be asked), and the refusals logged
    /// (rate-limited, see `RefusalLog`).
    refused: Mutex<Option<(FileId, Refusal)>>,
    logged: Mutex<RefusalLog>,
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
    let (activity, idle_rx) = watch::channel(LiveActivity::new());
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
        own,
        verified: Mutex::new(None),
        refused: Mutex::new(None),
        logged: Mutex::new(RefusalLog::default()),
        last_refusal: Mutex::new(None),
        container_id: tokio::sync::Mutex::new(None),
        backoff: Mutex::new(Backoff::default()),
        gate: crate::drain::Gate::new(cfg_lock_file),
    });
    Ok(server::accept_loop(listener, shared, idle_rx, shutdown).await)
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
