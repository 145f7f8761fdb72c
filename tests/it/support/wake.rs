//! Helpers shared by the tests that drive fleet-waker (`waker`, `faults`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    FcgiRequest, FcgiResponse, Launch, SiteOptions, SocketActivated, TestSite, bin, fastcgi,
};

/// One `hello.php` request over FastCGI to `socket`.
pub fn hello(socket: &Path) -> std::io::Result<FcgiResponse> {
    fastcgi::request(socket, &FcgiRequest::get("hello.php", ""))
}

/// A stopped (exited) container: started once, then `docker stop`.
pub fn stopped_site(options: SiteOptions) -> TestSite {
    let site = TestSite::with_options(options);
    site.start();
    site.stop();
    assert_eq!(site.state(), "exited");
    site
}

/// Holds `k` connections at the waker, each sending a request; returns how
/// long each took to be closed (EOF or error, no answer).
pub fn held_connections_closed(socket: &Path, k: usize) -> Vec<Duration> {
    let threads: Vec<_> = (0..k)
        .map(|_| {
            let s = socket.to_path_buf();
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut c = UnixStream::connect(&s).expect("connect to the waker");
                c.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let _ = c.write_all(&fastcgi::encode_request(&FcgiRequest::get("hello.php", "")));
                let mut buf = Vec::new();
                let r = c.read_to_end(&mut buf);
                assert!(
                    buf.is_empty(),
                    "a failed wake must not answer ({} bytes)",
                    buf.len()
                );
                if let Err(e) = r {
                    assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "held 30 s");
                }
                t.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

/// The waker under real socket activation on the site's vhost-waker.sock.
pub fn activated(site: &TestSite, extra: &[&str]) -> SocketActivated {
    Launch::new(bin("fleet-waker"))
        .arg(site.name())
        .args(extra)
        .envs(site.layout_env())
        .env("RUST_LOG", "debug")
        .activate(&site.waker_socket())
}
