//! Host-wide wake admission: at most K container starts at once, shared by
//! every waker process without a daemon.
//!
//! 300 simultaneous `docker start`s slow each other down until many miss
//! their start timeout (congestion collapse). So a waker about to start its
//! container first takes one of K *slot* files under the state directory
//! (`wake-slots/<i>`) with `flock(LOCK_EX | LOCK_NB)`, and holds it until
//! php-fpm accepts (the boot is the load to limit) or for `--slot-hold-max`
//! at most (a php-fpm that never accepts must not hold up every other
//! site's start for long). The kernel drops the lock when the waker dies,
//! so a crash never leaks a slot.
//!
//! Arrival order: a waiting waker first puts a *ticket* in `wake-queue/`,
//! named by its arrival time (nanoseconds, zero-padded, so names sort by
//! time) and pid, and holds a lock on it. It may take a slot only while
//! fewer than K live tickets are older than its own. A ticket whose lock can
//! be taken belongs to a dead waker and is removed. Waiting is event-driven:
//! inotify reports each slot file's close (a waker done with its slot), with
//! a slow timer as a safety net.
//!
//! Each waker writes how long it held the slot for its last start (to
//! php-fpm's accept, or the hold's cap) into the slot file when it lets go; waiters estimate their wait from those (`estimate`) and give
//! up at once when it exceeds what the front end would wait anyway, so a
//! crawler gets a fast 503 instead of a 504 a minute later.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

/// Slow safety-net poll while queued near the head (events normally wake a
/// waiter first).
const POLL: Duration = Duration::from_millis(250);
/// How often a waiter far back in the queue looks at its place. Only the
/// waiters within two rounds of the head (`ahead < 2 K`) wait on every
/// release: with hundreds queued, waking all of them on each release would
/// cost more CPU than the starts themselves.
const POLL_FAR: Duration = Duration::from_secs(1);
/// How often a waiter near the head checks that the tickets ahead of it are
/// alive (a dead waiter's ticket reaches the head like any other).
const SWEEP: Duration = Duration::from_secs(1);

/// The default K: one start per CPU, at least 2. A container start is
/// CPU-bound work for dockerd, containerd, runc and the new php-fpm; more
/// starts than CPUs at once only make each slower.
pub fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Where the slots and the queue live, and how many slots there are.
#[derive(Debug, Clone)]
pub struct Admission {
    root: PathBuf,
    slots: usize,
    /// The longest a connection may wait in the queue before it is answered
    /// "retry later" (and the bound on the estimated wait at entry).
    max_wait: Duration,
}

/// A held slot; dropping it lets the next waker in.
#[derive(Debug)]
pub struct Slot {
    lock: Flock<File>,
    index: usize,
    path: PathBuf,
    acquired: Instant,
}

impl Slot {
    /// Lets go of the slot, then records how long this wake took (for
    /// others' estimates). Closing the written file is the event waiters
    /// wake on, so it comes after the unlock.
    pub fn release(self, took: Duration) {
        let Slot { lock, path, .. } = self;
        drop(lock);
        let ms = format!("{:<20}\n", took.as_millis());
        if let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            let _ = f.write_at(ms.as_bytes(), 0);
        }
    }

    /// Lets go of the slot without recording a duration: a wake that started
    /// nothing, or failed, says nothing about how long a start takes. The
    /// waiters are woken all the same.
    pub fn let_go(self) {
        let Slot { lock, path, .. } = self;
        drop(lock);
        announce(&path);
    }

    /// How long it has been held.
    pub fn held(&self) -> Duration {
        self.acquired.elapsed()
    }

    /// Which slot (0-based).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Why no slot was had.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "{ahead} wakes are queued ahead on this host; at about {per_wake_ms} ms per wake and {slots} at once the wait would be {}, more than {}",
        humantime::format_duration(*.estimate),
        humantime::format_duration(*.max_wait)
    )]
    QueueTooLong {
        ahead: usize,
        slots: usize,
        per_wake_ms: u64,
        estimate: Duration,
        max_wait: Duration,
    },
    #[error("queued for a wake slot for {}, the most a request waits", humantime::format_duration(*.waited))]
    Waited { waited: Duration },
    #[error("wake slots in {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl AdmissionError {
    /// Seconds a client should wait before retrying (`Retry-After`).
    pub fn retry_after(&self) -> u64 {
        match self {
            AdmissionError::QueueTooLong { estimate, .. } => estimate.as_secs().max(1),
            AdmissionError::Waited { .. } | AdmissionError::Io { .. } => 5,
        }
    }
}

/// The estimated wait in the queue with `ahead` wakes before ours, `slots`
/// at once, each taking `per_wake` (pure).
fn estimate(ahead: usize, slots: usize, per_wake: Duration) -> Duration {
    let rounds = ahead / slots.max(1) + 1;
    per_wake * u32::try_from(rounds).unwrap_or(u32::MAX)
}

/// The typical wake duration from the slot files' recorded durations
/// (median of those known); `None` before any wake was recorded.
pub fn typical(recorded: &[u64]) -> Option<Duration> {
    let mut v: Vec<u64> = recorded.iter().copied().filter(|&ms| ms > 0).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(Duration::from_millis(v[v.len() / 2]))
}

/// The (time, pid) of a ticket file name `<ns>-<pid>`.
fn parse_ticket(name: &str) -> Option<(u128, u32)> {
    let (ns, pid) = name.split_once('-')?;
    Some((ns.parse().ok()?, pid.parse().ok()?))
}

/// What a waiter reports while queued.
pub trait Progress: Send {
    /// Called when the number of wakes ahead changes.
    fn queued(&mut self, ahead: usize);
}

impl Progress for () {
    fn queued(&mut self, _ahead: usize) {}
}

impl Admission {
    /// `slots` slot files and the queue under `state_dir`.
    pub fn new(state_dir: &Path, slots: usize, max_wait: Duration) -> Admission {
        Admission {
            root: state_dir.to_owned(),
            slots: slots.max(1),
            max_wait,
        }
    }

    fn slot_dir(&self) -> PathBuf {
        self.root.join("wake-slots")
    }

    fn queue_dir(&self) -> PathBuf {
        self.root.join("wake-queue")
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> AdmissionError {
        let path = path.to_owned();
        move |source| AdmissionError::Io { path, source }
    }

    /// A slot file, read-only: closing it must not look like a release
    /// (`IN_CLOSE_WRITE`) to the waiters.
    fn open_slot(&self, i: usize) -> Result<File, AdmissionError> {
        let path = self.slot_dir().join(i.to_string());
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::atomic::open_lock_file(&path).map_err(self.io(&path))?;
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(self.io(&path))
            }
            Err(e) => Err((self.io(&path))(e)),
        }
    }

    /// Takes a slot when fewer than the free slots are queued `ahead`: the
    /// free ones are taken to count them, one is kept, the rest let go (and
    /// announced, as a release would be, to the waiters that may now go).
    fn try_slot(&self, ahead: usize) -> Result<Option<Slot>, AdmissionError> {
        let mut free = Vec::new();
        for index in 0..self.slots {
            let file = self.open_slot(index)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => free.push(Slot {
                    lock,
                    index,
                    path: self.slot_dir().join(index.to_string()),
                    acquired: Instant::now(),
                }),
                Err((_, nix::Error::EWOULDBLOCK)) => {}
                Err((_, e)) => {
                    let path = self.slot_dir().join(index.to_string());
                    return Err((self.io(&path))(e.into()));
                }
            }
            if free.len() > ahead + 1 {
                break;
            }
        }
        if ahead >= free.len() {
            return Ok(None);
        }
        let mine = free.swap_remove(0);
        if let Some(other) = free.pop() {
            let path = other.path.clone();
            drop(other);
            drop(free);
            announce(&path);
        }
        Ok(Some(mine))
    }

    /// The durations the slot files recorded, in ms.
    fn recorded(&self) -> Vec<u64> {
        (0..self.slots)
            .filter_map(|i| {
                let f = File::open(self.slot_dir().join(i.to_string())).ok()?;
                let mut buf = [0u8; 24];
                let n = f.read_at(&mut buf, 0).ok()?;
                std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
            })
            .collect()
    }

    /// Waits for a slot in arrival order. Gives up with
    /// [`AdmissionError::QueueTooLong`] at once when the estimated wait is
    /// longer than `max_wait`, and with [`AdmissionError::Waited`] after
    /// `max_wait`.
    pub async fn acquire(
        &self,
        progress: &mut (dyn Progress + Send),
    ) -> Result<Slot, AdmissionError> {
        let (slot_dir, queue_dir) = (self.slot_dir(), self.queue_dir());
        for dir in [&slot_dir, &queue_dir] {
            std::fs::create_dir_all(dir).map_err(self.io(dir))?;
        }
        // The common case: nobody queued, a slot free.
        if empty_dir(&queue_dir)
            && let Some(slot) = self.try_slot(0)?
        {
            return Ok(slot);
        }
        let ticket = Ticket::new(&queue_dir).map_err(self.io(&queue_dir))?;
        let mut watch = None;
        let t0 = Instant::now();
        let mut last_sweep = Instant::now();
        let mut last_ahead = usize::MAX;
        let mut near = false;
        let mut watching = false;
        loop {
            let sweep = near && last_sweep.elapsed() >= SWEEP;
            if sweep {
                last_sweep = Instant::now();
            }
            let ahead = ticket.ahead(sweep).map_err(self.io(&queue_dir))?;
            near = ahead < 2 * self.slots;
            if ahead != last_ahead {
                progress.queued(ahead);
                if last_ahead == usize::MAX
                    && let Some(per_wake) = typical(&self.recorded())
                {
                    let estimate = estimate(ahead, self.slots, per_wake);
                    if estimate > self.max_wait {
                        return Err(AdmissionError::QueueTooLong {
                            ahead,
                            slots: self.slots,
                            per_wake_ms: per_wake.as_millis() as u64,
                            estimate,
                            max_wait: self.max_wait,
                        });
                    }
                }
                last_ahead = ahead;
            }
            if ahead < self.slots
                && let Some(slot) = self.try_slot(ahead)?
            {
                return Ok(slot);
            }
            let waited = t0.elapsed();
            if waited >= self.max_wait {
                return Err(AdmissionError::Waited { waited });
            }
            if !near {
                tokio::time::sleep(POLL_FAR.min(self.max_wait - waited)).await;
                continue;
            }
            if !watching {
                watching = true;
                watch = SlotWatch::new(&slot_dir);
                // A release may have happened before the watch existed.
                continue;
            }
            match &mut watch {
                Some(w) => w.wait(POLL).await,
                None => tokio::time::sleep(POLL / 5).await,
            }
        }
    }
}

/// Wakes the waiters (their inotify sees a close after writing).
fn announce(slot: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(slot);
}

fn empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// A waiter's place in the queue; removed on drop.
struct Ticket {
    path: PathBuf,
    key: (u128, u32),
    _lock: Flock<File>,
}

impl Ticket {
    fn new(dir: &Path) -> io::Result<Ticket> {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let pid = std::process::id();
        let path = dir.join(format!("{ns:025}-{pid}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io::Error::from(e))?;
        Ok(Ticket {
            path,
            key: (ns, pid),
            _lock: lock,
        })
    }

    /// Live tickets older than this one. With `sweep`, each older ticket's
    /// lock is tried: one that can be taken belongs to a dead waker and is
    /// removed.
    fn ahead(&self, sweep: bool) -> io::Result<usize> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(parse_ticket) else {
                continue;
            };
            if key >= self.key {
                continue;
            }
            if sweep && !alive(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a ticket's waker still holds its lock.
fn alive(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, nix::Error::EWOULDBLOCK)) => true,
        Err(_) => true,
    }
}

/// inotify on the slot directory: a slot file closed after writing is a
/// waker letting go of its slot. Held only while queued.
struct SlotWatch(crate::fswatch::Watch);

impl SlotWatch {
    fn new(dir: &Path) -> Option<SlotWatch> {
        crate::fswatch::Watch::new(dir, inotify::WatchMask::CLOSE_WRITE, "a free wake slot")
            .map(SlotWatch)
    }

    /// Until a slot is let go, or `max`.
    async fn wait(&mut self, max: Duration) {
        let _ = tokio::time::timeout(max, self.0.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_and_tickets() {
        let s = Duration::from_secs(1);
        assert_eq!(estimate(0, 2, s), s);
        assert_eq!(estimate(1, 2, s), s);
        assert_eq!(estimate(2, 2, s), 2 * s);
        assert_eq!(estimate(9, 3, s), 4 * s);
        assert_eq!(typical(&[]), None);
        assert_eq!(typical(&[0, 0]), None);
        assert_eq!(typical(&[300, 100, 200]), Some(Duration::from_millis(200)));
        assert_eq!(
            parse_ticket("0001795462970123456789-42"),
            Some((1795462970123456789, 42))
        );
        assert_eq!(parse_ticket("junk"), None);
        assert_eq!(parse_ticket("1-x"), None);
        let a = AdmissionError::QueueTooLong {
            ahead: 10,
            slots: 2,
            per_wake_ms: 900,
            estimate: Duration::from_millis(5400),
            max_wait: Duration::from_secs(3),
        };
        assert_eq!(a.retry_after(), 5);
        assert!(a.to_string().contains("10 wakes are queued"), "{a}");
    }

    /// K slots among more waiters: never more than K held at once, every
    /// waiter served, in arrival order.
    #[tokio::test(flavor = "current_thread")]
    async fn at_most_k_at_once_in_arrival_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let adm = Admission::new(dir.path(), 2, Duration::from_secs(10));
        let held = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let peak = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for i in 0..6 {
                    let (adm, held, peak, order) =
                        (adm.clone(), held.clone(), peak.clone(), order.clone());
                    tasks.push(tokio::task::spawn_local(async move {
                        let slot = adm.acquire(&mut ()).await.expect("slot");
                        held.set(held.get() + 1);
                        peak.set(peak.get().max(held.get()));
                        order.borrow_mut().push(i);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        held.set(held.get() - 1);
                        slot.release(Duration::from_millis(30));
                    }));
                    // Distinct arrival times.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                for t in tasks {
                    t.await.expect("task");
                }
            })
            .await;
        assert_eq!(peak.get(), 2);
        // Arrival order: when two slots free up at once, the first two in
        // line go together in either order; nobody is overtaken by more
        // than K − 1 = 1 later arrival.
        let order = order.borrow();
        assert_eq!(order.len(), 6);
        for (place, &who) in order.iter().enumerate() {
            assert!(place.abs_diff(who) <= 1, "admitted in order {order:?}");
        }
        assert!(empty_dir(&dir.path().join("wake-queue")));
        assert_eq!(adm.recorded(), vec![30, 30]);
    }

    /// A slot let go without a duration (a wake that started nothing, or
    /// failed) leaves the recorded start durations as they were.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slot_let_go_records_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let adm = Admission::new(dir.path(), 1, Duration::from_secs(10));
        let held = adm.acquire(&mut ()).await.expect("first");
        held.release(Duration::from_millis(40));
        let held = adm.acquire(&mut ()).await.expect("second");
        held.let_go();
        assert_eq!(adm.recorded(), vec![40]);
        let _held = adm.acquire(&mut ()).await.expect("free again");
    }

    /// A queue longer than the wait allows is refused at once.
    #[tokio::test(flavor = "current_thread")]
    async fn too_long_a_queue_answers_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let adm = Admission::new(dir.path(), 1, Duration::from_millis(500));
        let held = adm.acquire(&mut ()).await.expect("first");
        held.release(Duration::from_secs(2));
        let _held = adm.acquire(&mut ()).await.expect("again");
        let t = Instant::now();
        match adm.acquire(&mut ()).await {
            Err(e @ AdmissionError::QueueTooLong { .. }) => {
                assert!(t.elapsed() < Duration::from_millis(200), "{e}");
                assert_eq!(e.retry_after(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
