//! fleet-waker against real components: Docker, php-fpm in the test image,
//! nginx and `systemd-socket-activate` (issue 4, "Must show" 1–7).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use xtask::kit::nginx;

use crate::support::assert::says_hello;
use crate::support::docker_proxy::{DockerProxy, Mode};
use crate::support::stack::activity_until;
use crate::support::wake::{
    CLOSED_WITHIN, START_TIMEOUT, activated, assert_one_start,
    assert_state_file_failure_logged_once, concurrent_hellos_one_start, fpm_runs, has_logged,
    held_closed_within, hello_after_backoff, listening_site, logged, sleep_request, stopped_site,
    waker,
};
use crate::support::{
    self, FcgiRequest, Lazy, Nginx, SiteOptions, TestSite, bin, connect_within,
    count_docker_events, fastcgi, http, require, wait_until,
};

/// Must show 1: nginx → systemd-socket-activate → fleet-waker → php-fpm,
/// with the container stopped, then paused, then running: one start and one
/// unpause.
///
/// What the waker did is counted where it asks Docker (a forwarding
/// [`DockerProxy`]), exactly. Docker's own event log only has to show that a
/// start and an unpause happened: under load Docker 20.10 logs a `pause` and
/// an `unpause` twice for one of each (containerd's task event handled after
/// the API call; measured 205 events for 200 API calls, see
/// [`DockerProxy::unpauses`]), which is what made this test see two where
/// the waker had asked once (issue 14, item 5).
#[test]
fn nginx_socket_activated_stopped_paused_running() {
    require!(Docker, PhpFpm, Nginx, SocketActivate);
    let site = stopped_site(SiteOptions::default());
    let sock = site.temp_dir().join("docker.sock");
    let proxy = DockerProxy::start(&sock, Mode::Forward, Duration::ZERO);
    let mut w = waker(&site, &[])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .activate(&site.waker_socket());
    nginx::share_socket_with_nginx(&site.waker_socket()).expect("share the waker socket");
    let nginx = Nginx::start(&support::nginx::shipped(nginx::Mode::Proxy, &site));
    let t0 = SystemTime::now();
    let get = |what: &str| {
        let r = http::get(nginx.port(), "/hello.php").expect(what);
        assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), w.logs());
        assert_eq!(r.text(), site.hello_line(), "{what}");
    };

    get("GET while stopped");
    assert!(w.activated());
    assert_eq!(site.state(), "running");

    site.pause();
    get("GET while paused");
    // Docker may report the late duplicate `pause` for a moment.
    assert!(
        wait_until(Duration::from_secs(5), || site.state() == "running"),
        "state {}",
        site.state()
    );

    get("GET while running");
    let t1 = SystemTime::now();
    assert_eq!(
        (proxy.starts(), proxy.unpauses()),
        (1, 1),
        "(starts, unpauses) the waker asked Docker for; waker logs:\n{}",
        w.logs()
    );
    for event in ["start", "unpause"] {
        let n = count_docker_events(site.container(), event, t0, t1);
        assert!(n >= 1, "Docker logged no {event} between t0 and t1");
    }
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    // The state file counts both wakes and the last one's duration (for
    // the reaper's metrics).
    activity_until(&site, "two wakes, the last one timed", |a| {
        a.wakes == 2 && a.last_wake_ms.is_some()
    });
}

/// Must show 2: 200 concurrent connections to a stopped site, 200 correct
/// answers, exactly one `start` event.
#[test]
fn two_hundred_concurrent_one_start() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let w = listening_site(&site, &[]);
    let n = 200;
    let elapsed = concurrent_hellos_one_start(&site, &w, n);
    support::note!("{n} concurrent answers from a stopped container in {elapsed:?}");
}

/// Must show 3: a stale php-fpm.sock (nothing accepts) while the container
/// is stopped: the waker wakes the container, never takes the file for ready.
#[test]
fn stale_socket_is_never_ready() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    // SIGKILL: php-fpm cannot remove its socket file.
    site.kill();
    let fpm = site.fpm_socket();
    if !fpm.exists() {
        drop(std::os::unix::net::UnixListener::bind(&fpm).expect("plant stale socket"));
    }
    let err = UnixStream::connect(&fpm).expect_err("stale socket must refuse");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let w = listening_site(&site, &[]);
    let t0 = SystemTime::now();
    says_hello(&site, "request through the waker", || w.logs());
    assert_one_start(&site, t0, &w.logs());
    // The wake waited for php-fpm: logged before the answer is released.
    has_logged(&w, "php-fpm accepts");
}

/// Must show 4a: a missing container.
#[test]
fn failure_missing_container_then_fixed() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let hidden = format!("{}-hidden", site.container());
    support::docker_ok(&["rename", site.container(), &hidden]);
    let mut w = listening_site(&site, START_TIMEOUT);
    let times = held_closed_within(&site, &mut w, 5, CLOSED_WITHIN);
    assert!(w.logs().contains("does not exist"), "{}", w.logs());
    assert!(w.logs().contains(site.container()), "{}", w.logs());
    support::docker_ok(&["rename", &hidden, site.container()]);
    says_hello(&site, "after the fix", String::new);
    support::note!("missing container: closed after {times:?}");
}

/// Must show 4b: a container whose start fails (its bind-mount source is
/// missing), then the source is created.
#[test]
fn failure_start_fails_then_fixed() {
    require!(Docker, PhpFpm);
    let scratch = support::temp_dir("mount");
    let source = scratch.path().join("absent");
    std::fs::create_dir(&source).expect("mount source, for create");
    let site = TestSite::with_options(SiteOptions::default().docker_args([
        "--mount".into(),
        format!("type=bind,source={},target=/mnt/x", source.display()),
    ]));
    std::fs::remove_dir(&source).expect("break the mount: start must fail");
    let mut w = listening_site(&site, START_TIMEOUT);
    let times = held_closed_within(&site, &mut w, 5, CLOSED_WITHIN);
    assert!(w.logs().contains("wake failed"), "{}", w.logs());
    std::fs::create_dir(&source).expect("fix: create the mount source");
    // Failed starts in a row put the waker in its crash-loop back-off
    // (answered 503 with Retry-After); the first request after it wakes.
    let r =
        hello_after_backoff(&site.waker_socket(), Duration::from_secs(20)).expect("after the fix");
    assert_eq!(r.text(), site.hello_line());
    support::note!("failing start: closed after {times:?}");
}

/// Must show 4c: php-fpm never listening where the waker looks; then the
/// path appears (a hard link of php-fpm's socket: a symlink is never
/// followed, see `tenant`).
#[test]
fn failure_fpm_never_listens_then_fixed() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let upstream = site.layout().site_dir(site.site()).join("elsewhere.sock");
    let up = upstream.display().to_string();
    let mut w = listening_site(&site, &[START_TIMEOUT, &["--upstream", &up]].concat());
    let times = held_closed_within(&site, &mut w, 5, CLOSED_WITHIN);
    let early = times.iter().find(|t| **t < Duration::from_millis(3900));
    assert!(early.is_none(), "closed before the timeout: {early:?}");
    assert!(w.logs().contains("did not accept"), "{}", w.logs());
    std::fs::hard_link(site.fpm_socket(), &upstream).expect("fix: hard link");
    says_hello(&site, "after the fix", String::new);
    support::note!("php-fpm never listening: closed after {times:?}");
}

/// Must show 4 (and the "a container that exits while starting"):
/// php-fpm refuses its config and the container dies; held connections are
/// closed promptly, long before the timeout (Docker's die event).
#[test]
fn failure_container_exits_while_starting() {
    require!(Docker, PhpFpm);
    let site = TestSite::with_options(SiteOptions::default().fpm_children(0));
    let mut w = listening_site(&site, &["--start-timeout", "10s"]);
    let times = held_closed_within(&site, &mut w, 3, Duration::from_secs(5));
    assert!(w.logs().contains("exited while starting"), "{}", w.logs());
    support::note!("container dying at start: closed after {times:?}");
}

/// Must show 5a: 100 MB each way through the waker to php-fpm (echo.php),
/// byte-exact.
#[test]
fn hundred_mb_each_way_byte_exact() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let _w = listening_site(&site, &[]);
    let body: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut req = FcgiRequest::post("echo.php", &body);
    req.timeout = Duration::from_secs(120);
    let t = Instant::now();
    let r = fastcgi::request(&site.waker_socket(), &req).expect("100 MB echo");
    let elapsed = t.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "100 MB echo differs");
    support::note!("100 MB each way through the waker in {elapsed:?}");
}

/// Must show 5b: a client that half-closes still gets the whole response.
#[test]
fn half_closing_client_gets_full_response() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let _w = listening_site(&site, &[]);
    let mut c = connect_within(&site.waker_socket(), Duration::from_secs(30));
    let req = FcgiRequest::get("big.php", "mb=8");
    c.write_all(&fastcgi::encode_request(&req))
        .expect("send request");
    c.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).expect("read the response to EOF");
    // Read to the end first: the whole stream, then decoded.
    let r = fastcgi::read_response(&mut raw.as_slice())
        .expect("a whole response up to FCGI_END_REQUEST, CGI headers");
    let want = support::site::big_body(8);
    assert_eq!(r.body.len(), want.len());
    assert!(r.body == want, "big.php body differs");
}

/// A request held by the waker (here at the site lock, held exclusively as
/// the reaper does while it puts the site to sleep) whose client closes
/// meanwhile, as nginx does at its `fastcgi_read_timeout` (504) or when the
/// user gives up (499), never reaches php-fpm once the wait is over: the
/// user's resubmitted POST must not run twice. A request whose client stays
/// is served; one whose client closed without waiting runs, as php-fpm runs
/// it (WordPress's cron spawn sends and hangs up). `count.php` leaves one
/// line per execution.
#[test]
fn a_request_whose_client_left_while_held_never_runs() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default().data_dir());
    let w = listening_site(&site, &[]);
    // count.php's POST: its id as header and body.
    let post = |id: &str| {
        let mut r = FcgiRequest::post("count.php", id.as_bytes());
        r.params.push(("HTTP_X_REQ_ID".into(), id.into()));
        r
    };
    let mut quick = connect_within(&site.waker_socket(), Duration::from_secs(10));
    let bytes = fastcgi::encode_request(&post("quick"));
    quick.write_all(&bytes).expect("send the whole POST");
    drop(quick);
    let ran = wait_until(Duration::from_secs(10), || !site.count_lines().is_empty());
    assert!(
        ran,
        "a request that did not wait was not run:\n{}",
        w.logs()
    );
    let lock_file = site.layout().lock_file(site.site());
    let lock = fleet_core::drain::SleepLock::try_take(&lock_file)
        .expect("site lock")
        .expect("the site lock is free");
    let mut gone = connect_within(&site.waker_socket(), Duration::from_secs(10));
    let bytes = fastcgi::encode_request(&post("gone"));
    gone.write_all(&bytes).expect("send the whole POST");
    logged(&w, "the reaper is putting the site to sleep");
    drop(gone);
    let socket = site.waker_socket();
    let request = post("stays");
    let stays = std::thread::spawn(move || fastcgi::request(&socket, &request));
    // Both wait at the lock for longer than a wait that counts, as long as
    // the reaper's drain.
    std::thread::sleep(fleet_core::proxy::ABANDONED_AFTER + Duration::from_millis(500));
    drop(lock);
    let r = stays
        .join()
        .expect("thread")
        .expect("the staying client is answered");
    assert_eq!(
        (r.status, r.text()),
        (200, "stays POST\n".to_owned()),
        "{}",
        w.logs()
    );
    // Logged once the gone request was dropped, instead of relayed.
    logged(&w, "not relayed to php-fpm");
    assert_eq!(
        site.count_lines(),
        ["quick POST", "stays POST"],
        "{}",
        w.logs()
    );
}

/// Must show 6: the state file during and after connections; a symlink
/// planted at its path is refused (and proxying goes on).
#[test]
fn state_file_during_after_and_symlink() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let w = listening_site(&site, &[]);
    let state = site.state_file();
    let before = SystemTime::now();
    let slow = sleep_request(&site.waker_socket(), "1.5");
    let what = Lazy(|| format!("open=1 during the request\n{}", w.logs()));
    let during = activity_until(&site, what, |a| a.open == 1);
    assert_eq!(during.pid, Some(w.pid()));
    assert!(during.last_start.expect("last_start") >= before - Duration::from_millis(5));
    let r = slow.join().expect("thread").expect("sleep.php");
    assert_eq!(r.text(), "slept 1.5\n");
    let done = SystemTime::now();
    let after = activity_until(&site, "open=0 after", |a| a.open == 0);
    let end = after.last_end.expect("last_end");
    // The end is the request's (the waker may note it a little after the
    // client has its last byte; the margin is for a loaded machine, far
    // below the 1.5 s request).
    assert!(
        end >= during.last_start.expect("start") && end <= done + Duration::from_millis(500),
        "last_end {end:?}, answer received {done:?}"
    );

    // A symlink planted at the path: never written through.
    let target = site.temp_dir().join("precious");
    std::fs::write(&target, "precious").expect("write target");
    std::fs::remove_file(&state).expect("remove state file");
    std::os::unix::fs::symlink(&target, &state).expect("plant symlink");
    for _ in 0..3 {
        says_hello(&site, "still proxying", String::new);
    }
    // The coalesced writer has tried (and refused) before the checks below.
    logged(&w, "cannot write the activity state file");
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
    assert!(state.is_symlink(), "the planted symlink is still there");
    assert_state_file_failure_logged_once(&w);
}

/// Must show 7: `--exit-idle-time 1s` exits 0 after a second with no
/// connection (under socket activation, after one request).
#[test]
fn exit_idle_time() {
    require!(Docker, PhpFpm, SocketActivate);
    let site = TestSite::started(SiteOptions::default());
    let mut w = activated(&site, &["--exit-idle-time", "1s"]);
    says_hello(&site, "request", String::new);
    let last = Instant::now();
    let status = w
        .wait_exit(Duration::from_secs(5))
        .expect("exited after idle");
    let idle = last.elapsed();
    assert_eq!(status.code(), Some(0), "{}", w.logs());
    assert!(
        idle >= Duration::from_millis(950) && idle < Duration::from_millis(2500),
        "exited after {idle:?}"
    );
}

/// SIGTERM: an open connection finishes, then exit 0.
#[test]
fn sigterm_lets_open_connections_finish() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let mut w = listening_site(&site, &[]);
    let slow = sleep_request(&site.waker_socket(), "3");
    fpm_runs(&site, 1, &w);
    assert!(!slow.is_finished(), "the request ended before SIGTERM");
    w.kill(nix::sys::signal::Signal::SIGTERM);
    let r = slow.join().expect("thread");
    assert_eq!(r.expect("finished despite SIGTERM").text(), "slept 3\n");
    let status = w.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", w.logs());
    assert!(!site.waker_socket().exists(), "--listen socket removed");
}

/// No socket passed and no --listen: exit 64 with a clear message; a bad
/// site name: 64.
#[test]
fn usage_errors_exit_64() {
    let run_waker = |args: &[&str]| {
        std::process::Command::new(bin("fleet-waker"))
            .args(args)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .output()
            .expect("run fleet-waker")
    };
    let out = run_waker(&["example.com"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no listening socket was passed"), "{err}");
    let out = run_waker(&["../etc", "--listen", "/nonexistent/x.sock"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule"));
    for bad in [
        &["example.com", "--connections-max", "0"][..],
        &["example.com", "--start-timeout", "soon"][..],
        &["example.com", "--no-such-flag"][..],
        &[][..],
    ] {
        assert_eq!(run_waker(bad).status.code(), Some(64), "{bad:?}");
    }
    let out = run_waker(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--container",
        "--upstream",
        "--listen",
        "--start-timeout",
        "--connections-max",
        "--exit-idle-time",
        "--state-dir",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// inotify descriptors the process `pid` holds.
fn inotify_fds(pid: u32) -> usize {
    let targets = xtask::kit::process::fd_targets(pid);
    targets
        .iter()
        .filter(|l| l.as_os_str() == "anon_inode:inotify")
        .count()
}

/// A woken waker holds no inotify instance: they count per uid (root's
/// `fs.inotify.max_user_instances`, 128 by default, shared with PID 1,
/// journald and containerd), so one kept per awake waker would use them up
/// on a host of 300 sites. The wake waited with inotify (no fallback to
/// polling was logged) and closed it once php-fpm accepted.
#[test]
fn a_woken_waker_holds_no_inotify_instance() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let mut w = listening_site(&site, &[]);
    says_hello(&site, "the request that wakes the site", || w.logs());
    has_logged(&w, "php-fpm accepts");
    says_hello(&site, "a warm request", || w.logs());
    // Closed on a blocking-pool thread, just after the wake.
    assert!(
        wait_until(Duration::from_secs(2), || inotify_fds(w.pid()) == 0),
        "the awake waker still holds {} inotify instance(s)\n{}",
        inotify_fds(w.pid()),
        w.logs()
    );
    assert!(!w.logs().contains("no inotify"), "{}", w.logs());
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
}
