//! Smoke tests of the test harness itself, against the real components.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use xtask::kit::nginx::{Mode, site_snippet};

use crate::support::nsystemd::NsSystemd;
use crate::support::site::{SiteOptions, big_body, hello_line};
use crate::support::wake::{container_pids, dead_pid};
use crate::support::{self, FcgiRequest, Launch, Nginx, TestSite, fastcgi, http, require};

#[test]
fn test_site_container_answers_fastcgi_and_cleans_up() {
    require!(Docker, PhpFpm);
    let site = TestSite::new();
    assert_eq!(site.state(), "created");
    let before = SystemTime::now();
    site.start();
    let after = SystemTime::now();
    assert_eq!(site.state(), "running");
    assert_eq!(
        support::count_docker_events(site.container(), "start", before, after),
        1,
        "docker events should show exactly one start"
    );
    // php-fpm master + the image's default 4 static workers.
    assert_eq!(
        container_pids(&site, "php-fpm").len(),
        1 + xtask::image::DEFAULT_CHILDREN as usize
    );

    let fpm = |req: FcgiRequest| fastcgi::request(&site.fpm_socket(), &req);
    let resp = fpm(FcgiRequest::get("hello.php", "x=1")).expect("FastCGI request to php-fpm.sock");
    assert_eq!(
        resp.status,
        200,
        "stderr: {}",
        String::from_utf8_lossy(&resp.stderr)
    );
    assert_eq!(resp.text(), hello_line(site.name()));
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain;charset=UTF-8")
    );
    assert_eq!(resp.protocol_status, 0);

    // A missing script is php-fpm's own 404, not ours.
    let missing =
        fpm(FcgiRequest::get("nope.php", "")).expect("FastCGI request for a missing script");
    assert_eq!(missing.status, 404);

    // Large responses, bodies, stderr logging.
    let big = fpm(FcgiRequest::get("big.php", "mb=3")).expect("big.php");
    assert_eq!(big.body.len(), 3 << 20);
    assert!(big.body == big_body(3), "big.php body differs");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let echo = fpm(FcgiRequest::post("echo.php", &body)).expect("echo.php");
    assert_eq!(echo.header("X-Method"), Some("POST"));
    assert!(
        echo.body == body,
        "echo.php body differs ({} bytes back)",
        echo.body.len()
    );
    let logged = fpm(FcgiRequest::get("log.php", "kb=4")).expect("log.php");
    assert_eq!(logged.text(), "logged 4 KiB\n");

    // docker logs shows every request (php-fpm access log on stderr).
    assert!(
        support::wait_until(Duration::from_secs(5), || site.access_lines().len() >= 5),
        "access lines: {:?}\nlogs:\n{}",
        site.access_lines(),
        site.logs()
    );
    let lines = site.access_lines();
    for want in ["GET /hello.php?x=1 status=200", "POST /echo.php status=200"] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
    assert!(
        site.logs().contains("log line 00000003"),
        "log.php output missing from docker logs"
    );
    assert!(
        !site.logs().contains("PHP Warning"),
        "php-fpm warned:\n{}",
        site.logs()
    );

    // pause / unpause / stop are real engine states.
    site.pause();
    assert_eq!(site.state(), "paused");
    site.unpause();
    assert_eq!(site.state(), "running");
    site.stop();
    assert_eq!(site.state(), "exited");

    let name = site.container().to_string();
    let dir = site.temp_dir().to_path_buf();
    assert!(dir.exists());
    drop(site);
    assert_cleaned_up(&name, &dir);
    support::note!(
        "container {name} ran; php-fpm answered {:?} over FastCGI; {} access lines in docker logs; container and {} removed",
        resp.text().trim(),
        lines.len(),
        dir.display()
    );
}

#[test]
fn fpm_children_is_configurable() {
    require!(Docker, PhpFpm);
    let site = TestSite::started(SiteOptions::default().fpm_children(2));
    assert_eq!(
        container_pids(&site, "php-fpm").len(),
        3,
        "master + 2 workers"
    );
}

#[test]
fn leftover_containers_of_dead_test_processes_are_reaped() {
    require!(Docker, PhpFpm);
    let image = support::site::image();
    // Let this process's once-only reaping finish first, so the call below is the one that acts.
    support::site::reap_leftovers();
    let dead = dead_pid();
    let name = format!("fleet-it-leftover-{}", std::process::id());
    let pid_label = format!("fleet.test.pid={dead}");
    support::docker_ok(&[
        "create",
        "--name",
        &name,
        "--network",
        "none",
        "--label",
        "fleet.test=1",
        "--label",
        &pid_label,
        &image,
    ]);
    let stale_dir =
        std::path::PathBuf::from(format!("/tmp/{}{dead}-site-stale", support::TEMP_PREFIX));
    std::fs::create_dir_all(stale_dir.join("run")).expect("create stale dir");
    let removed = support::site::reap_leftovers_now();
    assert!(!stale_dir.exists(), "{} still exists", stale_dir.display());
    let left = support::docker(&["inspect", &name]);
    if left.status.success() {
        support::docker(&["rm", "-f", &name]);
    }
    assert!(!left.status.success(), "{name} still exists");
    if !removed.contains(&name) {
        // Only possible when a concurrent test process on this machine reaped it first.
        eprintln!("note: {name} was reaped by another test process; removed here: {removed:?}");
    }
}

#[test]
fn test_site_is_removed_when_the_test_panics() {
    require!(Docker, PhpFpm);
    let (name, dir) = std::thread::spawn(|| {
        let site = TestSite::new();
        let info = (site.container().to_string(), site.temp_dir().to_path_buf());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _site = site;
            panic!("deliberate panic inside a test holding a TestSite");
        }));
        assert!(result.is_err());
        info
    })
    .join()
    .expect("helper thread");
    assert_cleaned_up(&name, &dir);
}

/// A dropped [`TestSite`] left neither its container nor its directory.
fn assert_cleaned_up(name: &str, dir: &Path) {
    let left = support::containers(&format!("name=^{name}$"));
    assert_eq!(left.trim(), "", "container {name} left behind");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn nginx_serves_php_through_fpm_socket() {
    require!(Docker, PhpFpm, Nginx);
    let site = TestSite::started(SiteOptions::default());
    // The shipped location, bypassing the waker.
    let nginx = Nginx::start(&support::nginx::shipped_location_to(&format!(
        "unix:{}",
        site.fpm_socket().display()
    )));

    let hello = http::get(nginx.port(), "/hello.php").expect("GET /hello.php via nginx");
    assert_eq!(hello.status, 200, "nginx error log:\n{}", nginx.error_log());
    assert_eq!(hello.text(), hello_line(site.name()));

    let body: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let echo = http::post(nginx.port(), "/echo.php", &body).expect("POST /echo.php via nginx");
    assert_eq!(echo.status, 200, "nginx error log:\n{}", nginx.error_log());
    assert_eq!(echo.header("X-Method"), Some("POST"));
    assert!(
        echo.body == body,
        "echoed body differs: {} bytes back",
        echo.body.len()
    );

    let big = http::get(nginx.port(), "/big.php?mb=2").expect("GET /big.php via nginx");
    assert!(
        big.body == big_body(2),
        "big body differs ({} bytes)",
        big.body.len()
    );

    assert!(
        nginx
            .access_log()
            .contains("\"GET /hello.php HTTP/1.1\" 200"),
        "{}",
        nginx.access_log()
    );
    assert!(
        support::wait_until(Duration::from_secs(5), || site.access_lines().len() >= 3),
        "php-fpm access lines: {:?}",
        site.access_lines()
    );
}

#[test]
fn socket_activation_reaches_php_fpm() {
    require!(Docker, PhpFpm, SocketActivate, SocketProxyd);
    let site = TestSite::started(SiteOptions::default());
    let socket = site.waker_socket();
    let fpm = site.fpm_socket();
    let mut proxy = Launch::new(support::SOCKET_PROXYD)
        .arg(&fpm)
        .env("FLEET_HARNESS_MARK", "passed-through")
        .activate(&socket);
    let exe = || std::fs::read_link(format!("/proc/{}/exe", proxy.pid())).expect("read exe");
    // Not activated yet: systemd-socket-activate itself is still waiting.
    assert!(exe().ends_with("systemd-socket-activate"), "{:?}", exe());

    let resp = fastcgi::request(&socket, &FcgiRequest::get("hello.php", "via=proxyd"))
        .expect("FastCGI through the socket-activated proxy");
    assert_eq!(resp.status, 200, "proxy logs:\n{}", proxy.logs());
    assert_eq!(resp.text(), hello_line(site.name()));

    // Now the same pid is the activated binary, which got LISTEN_FDS/LISTEN_PID.
    let environ = std::fs::read(format!("/proc/{}/environ", proxy.pid())).expect("read environ");
    let environ = String::from_utf8_lossy(&environ);
    for var in [
        "LISTEN_FDS=1".to_string(),
        format!("LISTEN_PID={}", proxy.pid()),
    ] {
        assert!(environ.split('\0').any(|v| v == var), "{var}: {environ}");
    }
    assert!(exe().ends_with("systemd-socket-proxyd"), "{:?}", exe());

    // A second request reuses the same activated process.
    let again = fastcgi::request(&socket, &FcgiRequest::post("echo.php", b"second"))
        .expect("second request");
    assert_eq!(again.body, b"second");

    proxy.kill(nix::sys::signal::Signal::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("proxyd exits on SIGTERM");
    assert!(
        status.success() || support::process::signal_of(status).is_some(),
        "{status:?}"
    );
}

#[test]
fn image_tar_is_deterministic_and_complete() {
    require!(Docker, PhpFpm);
    let tag = support::site::image();
    let tar_bytes = xtask::image::rootfs_tar().expect("rootfs tar");
    // The cache key is the content: rebuilding gives the very same tag.
    assert_eq!(xtask::image::tag_for(&tar_bytes), tag);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut paths = Vec::new();
    let mut modes = std::collections::HashMap::new();
    for entry in archive.entries().expect("tar entries") {
        let entry = entry.expect("tar entry");
        let header = entry.header();
        assert_eq!(header.mtime().expect("mtime"), 0);
        assert_eq!(header.uid().expect("uid"), 0);
        assert_eq!(header.gid().expect("gid"), 0);
        let path = entry.path().expect("path").display().to_string();
        modes.insert(path.clone(), header.mode().expect("mode"));
        paths.push(path);
    }
    let unsorted = paths.windows(2).find(|w| w[0] > w[1]);
    assert!(unsorted.is_none(), "entries not sorted at {unsorted:?}");
    for needed in [
        "usr/sbin/php-fpm8.2",
        "lib64", // the loader path (a symlink on merged-/usr hosts)
        "lib",
        "etc/passwd",
        "etc/group",
        "etc/php/8.2/fpm/php-fpm.conf",
        "etc/php/8.2/fpm/php.ini",
        "run/php",
        "srv/www",
    ] {
        assert!(
            paths.iter().any(|p| p == needed),
            "{needed} missing from the rootfs"
        );
    }
    assert_eq!(modes.get("tmp"), Some(&0o1777));
}

#[test]
fn spawned_captures_output_env_and_signals() {
    // No external component needed beyond coreutils.
    let mut env = Launch::new("/usr/bin/env")
        .env("FLEET_HARNESS_MARK", "spawned")
        .spawn();
    let status = env.wait_exit(Duration::from_secs(10)).expect("env exits");
    assert!(status.success(), "{status:?}");
    assert!(
        env.stdout()
            .lines()
            .any(|l| l == "FLEET_HARNESS_MARK=spawned"),
        "{}",
        env.stdout()
    );

    let mut sleeper = Launch::new("/usr/bin/sleep").arg("30").spawn();
    assert!(sleeper.try_status().is_none(), "sleep 30 is still running");
    sleeper.kill(nix::sys::signal::Signal::SIGTERM);
    let status = sleeper
        .wait_exit(Duration::from_secs(10))
        .expect("sleep exits on SIGTERM");
    assert_eq!(support::process::signal_of(status), Some(libc::SIGTERM));
}

#[test]
fn nginx_upstream_falls_back_to_backup_server() {
    require!(Docker, PhpFpm, Nginx);
    let site = TestSite::started(SiteOptions::default());
    // The shipped direct-mode upstream under another run directory, where
    // the primary (php-fpm.sock) is missing, as while the container is
    // stopped, and the backup (vhost-waker.sock) is a link to the live
    // php-fpm socket.
    let run = site.temp_dir().join("fallback-run");
    let dir = run.join(site.name());
    std::fs::create_dir_all(&dir).expect("run dir");
    std::os::unix::fs::symlink(site.fpm_socket(), dir.join("vhost-waker.sock"))
        .expect("link the backup to php-fpm's socket");
    let dead = dir.join("php-fpm.sock");
    let snippet = site_snippet(Mode::Direct, site.name(), &run);
    let nginx = Nginx::start(&snippet.expect("the shipped direct-mode snippet templates"));
    for _ in 0..3 {
        let resp = http::get(nginx.port(), "/hello.php").expect("GET via upstream");
        assert_eq!(resp.status, 200, "nginx error log:\n{}", nginx.error_log());
        assert_eq!(resp.text(), site.hello_line());
    }
    assert!(
        nginx.error_log().contains(&dead.display().to_string()),
        "nginx should have tried the primary first:\n{}",
        nginx.error_log()
    );
}

/// A booted systemd, and the units it starts, live in cgroups of the boot's
/// own below the test's (not in the host's `/init.scope` and
/// `/system.slice`), and those are gone once it is dropped.
#[test]
fn namespaced_systemd_keeps_to_cgroups_of_its_own() {
    require!(Root, Systemd);
    let ns = NsSystemd::boot_private(&[], &[]);
    let cgroups = ns.cgroups().to_vec();
    assert!(!cgroups.is_empty(), "no cgroup of the boot's own was made");
    let boot = cgroups[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let systemd = std::fs::read_to_string(ns.path(Path::new("/proc/1/cgroup"))).expect("cgroup");
    // One line a hierarchy; systemd mounts some the test process is not in.
    let inside = systemd.lines().filter(|l| l.contains(&format!("/{boot}")));
    assert_eq!(
        inside.count(),
        cgroups.len(),
        "systemd outside {boot}:\n{systemd}"
    );
    let run = ns.run("systemd-run", &["--unit=fleet-probe", "sleep", "600"]);
    assert!(
        run.status.success(),
        "{}",
        support::assert::output_text(&run)
    );
    let probe = |c: &PathBuf| c.join("system.slice/fleet-probe.service/cgroup.procs");
    let in_boot =
        |c: &PathBuf| std::fs::read_to_string(probe(c)).is_ok_and(|p| !p.trim().is_empty());
    assert!(
        cgroups.iter().any(in_boot),
        "the unit is not in {cgroups:?}"
    );
    drop(ns);
    let left: Vec<_> = cgroups.iter().filter(|c| c.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
