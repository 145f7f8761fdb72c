//! [`DockerProxy`], used by `faults`, `waker` and `fleet`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REAL_DOCKER: &str = "/var/run/docker.sock";

/// How the proxy treats new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the real engine, each request delayed by `delay`.
    Forward,
    /// Accept and never answer (the connection is held open).
    Hang,
}

/// A unix socket standing in for the Docker engine, in front of the real
/// one: forwards (optionally delaying every request), accepts and never
/// answers, or passes a different API version in one `/_ping` answer. Counts the requests it forwarded and the `POST …/containers/<c>/start`s
/// and `…/unpause`s: what a client asked, exactly, where Docker's own event
/// log may say more (see [`DockerProxy::unpauses`]).
pub struct DockerProxy {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the accept loop, the forwarding threads and the test share.
#[derive(Default)]
struct Shared {
    hang: AtomicBool,
    stop: AtomicBool,
    requests: AtomicUsize,
    starts: AtomicUsize,
    unpauses: AtomicUsize,
    held: Mutex<Vec<UnixStream>>,
    fake_version: AtomicBool,
}

impl DockerProxy {
    pub fn start(path: &Path, mode: Mode, delay: Duration) -> DockerProxy {
        let listener = UnixListener::bind(path).expect("bind proxy socket");
        let shared = Arc::new(Shared {
            hang: AtomicBool::new(mode == Mode::Hang),
            ..Shared::default()
        });
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    if shared.hang.load(Ordering::SeqCst) {
                        shared.held.lock().expect("lock").push(conn);
                        continue;
                    }
                    let shared = shared.clone();
                    std::thread::spawn(move || forward(conn, delay, &shared));
                }
            })
        };
        DockerProxy {
            path: path.to_owned(),
            shared,
            thread: Some(thread),
        }
    }

    /// The next `/_ping` answer that passes claims API version 1.11, older
    /// than any engine accepts (as if the engine behind had been upgraded
    /// under a running client); later ones are the engine's own.
    pub fn fake_version_once(&self) {
        self.shared.fake_version.store(true, Ordering::SeqCst);
    }

    /// True once the faked `/_ping` answer has been passed on.
    pub fn faked(&self) -> bool {
        !self.shared.fake_version.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.hang.store(mode == Mode::Hang, Ordering::SeqCst);
    }

    pub fn starts(&self) -> usize {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// `POST …/unpause` requests passed on. Docker 20.10's event log is not
    /// this count: under load it logs a `pause` and an `unpause` again when
    /// containerd's delayed task event reaches the daemon after the API call
    /// already changed the state (measured: 205 of each for 200 API pauses
    /// and unpauses, `docker events` live).
    pub fn unpauses(&self) -> usize {
        self.shared.unpauses.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn held(&self) -> usize {
        self.shared.held.lock().expect("lock").len()
    }

    /// How many held connections the client (the waker) has closed.
    pub fn held_closed_by_peer(&self) -> usize {
        let held = self.shared.held.lock().expect("lock");
        held.iter()
            .filter(|s| {
                let _ = s.set_nonblocking(true);
                let mut b = [0u8; 4096];
                let mut s: &UnixStream = s;
                // Past the request the waker sent, to its close (0) if any;
                // an error (WouldBlock: still open) ends the read, not closed.
                std::iter::from_fn(|| s.read(&mut b).ok()).any(|n| n == 0)
            })
            .count()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.held.lock().expect("lock").clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

const METHODS: &[&[u8]] = &[b"GET ", b"POST ", b"HEAD ", b"DELETE ", b"PUT "];

/// Copies client → engine (delaying each request head by `delay`) and
/// engine → client until either side closes.
fn forward(client: UnixStream, delay: Duration, shared: &Arc<Shared>) {
    let Ok(engine) = UnixStream::connect(REAL_DOCKER) else {
        return;
    };
    let (Ok(client_r), Ok(engine_w)) = (client.try_clone(), engine.try_clone()) else {
        return;
    };
    let back_shared = shared.clone();
    let back = std::thread::spawn(move || {
        pump(engine, client, |chunk| {
            let key = b"Api-Version: ";
            if let Some(i) = chunk
                .windows(key.len())
                .position(|w| w.eq_ignore_ascii_case(key))
                && chunk.len() >= i + key.len() + 4
                && back_shared.fake_version.swap(false, Ordering::SeqCst)
            {
                chunk[i + key.len()..i + key.len() + 4].copy_from_slice(b"1.11");
            }
        })
    });
    pump(client_r, engine_w, |chunk| {
        if METHODS.iter().any(|m| chunk.starts_with(m)) {
            shared.requests.fetch_add(1, Ordering::SeqCst);
            let line = chunk.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let post = |what: &str| {
                line.starts_with("POST ") && line.contains("/containers/") && line.contains(what)
            };
            for (what, count) in [("/start", &shared.starts), ("/unpause", &shared.unpauses)] {
                if post(what) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
    });
    let _ = back.join();
}

/// Copies `from` to `to` until either side closes, `inspect` seeing (and
/// maybe changing) each chunk first; then shuts `to` down.
fn pump(mut from: UnixStream, mut to: UnixStream, mut inspect: impl FnMut(&mut [u8])) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        inspect(&mut buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
