//! `cargo xtask demo` end to end, `--once` and Ctrl-C (real Docker, nginx, php-fpm,
//! systemd-socket-activate, fleet-waker, fleet-reaper), and the packaging
//! commands `cargo xtask dist` / `cargo xtask install` into temp dirs.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use xtask::error::{Cmd, or_panic};

use crate::support::{
    Launch, bin, containers, free_port, note, require, run_ok, temp_dir, wait_until,
};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// `xtask <args>`, run to its end with stdin closed.
fn xtask(args: &[&str]) -> Output {
    or_panic(Cmd::new(bin("xtask")).args(args).output())
}

#[test]
fn demo_once_runs_every_step_and_leaves_nothing_behind() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let port = free_port();
    let mut demo = Launch::new(bin("xtask"))
        .args(["demo", "--once", "--no-build", "--port", &port.to_string()])
        .spawn();
    let pid = demo.pid();
    let status = demo.wait_exit(Duration::from_secs(600));
    let (stdout, stderr) = (demo.stdout(), demo.stderr());
    assert!(
        status.is_some_and(|s| s.success()),
        "xtask demo --once failed ({status:?}):\n{stdout}\n{stderr}"
    );
    // The demo runs the shared package step first (it installs what is
    // missing, as `cargo xtask test` does).
    assert!(
        stderr.starts_with("==> packages:") || stderr.contains("\n==> packages:"),
        "the demo did not run the package step:\n{stderr}"
    );
    let site = format!("demo-{pid}.fleet.test");
    // The kit's temp dir, named in the demo's first line.
    let first = format!("==> fleet demo: site {site}, container {site}.fpm, everything under ");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&first))
        .unwrap_or_else(|| panic!("no demo line naming its directory in:\n{stdout}"))
        .to_owned();
    assert!(
        dir.starts_with(&format!("/tmp/fleet-it-{pid}-demo-")),
        "the demo's directory {dir} is not the kit's"
    );
    for needle in [
        "[setup] image:".to_string(),
        format!("[setup] container {site}.fpm: created, state created"),
        "[setup] fleet-waker: systemd-socket-activate listens on".to_string(),
        format!("[setup] nginx: http://127.0.0.1:{port}/"),
        "step 1/4: first request, the container is created (cold start)".to_string(),
        "step 2/4: second request, the container is running (warm)".to_string(),
        "step 3/4: fleet-reaper".to_string(),
        "the site sleeps".to_string(),
        "step 4/4: third request, the container is exited (wakes again)".to_string(),
        "all four steps done".to_string(),
        format!("removed container {site}.fpm and {dir}"),
        "demo finished".to_string(),
    ] {
        assert!(stdout.contains(&needle), "missing {needle:?} in:\n{stdout}");
    }
    // Both cold starts print every phase with a number.
    for phase in [
        "phase container start:",
        "phase php-fpm accepting:",
        "phase first byte:",
    ] {
        let timed: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains(phase) && l.contains(" ms") && !l.contains("n/a"))
            .collect();
        assert_eq!(timed.len(), 2, "{phase} twice with a time:\n{stdout}");
    }
    assert!(stdout.contains("  warm: "), "{stdout}");
    let body_lines = stdout
        .lines()
        .filter(|l| l.contains(&format!("body: hello from {site} ")))
        .count();
    assert_eq!(body_lines, 3, "three answers from php-fpm:\n{stdout}");

    assert_nothing_left(pid, port, &dir);
    note(&format!(
        "demo output:\n{}",
        stdout
            .lines()
            .filter(|l| l.contains("phase") || l.contains("warm:") || l.contains("all four"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
}

/// Nothing of demo `pid` is left: its container, processes (nginx,
/// waker), its directory with the sockets, the port.
fn assert_nothing_left(pid: u32, port: u16, dir: &str) {
    let left = containers(&format!("label=fleet.test.pid={pid}"));
    assert_eq!(left.trim(), "", "containers left behind");
    assert!(!Path::new(dir).exists(), "{dir} left behind");
    let procs = processes_mentioning(dir);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on 127.0.0.1:{port}"
    );
}

/// The README's promise for the demo that stays up: Ctrl-C (SIGINT)
/// removes everything it made and exits 0.
#[test]
fn demo_ctrl_c_while_serving_removes_everything() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let port = free_port();
    let mut demo = Launch::new(bin("xtask"))
        .args(["demo", "--no-build", "--port", &port.to_string()])
        .spawn();
    let pid = demo.pid();
    let up = wait_until(Duration::from_secs(180), || {
        demo.try_status().is_some() || demo.stdout().lines().any(|l| l.starts_with("Press Ctrl-C"))
    });
    let exited = demo.try_status();
    assert!(
        up && exited.is_none(),
        "the demo never came up ({exited:?}):\n{}",
        demo.logs()
    );
    let stdout = demo.stdout();
    let dir = stdout
        .lines()
        .find_map(|l| Some(l.split_once(", everything under ")?.1.to_owned()))
        .unwrap_or_else(|| panic!("no directory line:\n{stdout}"));
    // Serving: a request is answered.
    let r = crate::support::http::get(port, "/").expect("GET while the demo stays up");
    assert!(
        r.status == 200 && r.text().starts_with("hello from demo-"),
        "{} {:?}",
        r.status,
        r.text()
    );
    demo.kill(nix::sys::signal::Signal::SIGINT);
    let status = demo.wait_exit(Duration::from_secs(60));
    let seen = demo.stdout();
    assert!(
        status.is_some(),
        "the demo did not exit within 60 s of SIGINT"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after Ctrl-C while serving:\n{seen}"
    );
    assert!(
        seen.lines()
            .any(|l| l.starts_with("cleanup: ") && l.contains("removed container")),
        "no cleanup line:\n{seen}"
    );
    assert_nothing_left(pid, port, &dir);
}

#[test]
fn demo_without_root_or_with_a_busy_port_says_what_is_missing() {
    // A port that is taken: the demo must name it and exit 69 before
    // creating anything (works with or without Docker/root).
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let out = xtask(&["demo", "--once", "--no-build", "--port", &port.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("port 127.0.0.1:{port} is not free")),
        "{stderr}"
    );
    let bad = xtask(&["demo", "--port", "nope"]);
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn dist_builds_a_deb_with_binaries_units_man_pages_and_completions() {
    // Needs the debug binaries (`cargo build --workspace`) and dpkg-deb.
    require!(DpkgDeb);
    for b in ["fleet-waker", "fleet-reaper", "fleet-renew"] {
        bin(b);
    }
    let out_dir = temp_dir("dist");
    let out_path = out_dir.path().display().to_string();
    let out = xtask(&["dist", "--debug", "--no-build", "--out", &out_path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "xtask dist failed:\n{stderr}");
    let arch = run_ok("dpkg", &["--print-architecture"]).trim().to_string();
    // The package's version is the changelog's (`<workspace version>-N`).
    let version =
        xtask::dist::changelog_version(xtask::dist::CHANGELOG).expect("changelog version");
    assert!(version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))));
    let deb = out_dir.path().join(format!("fleet_{version}_{arch}.deb"));
    assert!(deb.is_file(), "{} missing:\n{stderr}", deb.display());
    for plain in [
        "bin/fleet-waker",
        "bin/fleet-reaper",
        "bin/fleet-renew",
        "systemd/fleet-waker@.socket",
        "systemd/fleet-waker@.service",
        "man/fleet-waker.1",
        "man/fleet-reaper.1",
        "man/fleet-renew.1",
        "completions/bash/fleet-waker",
        "completions/zsh/_fleet-reaper",
        "completions/fish/fleet-renew.fish",
    ] {
        assert!(out_dir.path().join(plain).is_file(), "{plain} missing");
    }
    let deb_path = deb.to_str().expect("utf-8 path");
    let listing = run_ok("dpkg-deb", &["-c", deb_path]);
    for path in [
        "./usr/bin/fleet-waker",
        "./usr/bin/fleet-reaper",
        "./usr/bin/fleet-renew",
        "./lib/systemd/system/fleet-waker@.socket",
        "./lib/systemd/system/fleet-waker@.service",
        "./usr/share/man/man1/fleet-waker.1.gz",
        "./usr/share/man/man1/fleet-reaper.1.gz",
        "./usr/share/man/man1/fleet-renew.1.gz",
        "./usr/share/bash-completion/completions/fleet-waker",
        "./usr/share/doc/fleet/nginx/fleet-direct-mode.conf",
        "./usr/share/doc/fleet/nginx/fleet-proxy-mode.conf",
        "./usr/share/doc/fleet/copyright",
        "./usr/share/doc/fleet/changelog.Debian.gz",
        "./usr/share/doc/fleet/README.md",
        "./usr/lib/tmpfiles.d/fleet.conf",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{listing}"
        );
    }
    // Owned by root whatever built it (--root-owner-group).
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "{listing}"
    );
    let field = |name: &str| {
        run_ok("dpkg-deb", &["-f", deb_path, name])
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "fleet");
    assert_eq!(field("Version"), version);
    let depends = field("Depends");
    assert!(depends.contains("docker.io | docker-ce"), "{depends}");
    // dpkg-shlibdeps' libc requirement of the binaries.
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    assert!(field("Recommends").contains("nginx"));
    // Every file is in md5sums, with its real sum.
    let control = temp_dir("dist-control");
    let control_path = control.path().to_str().expect("utf-8 path");
    run_ok("dpkg-deb", &["-e", deb_path, control_path]);
    let md5sums = std::fs::read_to_string(control.path().join("md5sums")).expect("md5sums");
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split(" ./").nth(1))
        .collect();
    assert!(!files.is_empty(), "{listing}");
    for f in &files {
        assert!(
            md5sums.lines().any(|l| l.ends_with(&format!("  {f}"))),
            "{f} not in md5sums:\n{md5sums}"
        );
    }
    assert_eq!(md5sums.lines().count(), files.len(), "{md5sums}");
    // The binaries are stripped: no .debug_info, no .symtab.
    let data = temp_dir("dist-data");
    run_ok(
        "dpkg-deb",
        &["-x", deb_path, data.path().to_str().expect("utf-8 path")],
    );
    let waker = data.path().join("usr/bin/fleet-waker");
    let waker = waker.to_str().expect("utf-8 path");
    let sections = run_ok("objdump", &["-h", waker]);
    assert!(sections.contains(".dynsym"), "{sections}");
    assert!(
        !sections.contains(".debug_info"),
        "not stripped:\n{sections}"
    );
    let sum_line = md5sums
        .lines()
        .find(|l| l.ends_with("  usr/bin/fleet-waker"))
        .expect("fleet-waker in md5sums");
    assert!(
        run_ok("md5sum", &[waker]).starts_with(&sum_line[..32]),
        "{sum_line}"
    );
    lintian_tags_are_the_readmes(&deb);
    // The man page renders (man -l reads the file itself). CI installs
    // man-db, so only a developer machine may lack it.
    let has_man = Path::new("/usr/bin/man").exists();
    assert!(has_man || !crate::support::in_ci(), "man missing under CI");
    if has_man {
        let man = Cmd::new("man")
            .arg("-l")
            .arg(out_dir.path().join("man/fleet-reaper.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80");
        let page = or_panic(man.stdout());
        assert!(page.contains("--action"), "{page}");
    }
}

/// lintian on the package reports exactly the tags the README's "From the
/// Debian package" justifies (a new tag fails until it is fixed or
/// justified there; a justified tag that went away fails too, so the README
/// stays true).
fn lintian_tags_are_the_readmes(deb: &Path) {
    if !Path::new("/usr/bin/lintian").exists() {
        assert!(!crate::support::in_ci(), "lintian missing under CI");
        eprintln!("SKIP lintian check: lintian missing (apt-get install lintian)");
        return;
    }
    let lintian = Cmd::new("lintian").args(["--display-info", "--pedantic", "--no-cfg"]);
    let out = or_panic(lintian.arg(deb).output());
    let report = String::from_utf8_lossy(&out.stdout);
    let mut found: Vec<String> = report
        .lines()
        .filter_map(|l| {
            l.strip_prefix(|c| "EWIPX".contains(c))?
                .strip_prefix(": fleet: ")
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    let section = xtask::readme::README
        .split("### From the Debian package")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("README section From the Debian package");
    let mut justified: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- lintian `")?.split('`').next())
        .map(str::to_string)
        .collect();
    justified.sort();
    assert!(
        !justified.is_empty(),
        "no justified lintian tags in:\n{section}"
    );
    assert_eq!(
        found,
        justified,
        "lintian's tags (left) vs the README's justified list (right):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    note(&format!("lintian {}:\n{report}", deb.display()));
}

#[test]
fn install_into_a_destdir_rewrites_unit_paths_to_the_prefix() {
    for b in ["fleet-waker", "fleet-reaper", "fleet-renew"] {
        bin(b);
    }
    let dest = temp_dir("install");
    let install = Cmd::new(bin("xtask"))
        .args(["install", "--prefix", "/opt/fleet", "--debug", "--no-build"])
        .arg("--destdir")
        .arg(dest.path());
    or_panic(install.stdout());
    let root = dest.path().join("opt/fleet");
    for f in [
        "bin/fleet-waker",
        "bin/fleet-reaper",
        "bin/fleet-renew",
        "share/man/man1/fleet-waker.1",
        "share/man/man1/fleet-reaper.1",
        "share/man/man1/fleet-renew.1",
        "share/bash-completion/completions/fleet-reaper",
        "lib/systemd/system/fleet-waker@.socket",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    let service = std::fs::read_to_string(root.join("lib/systemd/system/fleet-waker@.service"))
        .expect("service installed");
    assert!(
        service.contains("\nExecStart=/opt/fleet/bin/fleet-waker %i\n"),
        "{service}"
    );
    assert!(!service.contains("/usr/bin/"), "{service}");
    let waker = root.join("bin/fleet-waker");
    let version = run_ok(waker.to_str().expect("utf-8 path"), &["--version"]);
    let want = format!("fleet-waker {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(version.trim(), want, "the installed waker's version");
}
