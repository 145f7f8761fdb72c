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

use std::path::Path;
use std::time::Instant;

use nix::mount::{MsFlags, mount};
use xtask::error::Cmd;

use crate::support::nsystemd::overlay_options;
use crate::support::{Launch, Spawned, bin, free_port, note, require, temp_dir};

/// The packages the demo needs that the test removes, and their binaries.
const REMOVED: [&str; 2] = ["nginx-light", "php8.2-fpm"];
const BINARIES: [&str; 2] = ["/usr/sbin/nginx", "/usr/sbin/php-fpm8.2"];

/// A mount namespace held open by a `sleep`, and the way into it.
struct Sandbox {
    holder: Spawned,
}

impl Sandbox {
    fn pid(&self) -> String {
        self.holder.pid().to_string()
    }

    /// `argv` run inside the namespace (nsenter enters its mounts only).
    fn cmd(&self, argv: &[&str]) -> Cmd {
        Cmd::new("nsenter")
            .args(["--target", &self.pid(), "--mount", "--"])
            .args(argv)
    }

    fn run(&self, argv: &[&str]) -> String {
        self.cmd(argv)
            .stdout()
            .unwrap_or_else(|e| panic!("{}", xtask::error::chain(&e)))
    }

    fn installed(&self, package: &str) -> bool {
        self.cmd(&["dpkg-query", "-W", "-f=${Status}", package])
            .stdout()
            .is_ok_and(|s| xtask::deps::parse_dpkg_status(&s))
    }
}

fn host_installed(package: &str) -> bool {
    xtask::deps::is_installed(package)
}

#[test]
fn demo_on_a_machine_without_nginx_and_php_fpm_installs_them_and_completes() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let upper = temp_dir("first-run-overlay");
    // A short name: the demo's socket paths below it must fit sun_path.
    let shared = temp_dir("fr");
    let shared_path = shared.path();
    // The sites' base is its own mount, shared: what the demo mounts below it
    // inside the namespace propagates to this (Docker's) namespace.
    mount(
        Some(shared_path),
        shared_path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind the sites' base onto itself");
    mount(
        None::<&str>,
        shared_path,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("make the sites' base shared");
    let _unmount = Unmount(shared_path);

    let sandbox = Sandbox {
        holder: Launch::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "unchanged",
                "--",
                "sleep",
                "infinity",
            ])
            .spawn(),
    };
    // The root mount private in the namespace (a host where it is shared
    // would otherwise see the overlays); the sites' base stays shared.
    sandbox.run(&["mount", "--make-private", "/"]);
    for dir in ["usr", "etc", "var"] {
        let options = overlay_options(&Path::new("/").join(dir), &upper.path().join(dir));
        sandbox.run(&[
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            &options,
            &format!("/{dir}"),
        ]);
    }
    // No service may start or stop while packages come and go (as in a
    // build chroot): the host's php-fpm and nginx are not the sandbox's.
    let policy = format!("/proc/{}/root/usr/sbin/policy-rc.d", sandbox.pid());
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").expect("write policy-rc.d");
    sandbox.run(&["chmod", "0755", "/usr/sbin/policy-rc.d"]);

    let removed = sandbox
        .cmd(&["apt-get", "remove", "-y", "nginx"])
        .args(REMOVED)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get remove");
    assert!(
        removed.status.success(),
        "apt-get remove in the sandbox: {}",
        crate::support::assert::output_text(&removed)
    );
    for package in REMOVED {
        assert!(
            !sandbox.installed(package),
            "{package} still installed in the sandbox"
        );
        assert!(host_installed(package), "{package} must stay on the host");
    }
    let in_sandbox = |path: &str| format!("/proc/{}/root{path}", sandbox.pid());
    for binary in BINARIES {
        assert!(
            !Path::new(&in_sandbox(binary)).exists(),
            "{binary} is still there after the removal"
        );
        assert!(Path::new(binary).exists(), "{binary} must stay on the host");
    }

    let port = free_port();
    let started = Instant::now();
    let out = sandbox
        .cmd(&[bin("xtask").to_str().expect("utf-8 path")])
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
    for binary in BINARIES {
        assert!(Path::new(&in_sandbox(binary)).exists(), "{binary} not back");
    }
    for package in REMOVED {
        assert!(
            sandbox.installed(package),
            "{package} not installed in the sandbox"
        );
        assert!(
            host_installed(package),
            "{package} must still be on the host"
        );
    }
    note(&format!(
        "removed {REMOVED:?}, then `xtask demo --once` installed them and completed in {:.1?}: {install}",
        started.elapsed()
    ));
}

/// Unmounts the shared base (and anything left below it) when the test ends.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        xtask::kit::site::umount_under(self.0);
    }
}
