//! The README's first command on a machine that lacks what it needs: `apt-get
//! remove nginx-light nginx php8.2-fpm` is run for real (nginx-light alone
//! would leave `/usr/sbin/nginx`, which is nginx's), then `cargo xtask demo
//! --once` must install them (the package step `cargo xtask test` uses) and
//! complete.
//!
//! The machine is a throwaway view of this one: a private mount namespace
//! with `/usr`, `/etc` and `/var` overlaid on directories of the test, so
//! apt and dpkg change only the overlay and the host's packages stay as they
//! are. The demo's site lives under a shared bind mount, so the tmpfs it
//! mounts there in the namespace is the one Docker (in the host's namespace)
//! bind-mounts into the container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xtask::error::{Cmd, or_panic};

use crate::support::nsystemd::overlay_options;
use crate::support::{
    Launch, MountedDir, Spawned, bin, free_port, note, require, run_ok, temp_dir, wait_until,
};

/// The packages the demo needs that the test removes, and their binaries.
const REMOVED: [&str; 2] = ["nginx-light", "php8.2-fpm"];
const BINARIES: [&str; 2] = ["/usr/sbin/nginx", "/usr/sbin/php-fpm8.2"];

/// A mount namespace held open by a `sleep`, and the way into it.
struct Sandbox {
    holder: Spawned,
}

impl Sandbox {
    /// A new mount namespace, once `unshare` has made it (nsenter must not
    /// join the host's, which `unshare` is in until it has).
    fn new() -> Sandbox {
        let holder = Launch::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--"])
            .args(["sleep", "infinity"])
            .spawn();
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let pid = holder.pid().to_string();
        assert!(
            wait_until(Duration::from_secs(10), || ns(&pid)
                .is_some_and(|n| Some(n) != ns("self"))),
            "unshare made no mount namespace: {}",
            holder.logs()
        );
        Sandbox { holder }
    }

    fn pid(&self) -> String {
        self.holder.pid().to_string()
    }

    /// `path` as the namespace sees it.
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    /// A command (its argv to be added) run inside the namespace (nsenter
    /// enters its mounts only), killed after `limit` (a stalled mirror must
    /// not hang the suite).
    fn cmd(&self, limit: Duration) -> Cmd {
        Cmd::new("nsenter")
            .args(["--target", &self.pid(), "--mount", "--"])
            .args(["timeout", "--kill-after=10", &limit.as_secs().to_string()])
    }

    fn run(&self, argv: &[&str]) -> String {
        or_panic(self.cmd(Duration::from_secs(60)).args(argv).stdout())
    }

    /// Whether the [`REMOVED`] packages and their [`BINARIES`] are in the
    /// sandbox is `there`; the host keeps them all the while.
    fn assert_packages(&self, there: bool, when: &str) {
        for package in REMOVED {
            let installed = xtask::deps::is_installed_in(&self.path("/var/lib/dpkg"), package);
            assert_eq!(
                installed, there,
                "{package} installed in the sandbox {when}"
            );
            assert!(
                xtask::deps::is_installed(package),
                "{package} left the host"
            );
        }
        for binary in BINARIES {
            assert_eq!(
                self.path(binary).exists(),
                there,
                "{binary} in the sandbox {when}"
            );
            assert!(Path::new(binary).exists(), "{binary} left the host");
        }
    }
}

#[test]
fn demo_on_a_machine_without_nginx_and_php_fpm_installs_them_and_completes() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Systemd, Root);
    let upper = temp_dir("first-run-overlay");
    // A short name: the demo's socket paths below it must fit sun_path.
    let shared = MountedDir(temp_dir("fr"));
    let shared_path = shared.0.path();
    // The sites' base is its own mount, shared: what the demo mounts below it
    // inside the namespace propagates to this (Docker's) namespace.
    let base = shared_path.to_str().expect("utf-8 path");
    run_ok("mount", &["--bind", base, base]);
    run_ok("mount", &["--make-shared", base]);

    let sandbox = Sandbox::new();
    // /usr, /etc and /var overlaid, each once the mount that holds it is
    // private in the namespace (a host where one is shared would otherwise
    // get the overlays); the sites' base stays shared.
    for dir in ["/usr", "/etc", "/var"] {
        let holder = sandbox.run(&["findmnt", "-n", "-o", "TARGET", "-T", dir]);
        sandbox.run(&["mount", "--make-private", holder.trim()]);
        let options = overlay_options(Path::new(dir), &upper.path().join(&dir[1..]));
        sandbox.run(&["mount", "-t", "overlay", "overlay", "-o", &options, dir]);
    }
    // The host's systemd hidden from the maintainer scripts: with
    // /run/systemd/system they would `systemctl daemon-reload` the host's.
    if sandbox.path("/run/systemd").is_dir() {
        let holder = sandbox.run(&["findmnt", "-n", "-o", "TARGET", "-T", "/run/systemd"]);
        sandbox.run(&["mount", "--make-private", holder.trim()]);
        sandbox.run(&["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"]);
    }
    // No service may start or stop while packages come and go (as in a
    // build chroot): the host's php-fpm and nginx are not the sandbox's.
    let policy = sandbox.path("/usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").expect("write policy-rc.d");
    sandbox.run(&["chmod", "0755", "/usr/sbin/policy-rc.d"]);

    let remove = sandbox.cmd(Duration::from_secs(300));
    let remove = remove
        .args(["apt-get", "remove", "-y", "nginx"])
        .args(REMOVED);
    or_panic(remove.env("DEBIAN_FRONTEND", "noninteractive").stdout());
    sandbox.assert_packages(false, "after the removal");

    let port = free_port();
    let started = Instant::now();
    let out = sandbox
        .cmd(Duration::from_secs(900))
        .arg(bin("xtask"))
        .args(["demo", "--once", "--no-build", "--port", &port.to_string()])
        .env("FLEET_KIT_TMPDIR", shared_path)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("run the demo in the sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed on the machine without {REMOVED:?} ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The package step ran first and installed exactly what was removed.
    let install = stderr
        .lines()
        .find(|l| l.starts_with("==> apt-get install"))
        .unwrap_or_else(|| panic!("the demo did not install anything:\n{stderr}"));
    for package in REMOVED {
        assert!(
            install.contains(package),
            "{package} not installed by: {install}"
        );
    }
    assert!(
        stderr.contains("==> packages: installed"),
        "no install report:\n{stderr}"
    );
    for needle in ["all four steps done", "demo finished"] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    sandbox.assert_packages(true, "after the demo");
    note!(
        "removed {REMOVED:?}, then `xtask demo --once` installed them and completed in {:.1?}: {install}",
        started.elapsed()
    );
}
