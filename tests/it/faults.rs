//! Faults (issue 8) against real components: the real Docker engine (behind
//! a fault-injecting unix-socket proxy written here), real php-fpm in the
//! test image, the real waker and reaper binaries.
//!
//! Covered elsewhere and only cited in RELIABILITY.md:
//! `reaper::sigterm_mid_pass_finishes_the_stop_under_way_and_exits_75`
//! (the reaper gets SIGTERM in the middle of a pass),
//! `waker::failure_*` (missing container, failing start, php-fpm never
//! listening, container dying at start).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::support::wake::{held_connections_closed, hello, stopped_site};
use crate::support::{
    self, FcgiRequest, Launch, SiteOptions, Spawned, TestSite, bin, count_docker_events, fastcgi,
    require, wait_until,
};

const REAL_DOCKER: &str = "/var/run/docker.sock";

/// How the proxy treats new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Forward to the real engine, each request delayed by `delay`.
    Forward = 0,
    /// Accept and never answer (the connection is held open).
    Hang = 1,
}

/// A unix socket standing in for the Docker engine: forwards to the real
/// one (optionally delaying every request), or accepts and never answers.
/// Counts the requests it forwarded and the `POST …/containers/<c>/start`s.
struct DockerProxy {
    path: PathBuf,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    starts: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<UnixStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DockerProxy {
    fn start(path: &Path, mode: Mode, delay: Duration) -> DockerProxy {
        let listener = UnixListener::bind(path).expect("bind proxy socket");
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (mode, stop, requests, starts, held) = (
                mode.clone(),
                stop.clone(),
                requests.clone(),
                starts.clone(),
                held.clone(),
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    if mode.load(Ordering::SeqCst) == Mode::Hang as u8 {
                        held.lock().expect("lock").push(conn);
                        continue;
                    }
                    let (requests, starts) = (requests.clone(), starts.clone());
                    std::thread::spawn(move || forward(conn, delay, &requests, &starts));
                }
            })
        };
        DockerProxy {
            path: path.to_owned(),
            mode,
            stop,
            requests,
            starts,
            held,
            thread: Some(thread),
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn held(&self) -> usize {
        self.held.lock().expect("lock").len()
    }

    /// How many held connections the client (the waker) has closed.
    fn held_closed_by_peer(&self) -> usize {
        let held = self.held.lock().expect("lock");
        held.iter()
            .filter(|s| {
                let _ = s.set_nonblocking(true);
                let mut b = [0u8; 4096];
                let mut s: &UnixStream = s;
                loop {
                    match s.read(&mut b) {
                        Ok(0) => return true,
                        Ok(_) => continue, // the request the waker sent
                        Err(_) => return false,
                    }
                }
            })
            .count()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.held.lock().expect("lock").clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

const METHODS: &[&[u8]] = &[b"GET ", b"POST ", b"HEAD ", b"DELETE ", b"PUT "];

/// Copies client → engine (delaying each request head by `delay`) and
/// engine → client until either side closes.
fn forward(mut client: UnixStream, delay: Duration, requests: &AtomicUsize, starts: &AtomicUsize) {
    let Ok(mut engine) = UnixStream::connect(REAL_DOCKER) else {
        return;
    };
    let (Ok(mut client_r), Ok(mut engine_w)) = (client.try_clone(), engine.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut engine, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if METHODS.iter().any(|m| chunk.starts_with(m)) {
            requests.fetch_add(1, Ordering::SeqCst);
            let line = chunk.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            if line.starts_with("POST ") && line.contains("/containers/") && line.contains("/start")
            {
                starts.fetch_add(1, Ordering::SeqCst);
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
        if engine_w.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = engine_w.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

/// The waker binding the site's socket itself, with extra args and env.
fn waker(site: &TestSite, extra: &[&str], env: &[(&str, String)]) -> Spawned {
    let mut l = Launch::new(bin("fleet-waker"))
        .arg(site.name())
        .arg("--listen")
        .arg(site.waker_socket())
        .args(extra)
        .envs(site.layout_env())
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        l = l.env(*k, v.clone());
    }
    let w = l.spawn();
    let socket = site.waker_socket();
    assert!(
        wait_until(Duration::from_secs(10), || UnixStream::connect(&socket)
            .is_ok()),
        "waker did not listen: {}",
        w.logs()
    );
    w
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn open_now(site: &TestSite) -> u64 {
    fleet_core::state::load(&site.state_file())
        .ok()
        .flatten()
        .map_or(0, |a| a.open)
}

/// Docker unreachable during a wake (a dead socket: nothing at the path),
/// then Docker comes back at that path: held connections are closed by the
/// start timeout, the waker stays up, and the next request wakes the site.
#[test]
fn docker_dead_then_back() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let sock = site.temp_dir().join("docker.sock");
    let host = format!("unix://{}", sock.display());
    let mut w = waker(&site, &["--start-timeout", "2s"], &[("DOCKER_HOST", host)]);
    let times = held_connections_closed(&site.waker_socket(), 5);
    for t in &times {
        assert!(
            *t <= Duration::from_secs(3),
            "closed after {t:?}: {}",
            w.logs()
        );
    }
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    let logs = w.logs();
    assert!(
        logs.contains(&sock.display().to_string()),
        "names the host: {logs}"
    );
    let proxy = DockerProxy::start(&sock, Mode::Forward, Duration::ZERO);
    let r = hello(&site.waker_socket()).expect("after Docker is back");
    assert_eq!(r.text(), site.hello_line(), "{}", w.logs());
    assert_eq!(proxy.starts(), 1);
    support::note(&format!(
        "dead Docker: held connections closed after {times:?}; recovered"
    ));
}

/// Docker accepts but never answers: held connections are closed by the
/// start timeout (not held forever), the waker stays up, and recovers when
/// the engine answers again.
#[test]
fn docker_hangs_then_answers() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let sock = site.temp_dir().join("docker.sock");
    let proxy = DockerProxy::start(&sock, Mode::Hang, Duration::ZERO);
    let host = format!("unix://{}", sock.display());
    let mut w = waker(&site, &["--start-timeout", "2s"], &[("DOCKER_HOST", host)]);
    let times = held_connections_closed(&site.waker_socket(), 5);
    for t in &times {
        assert!(
            *t <= Duration::from_secs(3),
            "closed after {t:?}: {}",
            w.logs()
        );
    }
    assert!(
        proxy.held() >= 1,
        "the waker never asked the hanging engine"
    );
    // The timed-out API calls are abandoned: their connections closed, not leaked.
    assert!(
        wait_until(Duration::from_secs(3), || proxy.held_closed_by_peer()
            == proxy.held()),
        "{} of {} connections to the hanging engine still open",
        proxy.held() - proxy.held_closed_by_peer(),
        proxy.held()
    );
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    proxy.set_mode(Mode::Forward);
    let t = Instant::now();
    let r = hello(&site.waker_socket()).expect("after the engine answers again");
    assert_eq!(r.text(), site.hello_line(), "{}", w.logs());
    assert_eq!(proxy.starts(), 1);
    support::note(&format!(
        "hanging Docker: closed after {times:?}; {} connections held; recovered in {:?}",
        proxy.held(),
        t.elapsed()
    ));
}

/// Every Docker API request delayed 2 s: 20 concurrent requests to a
/// stopped site all succeed within the (default 30 s) start timeout, with
/// exactly one start (counted at the proxy and in Docker's events).
#[test]
fn docker_slow_wake_succeeds_without_duplicate_starts() {
    require!(Docker, PhpFpm);
    let site = stopped_site(SiteOptions::default());
    let sock = site.temp_dir().join("docker.sock");
    let proxy = DockerProxy::start(&sock, Mode::Forward, Duration::from_secs(2));
    let host = format!("unix://{}", sock.display());
    let w = waker(&site, &[], &[("DOCKER_HOST", host)]);
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let t0 = SystemTime::now();
    let started = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (b, s) = (barrier.clone(), site.waker_socket());
            std::thread::spawn(move || {
                b.wait();
                hello(&s)
            })
        })
        .collect();
    for t in threads {
        let r = t
            .join()
            .expect("thread")
            .expect("answer despite slow Docker");
        assert_eq!(r.text(), site.hello_line(), "{}", w.logs());
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(proxy.starts(), 1, "{}", w.logs());
    assert_eq!(
        count_docker_events(site.container(), "start", t0, SystemTime::now()),
        1
    );
    support::note(&format!(
        "slow Docker (2 s per request): {n} answers in {elapsed:?}, {} API requests, 1 start",
        proxy.requests()
    ));
}

/// The container killed in the middle of a request: that client gets an
/// error (no answer), the waker stays up, the next request wakes it again.
#[test]
fn container_killed_mid_request() {
    require!(Docker, PhpFpm);
    let site = TestSite::new();
    site.start();
    let mut w = waker(&site, &[], &[]);
    let socket = site.waker_socket();
    let slow = std::thread::spawn(move || {
        fastcgi::request(&socket, &FcgiRequest::get("sleep.php", "s=5"))
    });
    assert!(wait_until(Duration::from_secs(5), || open_now(&site) == 1));
    site.kill();
    let first = slow.join().expect("thread");
    assert!(
        first
            .as_ref()
            .map_or(true, |r| r.status != 200 || r.text() != "slept 5\n"),
        "a killed container answered: {first:?}"
    );
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    let t0 = SystemTime::now();
    let r = hello(&site.waker_socket()).expect("next request wakes");
    assert_eq!(r.text(), site.hello_line());
    assert_eq!(
        count_docker_events(site.container(), "start", t0, SystemTime::now()),
        1
    );
    let seen = first.map(|r| r.status).map_err(|e| e.to_string());
    support::note(&format!(
        "killed mid-request: that client saw {seen:?}; next request 200"
    ));
}

/// State directory not writable (its parent is a regular file: ENOTDIR,
/// which root cannot override): the waker keeps proxying and logs the
/// problem once; the reaper calls the site unknown and does not stop it.
#[test]
fn state_dir_not_writable() {
    require!(Docker, PhpFpm);
    let site = TestSite::new();
    site.start();
    let file = site.temp_dir().join("not-a-dir");
    std::fs::write(&file, b"a regular file").expect("write");
    let state_dir = file.join("state");
    let sd = state_dir.display().to_string();
    let mut w = waker(&site, &["--state-dir", &sd], &[]);
    for _ in 0..20 {
        let r = hello(&site.waker_socket()).expect("proxying goes on");
        assert_eq!(r.text(), site.hello_line());
    }
    assert!(w.try_status().is_none());
    let logs = w.logs();
    assert_eq!(
        logs.matches("cannot write the activity state file").count(),
        1,
        "logged once, not per connection:\n{logs}"
    );
    drop(w);
    // The reaper: timeout 1s, the container quiet for longer.
    site.write_conf("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let out = std::process::Command::new(bin("fleet-reaper"))
        .arg("--sites-dir")
        .arg(&site.layout().sites_dir)
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run reaper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON plan");
    let e = &json["sites"][0];
    assert_eq!(e["verdict"], "unknown", "{e}\n{stderr}");
    assert_eq!(e["action"], "none", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not-a-dir"),
        "names the path: {e}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(site.state(), "running");
}

/// SIGTERM with 50 connections open: all finish within the grace period,
/// then the waker exits 0.
#[test]
fn sigterm_with_fifty_open_connections() {
    require!(Docker, PhpFpm);
    let site = TestSite::with_options(SiteOptions {
        fpm_children: Some(50),
        ..Default::default()
    });
    site.start();
    let mut w = waker(&site, &["--shutdown-grace", "10s"], &[]);
    let n = 50;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let s = site.waker_socket();
            std::thread::spawn(move || fastcgi::request(&s, &FcgiRequest::get("sleep.php", "s=2")))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || open_now(&site) == n),
        "{} open: {}",
        open_now(&site),
        w.logs()
    );
    let t = Instant::now();
    w.kill(nix::sys::signal::Signal::SIGTERM);
    let mut ok = 0;
    for th in threads {
        let r = th
            .join()
            .expect("thread")
            .expect("finished despite SIGTERM");
        assert_eq!(r.text(), "slept 2\n");
        ok += 1;
    }
    let status = w.wait_exit(Duration::from_secs(12)).expect("exited");
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", w.logs());
    assert_eq!(ok, n);
    assert!(took < Duration::from_secs(10), "{took:?}");
    support::note(&format!(
        "SIGTERM with {n} open: all answered, exit 0 after {took:?}"
    ));
}

/// Host pids of the container's processes whose command line contains `needle`.
fn container_pids(site: &TestSite, needle: &str) -> Vec<i32> {
    let out = support::docker_ok(&["top", site.container(), "-o", "pid,args"]);
    out.lines()
        .skip(1)
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Starts four `sleep.php?s=5` requests through the waker, waits until
/// they are open, SIGKILLs the container's processes matching `needle`
/// (from the host), and returns how many of the four got no answer.
fn crash_round(site: &TestSite, w: &mut Spawned, needle: &str) -> usize {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = site.waker_socket();
            std::thread::spawn(move || fastcgi::request(&s, &FcgiRequest::get("sleep.php", "s=5")))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(5), || open_now(site) == 4),
        "{} open",
        open_now(site)
    );
    let victims = container_pids(site, needle);
    assert!(
        !victims.is_empty(),
        "no php-fpm process matching {needle:?}"
    );
    for pid in victims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut errors = 0;
    for t in threads {
        match t.join().expect("thread") {
            Ok(r) if r.status == 200 && r.text() == "slept 5\n" => {
                panic!("a crashed php-fpm answered")
            }
            _ => errors += 1,
        }
    }
    assert!(w.try_status().is_none(), "waker exited: {}", w.logs());
    errors
}

/// A running site, its waker after one answered request and back to no
/// open connection, and the waker's descriptor count at that point.
fn warm_site_and_waker() -> (TestSite, Spawned, usize) {
    let site = TestSite::new();
    site.start();
    let w = waker(&site, &[], &[]);
    let r = hello(&site.waker_socket()).expect("warm");
    assert_eq!(r.text(), site.hello_line());
    assert!(wait_until(Duration::from_secs(2), || open_now(&site) == 0));
    let idle = fd_count(w.pid());
    (site, w, idle)
}

/// php-fpm crashing while connections are open, repeatedly: all its
/// workers SIGKILLed ten times with four requests in flight (the master
/// respawns them). Each of those requests errs, the waker never does, the
/// next request is answered, and the waker's descriptors return to the idle
/// count.
#[test]
fn php_fpm_workers_crash_repeatedly_no_fd_leak() {
    require!(Docker, PhpFpm, Root);
    let (site, mut w, idle) = warm_site_and_waker();
    let mut errors = 0;
    let rounds = 10;
    for round in 0..rounds {
        errors += crash_round(&site, &mut w, "pool ");
        let r = hello(&site.waker_socket())
            .unwrap_or_else(|e| panic!("round {round}: not serving again: {e}\n{}", w.logs()));
        assert_eq!(r.text(), site.hello_line(), "round {round}");
    }
    assert_eq!(errors, 4 * rounds);
    assert!(wait_until(Duration::from_secs(3), || open_now(&site) == 0));
    let settled = wait_until(Duration::from_secs(3), || fd_count(w.pid()) <= idle);
    let after = fd_count(w.pid());
    assert!(settled, "descriptors: idle {idle}, after {after}");
    support::note(&format!(
        "{rounds} php-fpm worker crashes, {errors} failed requests, waker up; fds idle {idle} -> after {after}"
    ));
}

/// php-fpm's master (PID 1: the container) crashes with requests open; the
/// very next request must wake the container again.
#[test]
fn php_fpm_master_crash_next_request_wakes() {
    require!(Docker, PhpFpm, Root);
    let (site, mut w, idle) = warm_site_and_waker();
    let errors = crash_round(&site, &mut w, "master process");
    assert_eq!(errors, 4);
    let r = hello(&site.waker_socket())
        .unwrap_or_else(|e| panic!("not woken again after the crash: {e}\n{}", w.logs()));
    assert_eq!(r.text(), site.hello_line());
    assert!(wait_until(Duration::from_secs(3), || open_now(&site) == 0));
    // `idle` was counted before this waker ever woke anything; a wake
    // leaves the Docker client's pooled connection and the inotify
    // instance (both kept for the process's life) open, so up to 2 more.
    assert!(
        wait_until(Duration::from_secs(3), || fd_count(w.pid()) <= idle + 2),
        "descriptors: idle {idle}, after {}",
        fd_count(w.pid())
    );
}
