//! php-fpm's pool status page read by `fleet_core::fpm_status` from a real
//! container: what its numbers say about requests served, in progress and
//! waiting, a pool without the page, a symlink at the socket's name, and the
//! test image's stock-pool option (no access log).

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use fleet_core::fastcgi::{self, Header, STDIN};
use fleet_core::fpm_status::{self, DEFAULT_STATUS_PATH, FpmStatus, StatusError};

use crate::support::assert::fpm_says_hello;
use crate::support::site::STATUS_DISABLED_PATH;
use crate::support::{
    self, FcgiRequest, SiteExt as _, SiteOptions, TestSite, connect_within, note, query_at,
    query_within, require,
};

/// Long enough for a loaded machine; a pool that answers, answers in ms.
const PATIENT: Duration = Duration::from_secs(20);

fn status(site: &TestSite) -> FpmStatus {
    query_within(&site.fpm_socket(), PATIENT)
        .unwrap_or_else(|e| panic!("{}\nlogs:\n{}", fleet_core::exit::chain(&e), site.logs()))
}

/// The status once the query's own worker is the only active one: a
/// worker stays active until the client of its last request closed the
/// connection (php-fpm drains it), a moment after the answer.
fn settled(site: &TestSite) -> FpmStatus {
    until(site, |s| s.active_processes == 1)
}

/// Polls the status until `done` holds for it; returns that status.
fn until(site: &TestSite, done: impl Fn(&FpmStatus) -> bool) -> FpmStatus {
    let mut last = None;
    let reached = support::wait_until(PATIENT, || done(last.insert(status(site))));
    assert!(reached, "never reached: {last:?}");
    last.expect("polled at least once")
}

/// A request to echo.php whose body is held back: its worker is busy
/// reading it until [`Held::release`] (a request in flight for exactly as
/// long as the test says, unlike a sleep).
struct Held {
    stream: UnixStream,
    rest: Vec<u8>,
}

const HELD_BODY: &[u8] = b"released";

fn hold(socket: &Path) -> Held {
    let req = support::fastcgi::encode_request(&FcgiRequest::post("echo.php", HELD_BODY));
    // Up to the first STDIN record: begin and params go, the body waits.
    let mut at = 0;
    while let Some(h) = Header::parse(&req[at..]).filter(|h| h.kind != STDIN) {
        at += fastcgi::HEADER_LEN + h.body_len();
    }
    let mut stream = connect_within(socket, PATIENT);
    stream.write_all(&req[..at]).expect("send begin and params");
    let rest = req[at..].to_vec();
    Held { stream, rest }
}

impl Held {
    /// Sends the body and reads the answer.
    fn release(mut self) {
        self.stream.write_all(&self.rest).expect("send the body");
        let r = support::fastcgi::read_response(&mut self.stream).expect("the held answer");
        assert_eq!(r.body, HELD_BODY, "echo.php answers the held body");
    }
}

/// `accepted conn` counts every connection php-fpm accepted, the status
/// request's own included; an idle pool has one active process: the one
/// serving the status page.
#[test]
fn accepted_conn_grows_by_the_requests_and_the_query_itself() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let children = u64::from(xtask::image::DEFAULT_CHILDREN);
    // Just after the start, a worker still starting is in no count.
    let before = until(&site, |s| {
        s.active_processes == 1 && s.total_processes == children
    });
    assert_eq!(
        (
            before.pool.as_str(),
            before.active_processes,
            before.idle_processes,
            before.total_processes,
            before.listen_queue
        ),
        ("site", 1, children - 1, children, 0),
        "{before:?}"
    );
    const N: u64 = 5;
    for _ in 0..N {
        fpm_says_hello(&site, "hello.php");
    }
    let after = status(&site);
    assert_eq!(
        after.accepted_conn - before.accepted_conn,
        N + 1,
        "{N} requests and the query: {before:?} then {after:?}"
    );
    let again = settled(&site);
    assert_eq!(
        (again.idle_processes, again.listen_queue),
        (children - 1, 0),
        "{again:?}"
    );
    note!("{N} requests: accepted conn {before:?} → {after:?}");
}

/// A request in flight is one more active process for as long as it runs.
#[test]
fn a_request_in_flight_is_one_more_active_process() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    settled(&site);
    let held = hold(&site.fpm_socket());
    // The held request's worker and the query's.
    until(&site, |s| s.active_processes == 2);
    held.release();
    settled(&site);
}

/// With every worker busy the status request waits in the listen queue
/// like any request: a short query times out. And php-fpm's `listen queue`
/// does not see a unix socket's queue: 0 while a connection provably waits.
#[test]
fn a_busy_pool_keeps_the_query_waiting_and_listen_queue_stays_zero() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default().fpm_children(1));
    let socket = site.fpm_socket();
    let base = status(&site);
    assert_eq!((base.total_processes, base.active_processes), (1, 1));

    // The one worker reads a body that does not come.
    let held = hold(&socket);
    let e = query_within(&socket, Duration::from_secs(1)).expect_err("the pool is busy");
    assert!(matches!(e, StatusError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains(&socket.display().to_string()), "{e}");

    // In the kernel's queue, in this order: the query that timed out (its
    // bytes sent, then closed), a status request, a hello.php request.
    let mut query = connect_within(&socket, PATIENT);
    let asked = fpm_status::encode_query(DEFAULT_STATUS_PATH).expect("encode");
    query.write_all(&asked).expect("send the status request");
    let mut queued = connect_within(&socket, PATIENT);
    let hello = support::fastcgi::encode_request(&FcgiRequest::get("hello.php", ""));
    queued.write_all(&hello).expect("send hello.php");

    held.release();
    let page = fastcgi::read_response(&mut query, fpm_status::RESPONSE_LIMIT).expect("the page");
    // php-fpm's worker drains a connection until the client closes it.
    drop(query);
    let cgi = page.cgi().expect("CGI");
    let seen = fpm_status::parse(&String::from_utf8_lossy(cgi.body)).expect("a status page");
    // One worker, first come first served: held, timed-out query, this one;
    // hello.php was still waiting to be accepted when the page was made.
    assert_eq!(seen.accepted_conn, base.accepted_conn + 3, "{seen:?}");
    assert_eq!(
        seen.listen_queue, 0,
        "php-fpm counts a unix socket's queue now: {seen:?}; revisit fpm_status's notes"
    );
    let hello = support::fastcgi::read_response(&mut queued).expect("hello.php, served after");
    assert_eq!(hello.text(), site.hello_line());
    drop(queued);
    let after = status(&site);
    assert_eq!(after.accepted_conn, seen.accepted_conn + 2, "{after:?}");
    note!(
        "one connection queued behind the status page: listen queue {}",
        seen.listen_queue
    );
}

/// A pool whose status path is not `/status` answers php-fpm's own 404:
/// `NotEnabled`, naming the socket and the answer.
#[test]
fn a_pool_without_the_page_is_not_enabled() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default().status_page(false));
    let socket = site.fpm_socket();
    let e = query_within(&socket, PATIENT).expect_err("no status page");
    assert!(e.is_not_enabled(), "{e:?}\nlogs:\n{}", site.logs());
    let shown = e.to_string();
    assert!(
        shown.contains(&socket.display().to_string()) && shown.contains("404 File not found."),
        "{shown}"
    );
    // The pool itself serves as before; its page is where it was moved.
    fpm_says_hello(&site, "hello.php");
    let moved =
        query_at(&socket, STATUS_DISABLED_PATH, PATIENT).expect("the page at its configured path");
    assert_eq!(moved.pool, "site");
    note(&shown);
}

/// A symlink at the asked name is refused before a byte is sent, even when
/// it points at the site's real php-fpm socket; a renamed socket (the
/// reaper's `php-fpm.sock.sleeping`) is php-fpm's all the same.
#[test]
fn a_symlink_is_refused_and_a_renamed_socket_answers() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default());
    let socket = site.fpm_socket();
    let dir = socket.parent().expect("the runtime directory");
    let link = dir.join("php-fpm.sock.link");
    std::os::unix::fs::symlink(&socket, &link).expect("symlink");
    let before = status(&site);
    let e = query_within(&link, PATIENT).expect_err("a symlink");
    let refused = matches!(&e, StatusError::Connect { path, reason }
        if *path == link && reason.contains("symlink"));
    assert!(refused, "not refused as a symlink: {e:?}");
    let after = status(&site);
    assert_eq!(
        after.accepted_conn,
        before.accepted_conn + 1,
        "only the second query reached php-fpm: {before:?} then {after:?}"
    );
    std::fs::remove_file(&link).expect("remove the link");

    let sleeping = dir.join("php-fpm.sock.sleeping");
    std::fs::rename(&socket, &sleeping).expect("rename the socket");
    let renamed = query_within(&sleeping, PATIENT).expect("asked through the renamed socket");
    assert_eq!(renamed.accepted_conn, after.accepted_conn + 1);
    std::fs::rename(&sleeping, &socket).expect("rename it back");
    note(&e.to_string());
}

/// `access_log(false)` is a stock pool: no line per request in `docker
/// logs`; the default writes one. One worker, so its access lines (written
/// by the worker) come before a later request's own stderr output (through
/// the master) in the container's one stderr pipe.
#[test]
fn access_log_off_writes_no_line_per_request() {
    require!(Docker, PhpFpm);
    for on in [true, false] {
        let site = TestSite::started(SiteOptions::default().fpm_children(1).access_log(on));
        const N: usize = 3;
        for _ in 0..N {
            fpm_says_hello(&site, "hello.php");
        }
        // A marker after them in the logs.
        let log_kib = FcgiRequest::get("log.php", "kb=1");
        let r = site.fcgi(&log_kib).expect("log.php");
        assert_eq!(r.text(), "logged 1 KiB\n");
        assert!(
            support::wait_until(PATIENT, || site.logs().contains("log line 00000000")),
            "log.php's line never came:\n{}",
            site.logs()
        );
        let logs = site.logs();
        let marker = logs.find("log line 00000000").unwrap_or(0);
        let hellos = logs[..marker]
            .lines()
            .filter(|l| l.starts_with("fpm-access ") && l.contains("/hello.php"))
            .count();
        assert_eq!(hellos, if on { N } else { 0 }, "access log {on}:\n{logs}");
        if !on {
            assert!(
                site.access_lines().is_empty(),
                "a stock pool logs no request:\n{logs}"
            );
        }
        note!("access log {on}: {hellos} lines for {N} requests");
    }
}
