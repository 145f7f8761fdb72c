//! Is php-fpm there: one connect attempt with the checks of
//! [`crate::upstream`] (and, once per socket file and listener, that the
//! listener is the site's container's), and, during a wake, the wait for
//! the socket through inotify on its directory.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::{PeerCheck, Shared, WakeFailure, lock};
use crate::upstream::{self, FileId, Refusal};

/// Longest step between two readiness retries.
pub const MAX_RETRY_STEP: Duration = Duration::from_millis(5);

/// Least time between two "refusing php-fpm's socket" lines.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Which refusals were logged. A refusal is logged once (not again while it
/// is the last one logged), and at most one line per
/// [`REFUSAL_LOG_INTERVAL`] whatever the refusals: a tenant who alternates
/// what is at the socket's path (a symlink, a FIFO, a listener of its own)
/// makes a new refusal on every attempt of a wake, which must not become a
/// line each. The lines left out are counted in the next one.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    last: Option<Refusal>,
    at: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether to log `why` now: `Some(n)` with the `n` refusals left out
    /// since the last line, `None` to stay quiet.
    pub(super) fn note(&mut self, why: &Refusal, now: Instant) -> Option<u64> {
        if self.last.as_ref() == Some(why) {
            return None;
        }
        if self
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(why.clone());
        self.at = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// A listener passed the checks: a refusal after it is news again, but
    /// still no sooner than the interval allows (a tenant alternating a
    /// good socket with a bad one must not make a line per attempt either).
    pub(super) fn accepted(&mut self) {
        self.last = None;
    }
}

/// How a connect attempt to the upstream went.
pub(super) enum Attempt {
    Ready(UnixStream),
    /// Nothing accepts there (no file, stale file) or it is frozen.
    Asleep,
    /// The backlog is full (EAGAIN): php-fpm is there but busy.
    Busy,
    /// Something that must not be connected to is there (no byte sent);
    /// `temporary`: or it could not be checked (Docker did not answer).
    Rejected {
        temporary: bool,
    },
    Failed(io::Error),
}

/// One connect to the upstream, with the checks of [`crate::upstream`].
/// The connect is not awaited on the reactor: a unix `connect` completes
/// (or fails with EAGAIN when the backlog is full) at once. A Docker call
/// of the listener check ends by `deadline` (the wake's).
pub(super) async fn attempt(shared: &Shared, deadline: Instant) -> Attempt {
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
                if let Err(why) = shared.verify(&c, deadline).await {
                    // Docker not answering is no fact about this file: the
                    // next attempt asks again.
                    let file = (!why.is_temporary()).then_some(c.file);
                    return shared.reject(file, why, c.pid);
                }
                *lock(&shared.verified) = Some((c.file, c.pid));
                *lock(&shared.refused) = None;
                lock(&shared.logged).accepted();
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

/// Waits until a real connect to the upstream succeeds. Before the socket
/// shows up, inotify wakes us; once something happened to it (created, moved
/// in, chmod-ed) we retry with steps growing to at most [`MAX_RETRY_STEP`]
/// (php-fpm binds, then listens). Without inotify we poll in those steps.
pub(super) async fn wait_ready(
    shared: &Shared,
    watch: &mut Option<DirWatch>,
    deadline: Instant,
) -> Result<(), WakeFailure> {
    let mut step = Duration::from_micros(250);
    // A slow safety net for events we cannot see (the directory replaced).
    const SLOW: Duration = Duration::from_millis(100);
    let mut fast = watch.is_none();
    // While Docker cannot tell whose listener it is, it is asked again at
    // this pace, not at the connect retries' (every few ms, each also an
    // empty connection in php-fpm's backlog).
    let mut unchecked = Duration::from_millis(100);
    let t0 = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt(shared, deadline).await {
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
            Attempt::Rejected { temporary: true } => {
                // The wake's own timeout ends this wait at its deadline.
                tokio::time::sleep(unchecked).await;
                unchecked = (unchecked * 2).min(Duration::from_secs(1));
                continue;
            }
            Attempt::Asleep | Attempt::Rejected { temporary: false } => {}
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

/// inotify on the upstream's directory, reporting events for its file name;
/// made for one wake's wait and closed after it ([`crate::fswatch`]).
pub(super) struct DirWatch {
    events: crate::fswatch::Watch,
    name: std::ffi::OsString,
}

impl DirWatch {
    pub(super) fn new(upstream: &Path) -> Option<Self> {
        use inotify::WatchMask;
        let dir = upstream.parent()?;
        let name = upstream.file_name()?.to_owned();
        let events = crate::fswatch::Watch::new(
            dir,
            WatchMask::CREATE
                | WatchMask::MOVED_TO
                | WatchMask::ATTRIB
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
            "php-fpm's socket",
        )?;
        Some(DirWatch { events, name })
    }

    /// Resolves on the next event about the socket (or the directory itself).
    async fn changed(&mut self) -> io::Result<()> {
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
    /// Checks that the listener behind a new upstream socket file is the
    /// site's own php-fpm: not this waker (by its bound path), and, with
    /// [`PeerCheck::Cgroup`], a process whose cgroup names the container.
    /// Asking Docker for the container's id ends by `deadline`, the wait
    /// for another connection's inquiry included: it holds a lock every
    /// new listener's check waits for.
    async fn verify(&self, c: &upstream::Connected, deadline: Instant) -> Result<(), Refusal> {
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
        let matches = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), async {
            let mut id = self.container_id.lock().await;
            if let Some(known) = id.as_deref()
                && upstream::cgroup_names_container(&cgroup, known)
            {
                return Ok(true);
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
            Ok(matches)
        })
        .await
        .unwrap_or_else(|_| {
            Err(Refusal::NoContainerId {
                error: format!(
                    "Docker did not answer within the start timeout ({})",
                    humantime::Duration::from(self.cfg.start_timeout)
                ),
            })
        })?;
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
    /// is logged as [`RefusalLog`] allows, and the attempt counts as "not
    /// ready".
    fn reject(&self, file: Option<FileId>, why: Refusal, pid: i32) -> Attempt {
        if let Some(file) = file {
            *lock(&self.refused) = Some((file, why.clone()));
        }
        let log = lock(&self.logged).note(&why, Instant::now());
        if let Some(suppressed) = log {
            tracing::warn!(
                site = %self.cfg.site,
                path = %self.cfg.upstream.display(),
                peer_pid = pid,
                reason = %why,
                suppressed,
                "refusing php-fpm's socket; no byte relayed"
            );
        }
        let temporary = why.is_temporary();
        *lock(&self.last_refusal) = Some(why);
        Attempt::Rejected { temporary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::FileKind;

    /// A socket path alternating between a symlink and a FIFO makes a new
    /// refusal on every attempt: one line, then none until the interval
    /// has passed, and that line counts the ones left out. The same
    /// refusal again is never news.
    #[test]
    fn alternating_refusals_make_one_line_per_interval() {
        let (link, fifo) = (
            Refusal::NotSocket(FileKind::Symlink),
            Refusal::NotSocket(FileKind::Fifo),
        );
        let t = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.note(&link, t), Some(0));
        let lines = (1..1000u32)
            .map(|i| {
                let why = if i % 2 == 0 { &link } else { &fifo };
                log.note(why, t + Duration::from_millis(i.into()))
            })
            .filter(Option::is_some)
            .count();
        assert_eq!(lines, 0);
        // A good socket in between does not open the gate either: that
        // refusal is left out too (500 FIFOs, then it).
        log.accepted();
        assert_eq!(log.note(&link, t + Duration::from_secs(2)), None);
        let later = t + REFUSAL_LOG_INTERVAL;
        assert_eq!(log.note(&fifo, later), Some(501));
        assert_eq!(log.note(&fifo, later + REFUSAL_LOG_INTERVAL), None);
        assert_eq!(
            log.note(&link, later + REFUSAL_LOG_INTERVAL),
            Some(0),
            "a new refusal after the interval"
        );
    }
}
