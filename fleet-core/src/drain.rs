//! Putting a site to sleep without cutting a request: what the reaper and
//! the waker agree on.
//!
//! **The site lock** (`<state_dir>/<site>.lock`, [`crate::site::Layout::lock_file`]).
//! The waker holds it shared ([`Gate`]) from the moment a request is
//! admitted until php-fpm has answered it (and for a whole wake); the
//! reaper takes it exclusive ([`SleepLock::try_take`], never waiting) for
//! the whole of a stop or pause. So the reaper never acts while the waker
//! has a request at php-fpm, and a request arriving while the reaper acts
//! waits at the gate, then finds the site asleep and wakes it. A process
//! that dies lets go of its lock with it.
//!
//! **php-fpm's socket moved aside.** nginx in direct mode connects to
//! `php-fpm.sock` itself. Before acting, the reaper renames it to
//! `php-fpm.sock.sleeping` in the same directory ([`move_aside`]) and leaves
//! the refusing placeholder in its place ([`crate::placeholder`]): nginx's
//! next connect is refused and falls back to the waker, which waits at the
//! gate. php-fpm still listens on the renamed file, so the reaper can ask it
//! (its status page, [`crate::fpm_status`]) until nothing is in progress or
//! queued ([`is_drained`], over readings spaced by [`DRAIN_GAP`]:
//! [`DrainWatch`]), then act. After a pause the renamed socket stays
//! aside (a frozen php-fpm's socket would accept and hang nginx); the waker
//! puts it back when it unpauses ([`restore`]). After a stop it is removed.
//!
//! The runtime directory belongs to the container. Nothing here follows a
//! link: `rename` and `unlink` act on the directory entry itself, a file is
//! moved only when `lstat` says it is a socket, and liveness is told by a
//! connect that refuses symlinks ([`crate::upstream::probe`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::fpm_status::FpmStatus;
use crate::upstream::{self, Liveness};

/// Appended to php-fpm's socket name while the site is put to sleep or
/// paused.
const ASIDE_SUFFIX: &str = ".sleeping";

/// How often a waiting request looks at the lock again; the reaper holds it
/// for a drain and one Docker call.
const GATE_POLL: Duration = Duration::from_millis(10);

/// The lock file could not be opened or locked.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the site lock {path}")]
pub struct LockError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Moving php-fpm's socket aside or back failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {path}")]
pub struct AsideError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn open_lock(path: &Path) -> Result<File, LockError> {
    crate::atomic::open_lock_file(path).map_err(|source| LockError {
        path: path.to_owned(),
        source,
    })
}

/// The reaper's hold on a site while it stops or pauses it.
#[derive(Debug)]
pub struct SleepLock {
    _lock: Flock<File>,
}

impl SleepLock {
    /// Takes the site lock exclusively, or `None` at once when the waker
    /// holds it (a request is at php-fpm or a wake is under way).
    pub fn try_take(path: &Path) -> Result<Option<SleepLock>, LockError> {
        let file = open_lock(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(SleepLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(LockError {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }
}

/// The waker's side of the site lock: held shared while any of its
/// requests is at php-fpm. One per waker process.
#[derive(Debug)]
pub struct Gate {
    path: PathBuf,
    state: Mutex<GateState>,
    /// One acquirer polls the lock at a time; the others queue here.
    acquiring: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct GateState {
    holders: usize,
    lock: Option<Flock<File>>,
    /// The lock file while unlocked, kept open: a request on an idle site
    /// costs one `flock` to take and one to let go, no `open`. (Nothing
    /// removes a lock file while wakers run; a purge stops them first.)
    idle: Option<File>,
}

/// One admitted request (or wake); the lock is let go with the last one.
#[derive(Debug)]
pub struct GateGuard {
    gate: Arc<Gate>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut s = self.gate.state();
        s.holders = s.holders.saturating_sub(1);
        if s.holders == 0
            && let Some(lock) = s.lock.take()
        {
            // On an unlock error the file is dropped, which unlocks too.
            s.idle = lock.unlock().ok();
        }
    }
}

impl Gate {
    pub fn new(path: PathBuf) -> Arc<Gate> {
        Arc::new(Gate {
            path,
            state: Mutex::new(GateState::default()),
            acquiring: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one request: at once while others are admitted, otherwise as
    /// soon as no reaper holds the site. `waiting` is called once if it has
    /// to wait. A lock file that cannot be used admits the request anyway
    /// (the error is returned beside the guard, for the log): a request is
    /// never refused for the lock's sake.
    pub async fn enter(
        self: &Arc<Self>,
        mut waiting: impl FnMut(),
    ) -> (GateGuard, Option<LockError>) {
        // A guard exists only once its hold is counted: a caller that drops
        // this future while it waits must not release someone else's hold.
        let guard = || GateGuard { gate: self.clone() };
        {
            let mut s = self.state();
            if s.holders > 0 {
                s.holders += 1;
                return (guard(), None);
            }
        }
        let _one = self.acquiring.lock().await;
        {
            let mut s = self.state();
            if s.holders > 0 {
                s.holders += 1;
                return (guard(), None);
            }
        }
        let mut told = false;
        let mut file = self.state().idle.take();
        loop {
            let f = match file.take() {
                Some(f) => f,
                None => match open_lock(&self.path) {
                    Ok(f) => f,
                    Err(e) => {
                        self.state().holders += 1;
                        return (guard(), Some(e));
                    }
                },
            };
            match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(lock) => {
                    let mut s = self.state();
                    s.holders += 1;
                    s.lock = Some(lock);
                    return (guard(), None);
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = Some(f);
                    if !told {
                        told = true;
                        waiting();
                    }
                    tokio::time::sleep(GATE_POLL).await;
                }
                Err((_, e)) => {
                    self.state().holders += 1;
                    return (
                        guard(),
                        Some(LockError {
                            path: self.path.clone(),
                            source: e.into(),
                        }),
                    );
                }
            }
        }
    }
}

/// `<socket>.sleeping`.
pub fn aside_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(ASIDE_SUFFIX);
    PathBuf::from(name)
}

/// What [`move_aside`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The socket is now at the aside path.
    Aside,
    /// Nothing was at the socket path.
    Absent,
    /// Something other than a socket is there (a symlink, a file): left
    /// alone, and nothing reaches php-fpm through it anyway.
    NotSocket,
}

fn is_socket(path: &Path) -> io::Result<Option<bool>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m.file_type().is_socket())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when a socket sits at php-fpm's path and none aside: a paused
/// php-fpm there was not steered away from (the reaper moves it aside
/// before it pauses), so connections may be waiting in its frozen backlog.
pub fn paused_in_place(socket: &Path) -> bool {
    matches!(is_socket(socket), Ok(Some(true)))
        && !matches!(is_socket(&aside_path(socket)), Ok(Some(true)))
}

/// Renames php-fpm's socket to the aside path (replacing a stale one there).
pub fn move_aside(socket: &Path) -> Result<Moved, AsideError> {
    let err = |source| AsideError {
        what: "move php-fpm's socket aside:",
        path: socket.to_owned(),
        source,
    };
    match is_socket(socket).map_err(err)? {
        None => Ok(Moved::Absent),
        Some(false) => Ok(Moved::NotSocket),
        Some(true) => match std::fs::rename(socket, aside_path(socket)) {
            Ok(()) => Ok(Moved::Aside),
            // Gone in between (php-fpm exited): nothing to move.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::Absent),
            Err(e) => Err(err(e)),
        },
    }
}

/// What [`restore`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No socket was aside.
    Nothing,
    /// The listening socket is back at php-fpm's path.
    Back,
    /// The socket aside was dead (its php-fpm exited) and is removed.
    StaleRemoved,
    /// Left as it was: something listens at php-fpm's path already (a
    /// php-fpm started since), or what is aside cannot be told.
    Left(String),
}

/// Puts a listening socket that is aside back at php-fpm's path, over the
/// placeholder (or nothing); removes a dead one. Never replaces a socket
/// something listens on.
pub fn restore(socket: &Path) -> Result<Restored, AsideError> {
    let aside = aside_path(socket);
    let err = |what, source| AsideError {
        what,
        path: aside.clone(),
        source,
    };
    match upstream::probe(&aside) {
        Liveness::Absent => Ok(Restored::Nothing),
        Liveness::Dead => match std::fs::remove_file(&aside) {
            Ok(()) => Ok(Restored::StaleRemoved),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Restored::Nothing),
            Err(e) => Err(err("remove the dead socket", e)),
        },
        Liveness::Listening => match upstream::probe(socket) {
            Liveness::Absent | Liveness::Dead => match std::fs::rename(&aside, socket) {
                Ok(()) => Ok(Restored::Back),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Restored::Nothing),
                Err(e) => Err(err("put back", e)),
            },
            other => Ok(Restored::Left(format!(
                "php-fpm's socket path is {other:?}; the one aside stays"
            ))),
        },
        other => Ok(Restored::Left(format!("the socket aside is {other:?}"))),
    }
}

/// Removes the socket aside after a stop (php-fpm is gone; it is dead).
/// Only a socket file is removed.
pub fn discard_aside(socket: &Path) -> Result<bool, AsideError> {
    let aside = aside_path(socket);
    let err = |source| AsideError {
        what: "remove",
        path: aside.clone(),
        source,
    };
    match is_socket(&aside).map_err(err)? {
        Some(true) => match std::fs::remove_file(&aside) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(err(e)),
        },
        _ => Ok(false),
    }
}

/// True when two status readings taken in turn show php-fpm with nothing
/// to do: only the reading's own request active, nothing queued, and no
/// connection accepted between them but the second reading's own.
/// Two readings, because a worker that has just accepted a connection may
/// not have marked itself active yet when another worker reports. php-fpm
/// reports `listen queue` only for TCP pools (0 on a unix socket): what
/// proves nothing is queued is the counter, since the accept queue is first
/// in, first out and a connection queued before the second reading is
/// accepted before it.
pub fn is_drained(first: &FpmStatus, second: &FpmStatus) -> bool {
    let idle = |s: &FpmStatus| s.active_processes <= 1 && s.listen_queue == 0;
    idle(first) && idle(second) && second.accepted_conn == first.accepted_conn.wrapping_add(1)
}

/// The least time from one reading's answer to the next reading's request
/// for the pair to show php-fpm drained ([`DrainWatch`]).
pub const DRAIN_GAP: Duration = Duration::from_millis(50);

/// The readings of a drain, in turn: php-fpm is drained when a pair spaced
/// by [`DRAIN_GAP`] says so ([`is_drained`]). php-fpm counts a connection
/// only once a worker has accepted it and updated the scoreboard; a worker
/// descheduled in between hides a connection queued before the first
/// reading from two readings taken back to back, and the gap gives it the
/// time to show in the second.
#[derive(Debug, Default)]
pub struct DrainWatch {
    /// The last reading and when its answer came.
    last: Option<(FpmStatus, Instant)>,
}

impl DrainWatch {
    /// Takes a reading asked for at `asked` and answered at `answered`;
    /// true when it and the one before show php-fpm drained.
    pub fn observe(&mut self, reading: FpmStatus, asked: Instant, answered: Instant) -> bool {
        let drained = self.last.as_ref().is_some_and(|(prev, prev_answered)| {
            asked.saturating_duration_since(*prev_answered) >= DRAIN_GAP
                && is_drained(prev, &reading)
        });
        self.last = Some((reading, answered));
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(accepted: u64, active: u64, queue: u64) -> FpmStatus {
        FpmStatus {
            pool: "www".into(),
            accepted_conn: accepted,
            listen_queue: queue,
            active_processes: active,
            idle_processes: 1,
            total_processes: 2,
        }
    }

    #[test]
    fn drained_needs_two_quiet_readings_in_a_row() {
        assert!(is_drained(&status(10, 1, 0), &status(11, 1, 0)));
        assert!(!is_drained(&status(10, 2, 0), &status(11, 1, 0)));
        assert!(!is_drained(&status(10, 1, 0), &status(11, 1, 1)));
        assert!(
            !is_drained(&status(10, 1, 0), &status(12, 1, 0)),
            "another connection came in between"
        );
    }

    /// Only a pair of readings spaced by the gap counts: a pair read back to
    /// back says nothing of a connection a worker accepted just before the
    /// first and has not counted yet.
    #[test]
    fn drained_needs_a_pair_spaced_by_the_gap() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let gap = DRAIN_GAP.as_millis() as u64;
        let mut w = DrainWatch::default();
        assert!(!w.observe(status(10, 1, 0), ms(0), ms(1)), "one reading");
        assert!(
            !w.observe(status(11, 1, 0), ms(1), ms(2)),
            "quiet, but back to back"
        );
        // The hidden connection shows once its worker counts it.
        assert!(!w.observe(status(13, 2, 0), ms(2 + gap), ms(3 + gap)));
        assert!(!w.observe(status(14, 1, 0), ms(3 + 2 * gap), ms(4 + 2 * gap)));
        assert!(w.observe(status(15, 1, 0), ms(4 + 3 * gap), ms(5 + 3 * gap)));

        // The gap is from the first answer to the second request.
        let mut w = DrainWatch::default();
        assert!(!w.observe(status(10, 1, 0), ms(0), ms(30)));
        assert!(!w.observe(status(11, 1, 0), ms(29 + gap), ms(30 + gap)));
        assert!(w.observe(status(12, 1, 0), ms(30 + 2 * gap), ms(31 + 2 * gap)));
    }

    #[test]
    fn aside_is_beside() {
        assert_eq!(
            aside_path(Path::new("/run/docker-apps/a/php-fpm.sock")),
            PathBuf::from("/run/docker-apps/a/php-fpm.sock.sleeping")
        );
    }

    #[test]
    fn moves_only_sockets_and_restores_only_listeners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("php-fpm.sock");
        assert_eq!(move_aside(&sock).expect("absent"), Moved::Absent);
        std::os::unix::fs::symlink("/etc/passwd", &sock).expect("symlink");
        assert_eq!(move_aside(&sock).expect("symlink"), Moved::NotSocket);
        assert!(
            std::fs::symlink_metadata(&sock)
                .expect("still there")
                .file_type()
                .is_symlink()
        );
        std::fs::remove_file(&sock).expect("rm");

        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert_eq!(move_aside(&sock).expect("socket"), Moved::Aside);
        assert!(!sock.exists() && aside_path(&sock).exists());
        // The refusing placeholder takes its place; restore puts the
        // listener back over it.
        crate::placeholder::ensure(&sock).expect("placeholder");
        assert_eq!(restore(&sock).expect("restore"), Restored::Back);
        assert!(!aside_path(&sock).exists());
        std::os::unix::net::UnixStream::connect(&sock).expect("the listener is back");

        // A live socket at the path is never replaced.
        let other = dir.path().join("other.sock");
        let _l2 = std::os::unix::net::UnixListener::bind(&other).expect("bind");
        std::fs::rename(&other, aside_path(&sock)).expect("rename");
        assert!(matches!(restore(&sock).expect("left"), Restored::Left(_)));
        drop(listener);

        // A dead socket aside is removed.
        drop(_l2);
        assert_eq!(restore(&sock).expect("dead"), Restored::StaleRemoved);
        assert!(!aside_path(&sock).exists());
    }

    #[tokio::test]
    async fn the_gate_waits_for_the_reaper_and_holds_off_the_reaper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.lock");
        let gate = Gate::new(path.clone());
        let (g1, e) = gate.enter(|| {}).await;
        assert!(e.is_none());
        let (g2, _) = gate.enter(|| panic!("a second request never waits")).await;
        assert!(SleepLock::try_take(&path).expect("lock").is_none());
        drop(g1);
        assert!(SleepLock::try_take(&path).expect("lock").is_none());
        drop(g2);
        let held = SleepLock::try_take(&path)
            .expect("lock")
            .expect("free once the last request is done");
        let (told, waiting) = tokio::sync::oneshot::channel();
        let mut told = Some(told);
        let g = gate.clone();
        let entered = tokio::spawn(async move {
            let (guard, _) = g
                .enter(move || {
                    if let Some(t) = told.take() {
                        let _ = t.send(());
                    }
                })
                .await;
            guard
        });
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("told it waits while the reaper holds the site")
            .expect("waiting callback");
        assert!(!entered.is_finished(), "waits while the reaper holds it");
        drop(held);
        let guard = tokio::time::timeout(Duration::from_secs(5), entered)
            .await
            .expect("admitted once the reaper let go")
            .expect("task");
        assert!(gate.state().holders > 0);
        drop(guard);
        assert_eq!(gate.state().holders, 0);
    }
}
