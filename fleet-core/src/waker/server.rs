//! The waker's server: the accept loop under `connections_max` permits,
//! one task per client connection ([`serve`], with [`Conn`] as the relay's
//! view of its owner), the idle exit, and the activity that the reporter
//! task coalesces into the state file and `STATUS=`.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::readiness::MAX_RETRY_STEP;
use super::wake::{connect_or_wake, join_wake};
use super::{Exit, Shared};
use crate::state;

/// Least time between two state-file writes (coalescing).
pub const STATE_WRITE_INTERVAL: Duration = Duration::from_millis(20);

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

/// What the waker is doing, for the state file and STATUS.
#[derive(Debug, Clone)]
pub(super) struct LiveActivity {
    /// Client connections open (idle pooled ones included).
    pub(super) open: u64,
    /// FastCGI requests in flight plus open connections of other streams
    /// (and connections not yet past their first bytes): what keeps the
    /// site busy.
    pub(super) busy: u64,
    pub(super) waking: bool,
    /// Waiting for a host-wide wake slot, with this many wakes ahead.
    pub(super) queued: Option<usize>,
    /// Wakes that started or unpaused the container, and how long the last
    /// one took (for the reaper's metrics).
    pub(super) wakes: u64,
    pub(super) last_wake_ms: Option<u64>,
    pub(super) last_start: Option<SystemTime>,
    pub(super) last_end: Option<SystemTime>,
    /// When a connection last failed to get php-fpm (a failed wake), unless
    /// one got it since.
    pub(super) failed_at: Option<SystemTime>,
    /// When `open` last became 0 (or start-up), for the idle exit.
    pub(super) idle_since: Instant,
}

impl LiveActivity {
    /// Nothing open, nothing served yet, idle from now.
    pub(super) fn new() -> Self {
        LiveActivity {
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

/// The accept loop behind [`super::run`], from `READY=1` to the final
/// state-file write.
pub(super) async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut idle_rx: watch::Receiver<LiveActivity>,
    shutdown: CancellationToken,
) -> Exit {
    let sem = Arc::new(Semaphore::new(shared.cfg.connections_max));
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
                        // Counted open here, not in the task: the next
                        // idle check runs before the task does.
                        let conn = Conn::open(shared.clone());
                        tracker.spawn(serve(conn, stream, permit));
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
    exit
}

/// Resolves once nothing has been open (and no wake in flight) for `idle`.
async fn idle_wait(rx: &mut watch::Receiver<LiveActivity>, idle: Option<Duration>) {
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
async fn report(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<LiveActivity>,
    stop: CancellationToken,
) {
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
fn status(a: &LiveActivity, container: &str) -> String {
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

fn write_state(shared: &Shared, a: &LiveActivity) -> Result<(), state::StateError> {
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
/// requests. Made at the accept, it counts the connection open until it is
/// dropped, however its task ends (or if it never runs).
struct Conn {
    shared: Arc<Shared>,
    /// Units of activity this connection added to `busy` and not yet took
    /// back (1 from the accept on: its first request, or the stream).
    counted: u64,
    /// It got php-fpm at least once.
    connected: bool,
    /// Admitted through the site lock while `counted` > 0.
    gate: Option<crate::drain::GateGuard>,
}

impl crate::proxy::Upstreams for Conn {
    type Stream = UnixStream;

    async fn connect(&mut self) -> Option<UnixStream> {
        match connect_or_wake(&self.shared).await {
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
        match join_wake(&self.shared).await {
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
        self.gate = Some(admit(&self.shared).await);
    }
}

impl Conn {
    /// A connection just accepted: open, and busy until its first request
    /// (or stream) shows what it is.
    fn open(shared: Arc<Shared>) -> Conn {
        shared.activity.send_modify(|a| {
            a.open += 1;
            a.busy += 1;
            a.last_start = Some(SystemTime::now());
        });
        Conn {
            shared,
            counted: 1,
            connected: false,
            gate: None,
        }
    }

    fn failed(&self) {
        self.shared
            .activity
            .send_modify(|a| a.failed_at = Some(SystemTime::now()));
    }
}

/// One client connection, from accept to close.
async fn serve(mut conn: Conn, mut client: UnixStream, _permit: tokio::sync::OwnedSemaphorePermit) {
    let accepted = Instant::now();
    let shared = conn.shared.clone();
    conn.gate = Some(admit(&shared).await);
    match connect_or_wake(&shared).await {
        Ok(upstream)
            if crate::proxy::abandoned(
                client.as_fd(),
                accepted,
                crate::proxy::Upstreams::abandoned_after(&conn),
            ) =>
        {
            // The front end gave up while the request waited (nginx's read
            // timeout, a user's 499) and its user may resubmit: relayed
            // now, the buffered request (a POST) would run twice.
            conn.connected = true;
            drop(upstream);
            tracing::info!(
                site = %shared.cfg.site,
                waited_ms = accepted.elapsed().as_millis() as u64,
                "the client closed its connection while the request waited; not relayed to php-fpm"
            );
        }
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
    // The client first, then the connection's count (in `Conn`'s drop).
    drop(client);
    drop(conn);
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (counted, connected) = (self.counted, self.connected);
        self.shared.activity.send_modify(|a| {
            a.open = a.open.saturating_sub(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::docker::Engine;
    use crate::notify::Notifier;
    use crate::site::Site;
    use crate::waker::{Config, PeerCheck, run};

    /// `cfg`'s sd_notify lines go to a socket in `dir`; its (non-blocking)
    /// receiving end.
    fn notify_into(cfg: &mut Config, dir: &Path) -> std::os::unix::net::UnixDatagram {
        let path = dir.join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("notify");
        rx.set_nonblocking(true).expect("nonblocking");
        cfg.notifier = Notifier::to(&crate::notify::NotifyAddr::Path(path)).expect("to");
        rx
    }

    #[test]
    fn connections_fit_the_descriptor_limit() {
        assert_eq!(connections_within(1024, 256), 256);
        assert_eq!(connections_within(1024, 1000), 480);
        assert_eq!(connections_within(10, 5), 1);
        assert_eq!(connections_within(u64::MAX, 7), 7);
    }

    fn config(dir: &Path, docker_host: &str) -> Config {
        Config {
            site: Site::new("unit.test").expect("site"),
            container: "unit.test.fpm".into(),
            upstream: dir.join("php-fpm.sock"),
            start_timeout: Duration::from_secs(2),
            slot_hold_max: Duration::from_secs(1),
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

    /// A closed client is hung up; one that only half-closed after its
    /// request still reads the answer and is not.
    #[tokio::test(flavor = "current_thread")]
    async fn hung_up_is_a_close_not_a_half_close() {
        use crate::proxy::hung_up;
        use std::os::fd::AsFd;
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        assert!(!hung_up(ours.as_fd()));
        theirs.write_all(b"request").await.expect("write");
        theirs.shutdown().await.expect("half-close");
        assert!(!hung_up(ours.as_fd()), "a half-close is not a hang-up");
        drop(theirs);
        assert!(hung_up(ours.as_fd()), "the peer's close is a hang-up");
    }

    /// Every form of `STATUS=` (the README lists them): only what the waker
    /// knows, never a container state it has not seen.
    #[test]
    fn status_says_what_the_waker_knows() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_462_970);
        let mut a = LiveActivity::new();
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

    /// A connection accepted in the same turn as the idle deadline passes
    /// (the runtime's one thread busy past it, with the connection in the
    /// backlog): the waker serves it and stays, it does not call itself
    /// idle and leave the connection only the shutdown grace.
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_accepted_at_the_idle_deadline_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), "unix:///nonexistent/docker.sock");
        cfg.exit_idle_time = Some(Duration::from_millis(200));
        let notify_rx = notify_into(&mut cfg, dir.path());
        let upstream = UnixListener::bind(&cfg.upstream).expect("upstream");
        let listen_path = dir.path().join("waker.sock");
        let listener = UnixListener::bind(&listen_path).expect("listener");
        let waker = tokio::spawn(run(listener, cfg, CancellationToken::new()));
        let mut lines = Vec::new();
        let read_notify = |lines: &mut Vec<String>| {
            let mut b = [0u8; 512];
            while let Ok(n) = notify_rx.recv(&mut b) {
                lines.push(String::from_utf8_lossy(&b[..n]).into_owned());
            }
        };
        while lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            read_notify(&mut lines);
        }
        // Blocks the runtime's only thread on purpose: the accept and the
        // idle deadline become due in the same turn.
        let c = std::os::unix::net::UnixStream::connect(&listen_path).expect("connect");
        std::thread::sleep(Duration::from_millis(300));
        c.set_nonblocking(true).expect("nonblocking");
        let mut c = UnixStream::from_std(c).expect("tokio stream");
        let (mut u, _) = tokio::time::timeout(Duration::from_secs(2), upstream.accept())
            .await
            .expect("relayed")
            .expect("accept");
        c.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        u.read_exact(&mut one).await.expect("read");
        // Open for longer than the idle time: the waker stays.
        tokio::time::sleep(Duration::from_millis(400)).await;
        read_notify(&mut lines);
        assert!(
            !lines.iter().any(|l| l.starts_with("STOPPING=1")),
            "exited with a connection open: {lines:?}"
        );
        assert!(!waker.is_finished());
        drop((c, u));
        let exit = tokio::time::timeout(Duration::from_secs(3), waker)
            .await
            .expect("idle exit after the connection closed")
            .expect("join")
            .expect("run");
        assert_eq!(exit, Exit::Idle);
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
        let notify_rx = notify_into(&mut cfg, dir.path());
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
