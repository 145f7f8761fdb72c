//! One wake at a time per site: the first connection that finds no
//! php-fpm starts a wake task, later ones join it; the wake starts or
//! unpauses the container, puts php-fpm's socket back, and fails at once
//! when Docker reports the container's death. Failing starts in a row
//! back off.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UnixStream;
use tokio::sync::watch;

use super::readiness::{Attempt, DirWatch, MAX_RETRY_STEP, attempt, wait_ready};
use super::{Config, Shared, lock};
use crate::docker::wake::{WakeAction, WakeError};
use crate::site::Site;
use crate::upstream::{self, Refusal};

/// How long a wake runs before it subscribes to the container's `die`
/// events (see `watch_death_later`).
pub const DEATH_WATCH_DELAY: Duration = Duration::from_millis(25);

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
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .map(|u| u.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
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
    fn is_the_containers(&self) -> bool {
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

pub(super) type WakeOutcome = Option<Result<(), Arc<WakeFailure>>>;

pub(super) async fn connect_or_wake(shared: &Arc<Shared>) -> Result<UnixStream, Arc<WakeFailure>> {
    let started = Instant::now();
    let deadline = started + shared.cfg.start_timeout;
    let mut step = Duration::from_micros(500);
    let mut wakes = 0;
    loop {
        match attempt(shared, deadline).await {
            Attempt::Ready(s) => return Ok(s),
            Attempt::Asleep | Attempt::Rejected { .. } => {
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
pub(super) async fn join_wake(shared: &Arc<Shared>) -> Result<(), Arc<WakeFailure>> {
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
    // Probed once per wake: each probe of a frozen php-fpm leaves an
    // empty connection in its backlog.
    let frozen = shared
        .saw_frozen
        .swap(false, std::sync::atomic::Ordering::Relaxed)
        || paused_aside(cfg);
    let admitted = match (&cfg.admission, frozen) {
        (Some(adm), false) => take_slot(&shared, adm).await.map(Some),
        _ => Ok(None),
    };
    // The wake lets the slot go once php-fpm accepts, or after
    // `slot_hold_max` ([`ready_in_slot`]).
    let mut slot = None;
    let result = match admitted {
        Ok(held) => {
            slot = held;
            let deadline = Instant::now() + cfg.start_timeout;
            let until = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(until, wake(&shared, frozen, &mut slot, deadline)).await {
                Ok(r) => r,
                Err(_) => Err(shared.timeout()),
            }
        }
        Err(e) => Err(e),
    };
    // A wake cut off while queued again (a death under it) left its place.
    shared.activity.send_modify(|a| a.queued = None);
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
    // Still held only by a wake that failed or timed out before php-fpm
    // accepted: it says nothing about how long a start takes.
    let_go(cfg, &mut slot, None);
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

/// Makes the container run and waits until php-fpm accepts. `slot` is the
/// wake slot held for a start ([`ready_in_slot`]).
async fn wake(
    shared: &Shared,
    frozen: bool,
    slot: &mut Option<crate::admission::Slot>,
    deadline: Instant,
) -> Result<&'static str, WakeFailure> {
    let cfg = &shared.cfg;
    // Another wake may have just finished.
    if let Attempt::Ready(_) = attempt(shared, deadline).await {
        return Ok("was ready");
    }
    let since = SystemTime::now();
    let docker = |source| WakeFailure::Docker {
        site: cfg.site.clone(),
        container: cfg.container.clone(),
        source,
    };
    // Frozen behind a live socket (seen by a connection, or the reaper's
    // socket aside): that is `docker pause`; unpause straight away (one API
    // call fewer), and inspect only if that fails.
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
    // Whatever Docker did: bollard reports a running container's start (304)
    // as a start, and a socket the reaper left aside before it was
    // interrupted must still go back.
    put_back(cfg);
    // A start waits for php-fpm to bind: watched, not polled. Nothing is
    // missed by watching only now, since the wait's first step is a
    // connect. An unpause is ready at once and takes no inotify instance
    // (they count per uid: a storm of 300 unpauses would use up root's).
    // The instance lives for this wake only (a warm waker holds none) and
    // is closed off this thread when dropped, the wake's timeout included.
    let mut watch = (action == WakeAction::Started)
        .then(|| DirWatch::new(&cfg.upstream))
        .flatten();
    let death = tokio::select! {
        r = ready_in_slot(shared, &mut watch, deadline, slot, action) => return r.map(|()| action.as_str()),
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
    // This is a start: it takes a slot again if the first wait let it go.
    if slot.is_none()
        && let Some(adm) = &cfg.admission
    {
        *slot = Some(take_slot(shared, adm).await?);
    }
    let since = SystemTime::now();
    // On an error the wake's owner lets the slot go.
    let action = cfg
        .engine
        .make_running(&cfg.container)
        .await
        .map_err(docker)?;
    if watch.is_none() {
        watch = DirWatch::new(&cfg.upstream);
    }
    tokio::select! {
        r = ready_in_slot(shared, &mut watch, deadline, slot, action) => r.map(|()| action.as_str()),
        e = watch_death_later(cfg, since) => Err(docker(e)),
    }
}

/// Takes a host-wide wake slot for a start, in the queue's order.
async fn take_slot(
    shared: &Shared,
    adm: &crate::admission::Admission,
) -> Result<crate::admission::Slot, WakeFailure> {
    let t0 = Instant::now();
    let r = adm.acquire(&mut QueueProgress(shared)).await;
    shared.activity.send_modify(|a| a.queued = None);
    let slot = r.map_err(|source| WakeFailure::Queued {
        site: shared.cfg.site.clone(),
        source,
    })?;
    let queued_ms = t0.elapsed().as_millis() as u64;
    tracing::info!(site = %shared.cfg.site, slot = slot.index(), queued_ms, "admitted to a wake slot");
    Ok(slot)
}

/// Waits until php-fpm accepts, holding the wake slot (if any) meanwhile:
/// a start's boot (entrypoint, php-fpm and its workers) is the load the
/// slots keep to K at once. The slot is let go when php-fpm accepts or
/// `slot_hold_max` after admission, whichever comes first, and how long it
/// was held is recorded (the queue's estimate: what a waiter waits for): a
/// container that runs but whose php-fpm never accepts where the waker
/// looks keeps no other site's start waiting longer than that.
async fn ready_in_slot(
    shared: &Shared,
    watch: &mut Option<DirWatch>,
    deadline: Instant,
    slot: &mut Option<crate::admission::Slot>,
    action: WakeAction,
) -> Result<(), WakeFailure> {
    let cfg = &shared.cfg;
    let Some(held) = slot.as_ref() else {
        return wait_ready(shared, watch, deadline).await;
    };
    // From admission: a second start (a death under the wake) gets no more.
    let left = cfg.slot_hold_max.saturating_sub(held.held());
    let ready = wait_ready(shared, watch, deadline);
    tokio::pin!(ready);
    tokio::select! {
        r = &mut ready => {
            let_go(cfg, slot, r.is_ok().then_some(action));
            r
        }
        // Recorded: the queue waits that long for this slot.
        () = tokio::time::sleep(left) => {
            let_go(cfg, slot, Some(action));
            ready.await
        }
    }
}

/// Lets the wake slot go; `done` is the start that php-fpm now answers
/// for, whose time in the slot is recorded (nothing for a wait cut off or
/// failed, or an unpause).
fn let_go(cfg: &Config, slot: &mut Option<crate::admission::Slot>, done: Option<WakeAction>) {
    let Some(held) = slot.take() else { return };
    let took = held.held();
    // Logged before the slot is free: the next site's admission comes after.
    tracing::info!(
        site = %cfg.site,
        slot = held.index(),
        action = done.map_or("failed", WakeAction::as_str),
        held_ms = took.as_millis() as u64,
        "wake slot let go"
    );
    match done {
        Some(WakeAction::Started) => held.release(took),
        _ => held.let_go(),
    }
}

/// True when the reaper paused the site: php-fpm's socket is aside and
/// still listening (a frozen process's socket accepts into its backlog).
/// Then the wake unpauses at once, with no start attempt and no wake slot.
fn paused_aside(cfg: &Config) -> bool {
    upstream::probe(&crate::drain::aside_path(&cfg.upstream)) == upstream::Liveness::Listening
}

/// After the container was made to run: php-fpm's socket goes back to its
/// path if the reaper left it aside and it still listens ([`crate::drain`]).
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
