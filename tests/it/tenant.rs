//! Tenant isolation (issue 12): a site's container controls its runtime
//! directory, so every attack here is made from inside a real site container,
//! as the container's root, by a PHP script (`tenant.php`, the image has no
//! shell) against a real fleet-waker under `systemd-socket-activate`.
//! SECURITY.md names each test.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xtask::kit::nginx::{Mode, share_socket_with_nginx};

use crate::support::assert::{fpm_says_hello, output_text, says_hello};
use crate::support::nginx::{Nginx, shipped};
use crate::support::nsystemd::{boot_for, run_renew, unit_text};
use crate::support::reaper::{self, ReaperExt as _, RunExt as _};
use crate::support::wake::{activated, fd_count, logged, on_threads};
use crate::support::{
    FcgiRequest, MountedDir, SiteOptions, TestSite, bin, exchange, fastcgi, http, note, require,
    run_ok, wait_until,
};

/// What a hostile site's PHP does to its runtime directory (`/run/php` in
/// the container). Names are taken as basenames; a symlink's target is
/// free text, as a tenant would write it.
const TENANT_PHP: &str = r#"<?php
header('Content-Type: text/plain');
$d = '/run/php/';
$a = $d . basename($_GET['a'] ?? 'x');
$b = $d . basename($_GET['b'] ?? 'x');
switch ($_GET['op'] ?? '') {
case 'rename': $ok = rename($a, $b); break;
case 'symlink': $ok = symlink($_GET['t'] ?? '', $a); break;
case 'link': $ok = link($a, $b); break;
case 'unlink': $ok = unlink($a); break;
case 'fifo': $ok = posix_mkfifo($a, 0666); break;
case 'file': $ok = file_put_contents($a, "not a socket\n") !== false; break;
case 'mkdir': $ok = mkdir($a); break;
case 'rmdir': $ok = rmdir($a); break;
case 'fill':
    // Bytes until the directory is full, then empty files until no inode
    // is left: what a tenant does to fill the host's /run.
    $bytes = 0; $files = 0; $chunk = str_repeat('x', 65536);
    for ($i = 0; $i < 100000; $i++) {
        $f = @fopen($d . "fill-$i", 'w');
        if (!$f) break;
        $files++;
        $w = @fwrite($f, $chunk);
        fclose($f);
        if ($w === false || $w < strlen($chunk)) { $bytes += (int)$w; break; }
        $bytes += $w;
    }
    for ($j = 0; $j < 1000000; $j++) {
        $f = @fopen($d . "empty-$j", 'w');
        if (!$f) break;
        fclose($f);
        $files++;
    }
    echo "bytes=$bytes files=$files\n";
    exit;
default: http_response_code(400); echo "bad op\n"; exit;
}
echo $ok ? "ok\n" : "failed\n";
"#;

/// A running site whose docroot has `tenant.php`.
fn tenant_site(options: SiteOptions) -> TestSite {
    let site = TestSite::with_options(options);
    std::fs::write(site.docroot().join("tenant.php"), TENANT_PHP).expect("tenant.php");
    site.start();
    site
}

/// Runs `tenant.php?<query>` in the container through php-fpm's socket at
/// `via` (the real one, wherever the tenant moved it) and returns its body.
fn tenant(via: &Path, query: &str) -> String {
    let r = fastcgi::request(via, &FcgiRequest::get("tenant.php", query))
        .unwrap_or_else(|e| panic!("tenant.php?{query} via {}: {e}", via.display()));
    r.text()
}

fn tenant_ok(via: &Path, query: &str) {
    assert_eq!(tenant(via, query), "ok\n", "tenant.php?{query}");
}

/// The tenant moves php-fpm's real socket aside to `real.sock` (php-fpm
/// keeps listening on it) and returns its path.
fn move_socket_aside(site: &TestSite) -> PathBuf {
    tenant_ok(&site.fpm_socket(), "op=rename&a=php-fpm.sock&b=real.sock");
    site.layout().site_dir(site.site()).join("real.sock")
}

/// The tenant puts php-fpm's socket back.
fn restore_socket(real: &Path) {
    tenant_ok(real, "op=rename&a=real.sock&b=php-fpm.sock");
}

/// The tenant plants a symlink named `name` to `target` (at `via`, as
/// [`tenant`]).
fn symlink(via: &Path, name: &str, target: &str) {
    tenant_ok(via, &format!("op=symlink&a={name}&t={target}"));
}

fn fcgi_hello() -> Vec<u8> {
    fastcgi::encode_request(&FcgiRequest::get("hello.php", ""))
}

/// Sends `bytes` to the waker and reads until it closes: nothing may come
/// back (`what` names the failure); how long it took.
fn no_answer(site: &TestSite, bytes: &[u8], what: &str) -> Duration {
    let t = Instant::now();
    let got = exchange(&site.waker_socket(), bytes, Duration::from_secs(30));
    assert!(
        got.is_empty(),
        "{what}: {} bytes came back: {:?}",
        got.len(),
        String::from_utf8_lossy(&got)
    );
    // Closed, not held until the read above timed out.
    let took = t.elapsed();
    assert!(took < Duration::from_secs(29), "{what}: held {took:?}");
    took
}

/// An HTTP request to Docker's API, as if php-fpm's socket were Docker's.
const DOCKER_VERSION: &[u8] = b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n";

/// The engine's socket on this machine, as a tenant would name it.
fn docker_socket() -> &'static str {
    ["/run/docker.sock", "/var/run/docker.sock"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Docker's socket")
}

/// php-fpm.sock → Docker's socket: the client gets no Docker answer, the
/// waker logs the refusal, and once the tenant restores the socket the next
/// request is served.
#[test]
fn symlink_to_docker_socket_is_refused() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    let site = tenant_site(SiteOptions::default());
    let w = activated(&site, &["--start-timeout", "2s"]);
    says_hello(&site, "warm", String::new);

    let real = move_socket_aside(&site);
    symlink(&real, "php-fpm.sock", docker_socket());
    let took = no_answer(&site, DOCKER_VERSION, "the waker relayed Docker's answer");
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    logged(&w, "refusing php-fpm's socket");
    logged(&w, "a symlink (never followed)");

    tenant_ok(&real, "op=unlink&a=php-fpm.sock");
    restore_socket(&real);
    says_hello(&site, "after the restore", String::new);
    note!("docker.sock via symlink: closed after {took:?}, no byte");
}

/// php-fpm.sock → another site's php-fpm.sock: never proxied (that site's
/// php-fpm sees no request), and that site keeps serving.
#[test]
fn symlink_to_another_sites_socket_is_never_proxied() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    let attacker = tenant_site(SiteOptions::default());
    let victim = tenant_site(SiteOptions::default());
    let _w = activated(&attacker, &["--start-timeout", "2s"]);
    let victim_waker = activated(&victim, &[]);
    let before = victim.access_lines().len();

    let real = move_socket_aside(&attacker);
    let target = victim.fpm_socket().display().to_string();
    symlink(&real, "php-fpm.sock", &target);
    no_answer(&attacker, &fcgi_hello(), "via another site's socket");
    assert_eq!(
        victim.access_lines().len(),
        before,
        "the victim's php-fpm saw a request"
    );
    // The victim is unaffected, directly and through its own waker.
    fpm_says_hello(&victim, "victim");
    says_hello(&victim, "victim's waker", String::new);
    assert!(victim_waker.activated());
}

/// nginx connects to the sockets in a site's runtime directory by path, and
/// connect(2) follows symlinks; the directory's tmpfs is mounted
/// `nosymfollow`, so a symlink the tenant plants at php-fpm.sock (direct
/// mode) or vhost-waker.sock (proxy mode) to another site's php-fpm socket
/// never reaches that site: the client gets an error.
#[test]
fn nginx_never_follows_a_symlink_in_the_runtime_directory() {
    require!(Docker, PhpFpm, SocketActivate, Root, Nginx);
    let victim = tenant_site(SiteOptions::default());
    let target = victim.fpm_socket().display().to_string();
    for (mode, name) in [
        (Mode::Direct, "php-fpm.sock"),
        (Mode::Proxy, "vhost-waker.sock"),
    ] {
        let attacker = tenant_site(SiteOptions::default());
        let _waker = activated(&attacker, &["--start-timeout", "2s"]);
        share_socket_with_nginx(&attacker.waker_socket()).expect("share the waker socket");
        let nginx = Nginx::start(&shipped(mode, &attacker));
        let real = move_socket_aside(&attacker);
        if name != "php-fpm.sock" {
            tenant_ok(&real, &format!("op=unlink&a={name}"));
        }
        symlink(&real, name, &target);
        let before = victim.access_lines().len();
        let r = http::get(nginx.port(), "/hello.php").expect("GET through nginx");
        let log = nginx.error_log();
        assert_eq!(r.status, 502, "{mode:?}: {}\n{log}", r.text());
        assert_eq!(
            victim.access_lines().len(),
            before,
            "{mode:?}: the victim was reached"
        );
        assert!(
            log.contains("Too many levels of symbolic links"),
            "{mode:?}: {log}"
        );
    }
}

/// `fleet-renew --mount-only site` with `run`'s run directory; its output.
fn mount_only(run: &MountedDir, site: &str) -> String {
    let dir = run.0.path().to_str().expect("utf-8");
    let args = ["--mount-only", "--run-dir", dir, site];
    run_ok(&bin("fleet-renew").display().to_string(), &args)
}

/// Asserts the mount at `dir` is `nosymfollow` and a symlink planted in it
/// is not followed (`ELOOP`); the mount's per-mount options.
fn follows_no_symlink(dir: &Path) -> Vec<String> {
    let path = dir.to_str().expect("utf-8 path");
    let options = run_ok("findmnt", &["-n", "-o", "VFS-OPTIONS", path]);
    let options: Vec<String> = options.trim().split(',').map(str::to_owned).collect();
    assert!(options.contains(&"nosymfollow".to_owned()), "{options:?}");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).expect("symlink");
    let read = std::fs::read(dir.join("link")).expect_err("a symlink was followed");
    assert_eq!(read.raw_os_error(), Some(libc::ELOOP), "{read}");
    options
}

/// A runtime tmpfs mounted before fleet set `nosymfollow` (an upgraded
/// host) gets it from the socket unit's `fleet-renew --mount-only`, its
/// other flags kept; a second run changes nothing.
#[test]
fn mount_only_makes_an_older_runtime_tmpfs_nosymfollow() {
    require!(Root);
    let run = MountedDir(crate::support::temp_dir("oldrun"));
    let dir = run.0.path().join("old.test");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.to_str().expect("utf-8 path");
    run_ok(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m,nosuid,nodev",
            "fleet-rundir",
            path,
        ],
    );
    let renew = || mount_only(&run, "old.test");
    let said = renew();
    assert!(said.contains("remounted nosymfollow"), "{said}");
    let options = follows_no_symlink(&dir);
    let has = |o: &str| options.contains(&o.to_owned());
    assert!(has("nosuid") && has("nodev"), "{options:?}");
    assert!(!has("noexec"), "a flag was added: {options:?}");
    let again = renew();
    assert!(!again.contains("remounted"), "{again}");
}

/// A runtime directory in use (a container started before the socket unit)
/// cannot get its tmpfs, yet `fleet-renew --mount-only` still makes nginx
/// follow no symlink in it: the directory is bound onto itself
/// `nosymfollow`, its live socket still answers, and a second run adds no
/// second mount.
#[test]
fn mount_only_binds_a_directory_in_use_nosymfollow() {
    require!(Root);
    let run = MountedDir(crate::support::temp_dir("inuse"));
    let dir = run.0.path().join("busy.test");
    std::fs::create_dir(&dir).expect("mkdir");
    let live = std::os::unix::net::UnixListener::bind(dir.join("php-fpm.sock")).expect("bind");
    let renew = || mount_only(&run, "busy.test");
    let said = renew();
    assert!(
        said.contains("in use") && said.contains("bound onto itself nosymfollow"),
        "{said}"
    );
    follows_no_symlink(&dir);
    std::os::unix::net::UnixStream::connect(dir.join("php-fpm.sock")).expect("the live socket");
    live.accept().expect("accepted");
    let again = renew();
    assert!(!again.contains("bound onto itself"), "{again}");
    let path = dir.to_str().expect("utf-8 path");
    let mounts = run_ok("findmnt", &["-n", "-o", "TARGET", path]);
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
}

/// php-fpm.sock → the site's own vhost-waker.sock (symlink, then hard link):
/// no loop; held connections are closed at the timeout, and afterwards the
/// waker serves `--connections-max` requests at once again (every permit
/// back).
#[test]
fn own_waker_socket_is_never_connected_to() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    let site = tenant_site(SiteOptions::default().fpm_children(8));
    let w = activated(&site, &["--start-timeout", "2s", "--connections-max", "8"]);
    says_hello(&site, "warm", String::new);
    let fds = || fd_count(w.pid());
    let fds_before = fds();

    let real = move_socket_aside(&site);
    for (how, query) in [
        ("symlink", "op=symlink&a=php-fpm.sock&t=vhost-waker.sock"),
        ("hard link", "op=link&a=vhost-waker.sock&b=php-fpm.sock"),
    ] {
        tenant_ok(&real, query);
        for took in on_threads(16, || no_answer(&site, &fcgi_hello(), how)) {
            // 16 connections over 8 permits: at most two timeouts in a row.
            assert!(took < Duration::from_secs(10), "{how}: held {took:?}");
        }
        tenant_ok(&real, "op=unlink&a=php-fpm.sock");
    }
    logged(&w, "a symlink (never followed)");
    logged(&w, "the waker's own listening socket");

    restore_socket(&real);
    // Every permit is back: 8 requests that each take 2 s run at once (one
    // permit short, they would take 4 s).
    let t = Instant::now();
    let sleep = FcgiRequest::get("sleep.php", "s=2");
    for r in on_threads(8, || fastcgi::request(&site.waker_socket(), &sleep)) {
        assert_eq!(r.expect("served").text(), "slept 2\n");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "8 two-second requests took {took:?}: permits were not all back"
    );
    assert!(
        // A wake keeps its inotify and Docker connections; a leaked
        // self-connection per request would be dozens.
        wait_until(Duration::from_secs(5), || fds() <= fds_before + 6),
        "waker descriptors {} → {}",
        fds_before,
        fds()
    );
    note!("8 × 2 s after the attack: {took:?}");
}

/// A FIFO, a regular file, a directory and a dangling symlink at
/// php-fpm.sock: each wake fails within the timeout (not before it, not
/// long after), with a log line naming what is there; then the site is
/// served again.
#[test]
fn non_sockets_fail_the_wake_within_the_timeout() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    let site = tenant_site(SiteOptions::default());
    let w = activated(&site, &["--start-timeout", "2s"]);
    let real = move_socket_aside(&site);
    for (make, target, word, undo) in [
        ("fifo", "", "a FIFO", "unlink"),
        ("file", "", "a regular file", "unlink"),
        ("mkdir", "", "a directory", "rmdir"),
        ("symlink", "&t=/nowhere/at/all", "a symlink", "unlink"),
    ] {
        tenant_ok(&real, &format!("op={make}&a=php-fpm.sock{target}"));
        let took = no_answer(&site, &fcgi_hello(), word);
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "{word}: closed after {took:?} (timeout 2s)"
        );
        logged(&w, &format!("it is {word}"));
        tenant_ok(&real, &format!("op={undo}&a=php-fpm.sock"));
    }
    logged(&w, "was refused for 2s");
    restore_socket(&real);
    says_hello(&site, "restored", String::new);
}

/// Free bytes of the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks_available() * st.fragment_size()
}

/// A tmpfs standing in for the host's `/run` (nothing else writes to it, so
/// its free space is exact); unmounted on drop.
fn host_run() -> MountedDir {
    let dir = MountedDir(crate::support::temp_dir("hostrun"));
    let path = dir.0.path().to_str().expect("utf-8 path");
    let options = "size=64m,mode=0755,nosuid,nodev";
    run_ok(
        "mount",
        &["-t", "tmpfs", "-o", options, "fleet-it-hostrun", path],
    );
    dir
}

/// A tenant fills its runtime directory: it fills only its own tmpfs (the
/// host's /run, here a tmpfs of the test's own, loses not a byte), and
/// another site still wakes.
#[test]
fn filling_the_runtime_directory_leaves_run_alone() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    // Declared first, dropped last: after the sites' own mounts are gone.
    let host_run = host_run();
    let on_run = SiteOptions {
        run_dir_in: Some(host_run.0.path().to_owned()),
        ..Default::default()
    };
    let attacker = tenant_site(on_run.clone());
    let other = TestSite::with_options(on_run);
    let other_waker = activated(&other, &["--start-timeout", "20s"]);
    let dir = attacker.layout().site_dir(attacker.site());
    let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
    assert_ne!(
        dev(&dir),
        dev(host_run.0.path()),
        "the runtime directory is not a file system of its own"
    );

    let run_free = free_bytes(host_run.0.path());
    let out = tenant(&attacker.fpm_socket(), "op=fill");
    let bytes: u64 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fill said {out:?}"));
    assert!(
        bytes >= 900 * 1024,
        "the tenant wrote only {bytes} bytes: {out}"
    );
    assert_eq!(free_bytes(&dir), 0, "the tenant's tmpfs is not full: {out}");
    assert_eq!(
        free_bytes(host_run.0.path()),
        run_free,
        "the host's run directory lost space while the tenant wrote {bytes} bytes"
    );

    // The other site still wakes (its socket needs an inode on its own tmpfs).
    says_hello(&other, "other site wakes", String::new);
    assert!(other_waker.activated());
    // And the full site itself keeps serving what it has.
    fpm_says_hello(&attacker, "full site");
    note!("tenant wrote {out:?}; the host's run directory lost 0 bytes");
}

/// fleet-renew with Docker unreachable while the container runs: the
/// container's state is unknown, so php-fpm.sock is kept (the host's
/// /proc/net/unix never shows a container's listener) and the site still
/// answers, directly and through the renewed socket unit.
#[test]
fn renew_with_docker_dead_keeps_a_live_socket() {
    require!(Docker, PhpFpm, Root, Systemd);
    let site = tenant_site(SiteOptions::default());
    let ns = boot_for(&site);
    let name = site.name().to_owned();
    let out = ns
        .command(crate::support::bin("fleet-renew"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .arg(&name)
        .output()
        .expect("run fleet-renew");
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "Docker is dead, renew must say so:\n{text}"
    );
    assert!(text.contains("php-fpm.sock\tskipped"), "{text}");
    assert!(text.contains("a tmpfs of its own\tskipped"), "{text}");
    assert!(
        std::fs::symlink_metadata(site.fpm_socket()).is_ok_and(|m| m.file_type().is_socket()),
        "php-fpm.sock was removed:\n{text}"
    );
    fpm_says_hello(&site, "direct");
    says_hello(&site, "through the renewed socket", String::new);
    // With Docker back, renew stops the container and only then leaves a
    // refusing placeholder where php-fpm's socket was.
    let out = run_renew(&ns, &[&name]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(site.state(), "exited");
    assert_eq!(
        fleet_core::upstream::probe(&site.fpm_socket()),
        fleet_core::upstream::Liveness::Dead
    );
}

/// The waker's sandbox: the shipped service unit with its command replaced
/// by probes. It cannot read /etc/shadow or Docker's data in /var/lib, and
/// still reaches Docker's socket at its default path.
#[test]
fn waker_unit_cannot_read_host_secrets() {
    require!(Docker, Root, Systemd);
    let site = TestSite::new();
    let ns = boot_for(&site);
    assert!(
        ns.run("test", &["-e", "/etc/shadow"]).status.success(),
        "the namespace itself sees /etc/shadow"
    );
    let unit = unit_text("fleet-waker@.service");
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    let probes = [
        "ExecStart=/usr/bin/test -S /var/run/docker.sock",
        "ExecStart=/usr/bin/test -S /run/docker.sock",
        "ExecStart=/usr/bin/test ! -e /etc/shadow",
        "ExecStart=/usr/bin/test ! -e /var/lib/docker",
        "ExecStart=/usr/bin/test -r /proc/self/cgroup",
    ]
    .join("\n");
    let probe = unit
        .replace(exec, &probes)
        .replace("Type=notify", "Type=oneshot")
        .replace("Requires=fleet-waker@%i.socket", "")
        .replace("After=fleet-waker@%i.socket", "");
    ns.write_unit("fleet-sandbox-probe@.service", &probe);
    ns.systemctl_ok(&["daemon-reload"]);
    let out = ns.systemctl(&["start", "fleet-sandbox-probe@x.service"]);
    let status = ns.systemctl(&["status", "--no-pager", "fleet-sandbox-probe@x.service"]);
    assert!(
        out.status.success(),
        "a probe failed:\n{}\n{}",
        output_text(&out),
        output_text(&status)
    );
}

/// The name the reaper moves php-fpm's socket to while it puts the site to
/// sleep (`php-fpm.sock.sleeping`) is the tenant's too: a symlink planted
/// there is replaced by the move, never followed; a directory there keeps
/// the reaper from acting (the site stays up); and a symlink there while
/// php-fpm's socket is gone is never put back nor connected to.
#[test]
fn the_sleeping_name_is_never_followed() {
    require!(Docker, PhpFpm, SocketActivate, Root);
    let site = tenant_site(SiteOptions::default());
    site.write_conf("1s");
    let _w = activated(&site, &["--start-timeout", "3s"]);
    let aside = site.fpm_socket().with_file_name("php-fpm.sock.sleeping");
    let docker = docker_socket();

    // 1. A symlink at the aside name: the reaper's rename replaces the link
    // itself; the site pauses, and wakes through the waker.
    symlink(&site.fpm_socket(), "php-fpm.sock.sleeping", docker);
    let pause = reaper::over(&site).args(["--action", "pause"]);
    pause.reap_until(&site, "paused", Duration::from_secs(20));
    let meta = std::fs::symlink_metadata(&aside).expect("the socket is aside");
    assert!(
        meta.file_type().is_socket(),
        "php-fpm's socket replaced the planted link: {meta:?}"
    );
    says_hello(&site, "wake from pause", String::new);
    assert_eq!(site.state(), "running");
    assert!(!aside.exists(), "the socket is back in place");
    fpm_says_hello(&site, "php-fpm answers at its own path again");

    // 2. A directory at the aside name: the socket cannot be moved there, so
    // the reaper leaves the site running, saying why; the site keeps serving.
    tenant_ok(&site.fpm_socket(), "op=mkdir&a=php-fpm.sock.sleeping");
    std::thread::sleep(Duration::from_millis(1200));
    let skipped = pause.passes(Duration::from_secs(20), Duration::from_millis(300), |run| {
        let e = run.entry(site.name())?;
        assert_ne!(e["action"], "paused", "{e}");
        Ok(e["action"] == "skipped")
    });
    let e = skipped
        .expect("the reaper tried and gave up")
        .site(site.name());
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("php-fpm.sock"), "{e}");
    assert_eq!(site.state(), "running");
    fpm_says_hello(&site, "php-fpm still at its path");
    tenant_ok(&site.fpm_socket(), "op=rmdir&a=php-fpm.sock.sleeping");

    // 3. php-fpm's socket moved away by the tenant and a symlink to Docker's
    // socket at the aside name: a wake finds the container running and must
    // neither rename the link into place nor connect through it.
    let real = move_socket_aside(&site);
    symlink(&real, "php-fpm.sock.sleeping", docker);
    no_answer(&site, DOCKER_VERSION, "the waker relayed something");
    let meta = std::fs::symlink_metadata(&aside).expect("the link is still there");
    assert!(meta.file_type().is_symlink(), "left as it was");
    assert!(
        !site.fpm_socket().exists(),
        "nothing was put at php-fpm.sock"
    );
    tenant_ok(&real, "op=unlink&a=php-fpm.sock.sleeping");
    restore_socket(&real);
    says_hello(&site, "after the restore", String::new);
}
