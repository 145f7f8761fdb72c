//! The Debian package's whole life under a real systemd (PID 1 in private
//! namespaces): install, the README's site setup as written, PHP's answer
//! through nginx, an upgrade with the site awake and a request in flight,
//! remove, purge, and nothing of it left.
//!
//! The namespace gets copy-on-write layers over `/usr`, `/etc` and `/var`
//! ([`NsSystemd::boot_private`]): dpkg, systemctl
//! enable and the README's commands write there, never to the host.
//! `/usr/sbin/policy-rc.d` is removed inside it: this machine is a Docker
//! build image whose policy forbids starting services, which a real host
//! does not have (the maintainer scripts honour it through
//! `deb-systemd-invoke`).
//!
//! The Docker daemon runs outside the namespace and resolves `docker create
//! -v` sources in the host's mounts, so the README's `docker` calls go
//! through a shim that translates the namespace's `/run/docker-apps` and
//! `/srv/www/<site>` to the host directories bound there, stands the test
//! image in for `my-php-fpm-image`, and labels the container for the
//! harness's leftover cleanup. nginx runs on the host with the README's
//! proxy-mode file, the runtime directory translated the same way.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use xtask::dist::{self, DistArgs};
use xtask::readme::{README, REAPER_TIMER, SITE_SETUP, block, file};

use crate::readme::{WHERE_PHP, render};
use crate::support::assert::output_text;
use crate::support::nsystemd::{Bind, NsSystemd};
use crate::support::wake::open_at;
use crate::support::{
    Nginx, TestSite, docker_ok, find_in_path, http, note, require, temp_dir, wait_until,
};

/// Where the test's own files (the .debs, the docker shim) appear inside.
const SHIM: &str = "/run/fleet-test-shim";

/// The text of `out`, the output of `what` in the namespace; panics with
/// it and systemd's log if `what` failed.
fn ok_text(ns: &NsSystemd, out: Output, what: &str) -> String {
    let t = output_text(&out);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{t}\nsystemd:\n{}",
        out.status,
        ns.log_text()
    );
    t
}

/// Runs `program args` in the namespace; panics with its output on failure.
fn run_ok(ns: &NsSystemd, program: &str, args: &[&str]) -> String {
    ok_text(ns, ns.run(program, args), &format!("{program} {args:?}"))
}

/// A README shell block, run as written (`example.com` → the test site)
/// by `sh -eu` in the namespace, with the docker shim first on PATH.
fn run_readme_block(ns: &NsSystemd, name: &str, site: &str) -> String {
    let script = block(README, name)
        .expect("the README block")
        .replace("example.com", site);
    let out = ns
        .command("sh")
        .args(["-euc", &script])
        .env(
            "PATH",
            format!("{SHIM}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .output()
        .expect("run sh in the namespace");
    let t = ok_text(ns, out, &format!("README block {name}:\n{script}\n---\n"));
    note!("README block {name}:\n{script}---\n{t}");
    t
}

/// The `docker` the README's commands call inside the namespace.
fn docker_shim(site: &TestSite, real_docker: &Path) -> String {
    format!(
        r#"#!/bin/sh
# Test shim: the daemon resolves -v sources in the host's mounts, so the
# namespace's paths become the host directories bound there.
run_dir='{run}'
docroot='{www}'
site='{site}'
first=1
for a in "$@"; do
    if [ "$first" = 1 ]; then set --; first=0; fi
    case "$a" in
    /run/docker-apps/*) a="$run_dir/${{a#/run/docker-apps/}}" ;;
    "/srv/www/$site:"*) a="$docroot:${{a#"/srv/www/$site:"}}" ;;
    my-php-fpm-image) a='{image}' ;;
    esac
    set -- "$@" "$a"
done
if [ "$1" = create ]; then
    shift
    set -- create --label fleet.test=1 --label fleet.test.pid={pid} --network none \
        -e FLEET_SITE="$site" "$@"
fi
exec '{docker}' "$@"
"#,
        run = site.layout().run_dir.display(),
        www = site.docroot().display(),
        site = site.name(),
        image = site.image(),
        pid = std::process::id(),
        docker = real_docker.display(),
    )
}

/// Builds the package from the debug binaries under test, as `version`.
fn build_deb(out: &Path, version: Option<String>) -> PathBuf {
    dist::dist(&DistArgs {
        debug: true,
        no_build: true,
        out: Some(out.to_path_buf()),
        verify: false,
        version,
    })
    .unwrap_or_else(|e| panic!("cargo xtask dist --debug --no-build: {e}"))
}

/// fleet processes in the namespace, as `pid comm` lines.
fn fleet_processes(ns: &NsSystemd) -> Vec<String> {
    let ps = run_ok(ns, "ps", &["-eo", "pid=,comm="]);
    ps.lines()
        .filter(|l| l.contains("fleet-"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Everything under `/etc/systemd/system` (inside) whose name mentions fleet.
fn fleet_links(ns: &NsSystemd) -> Vec<String> {
    run_ok(ns, "find", &["/etc/systemd/system", "-name", "*fleet*"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn package_install_readme_setup_upgrade_in_flight_remove_purge() {
    require!(Docker, PhpFpm, Nginx, Root, Systemd);
    let site = TestSite::new();
    let name = site.name().to_owned();
    // The README's `docker create` makes the container: the harness's one goes.
    docker_ok(&["rm", "-f", site.container()]);
    std::fs::write(site.docroot().join("where.php"), WHERE_PHP).expect("write where.php");

    let shim = temp_dir("shim");
    let old_deb = build_deb(&shim.path().join("old"), None);
    let new_version = format!("{}+upgrade1", dist::VERSION);
    let new_deb = build_deb(&shim.path().join("new"), Some(new_version.clone()));
    let inside = |deb: &Path| {
        format!(
            "{SHIM}/{}",
            deb.strip_prefix(shim.path()).expect("under shim").display()
        )
    };
    let real_docker = find_in_path("docker").expect("docker on PATH");
    std::fs::create_dir(shim.path().join("bin")).expect("shim bin");
    let shim_docker = shim.path().join("bin/docker");
    std::fs::write(&shim_docker, docker_shim(&site, &real_docker)).expect("write shim");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&shim_docker, std::fs::Permissions::from_mode(0o755))
        .expect("chmod shim");

    let ns = NsSystemd::boot_private(
        &[
            Bind::new("/run/docker.sock", "/run/docker.sock"),
            Bind::new(&site.layout().run_dir, "/run/docker-apps"),
            Bind::new(shim.path(), SHIM),
        ],
        &[Path::new("/usr")],
    );
    if ns.path(Path::new("/usr/sbin/policy-rc.d")).exists() {
        run_ok(&ns, "rm", &["/usr/sbin/policy-rc.d"]);
    }
    let status = ns.run("dpkg-query", &["-W", "-f=${Status}", "fleet"]);
    assert!(
        !output_text(&status).contains(" installed"),
        "a fleet package is installed on this host; the test installs its own: {}",
        output_text(&status)
    );

    // 1. Install.
    let out = run_ok(&ns, "dpkg", &["-i", &inside(&old_deb)]);
    note!("dpkg -i:\n{out}");
    let files: Vec<String> = run_ok(&ns, "dpkg", &["-L", "fleet"])
        .lines()
        .filter(|p| ns.path(Path::new(p)).is_file())
        .map(str::to_string)
        .collect();
    assert!(
        files.iter().any(|f| f == "/usr/bin/fleet-waker"),
        "{files:?}"
    );
    assert!(fleet_processes(&ns).is_empty(), "install starts nothing");

    // 2. The README's site setup and the reaper's timer, as written.
    run_readme_block(&ns, SITE_SETUP, &name);
    let dry_run = run_readme_block(&ns, REAPER_TIMER, &name);
    assert!(
        dry_run.contains(&name),
        "the dry run lists the site:\n{dry_run}"
    );
    let socket_unit = format!("fleet-waker@{name}.socket");
    let service = format!("fleet-waker@{name}.service");
    assert_eq!(ns.show(&socket_unit, "ActiveState"), "active");
    assert_eq!(ns.show("fleet-reaper.timer", "ActiveState"), "active");

    // 3. nginx (on the host) with the README's proxy-mode file: PHP answers
    // from the docroot the README's docker create mounted.
    let conf = file(README, "contrib/nginx/fleet-proxy-mode.conf").expect("README file");
    let nginx = Nginx::start_site_files(1, |p| vec![render(&conf, "example.com", &site, p[0])]);
    let port = nginx.port();
    let where_line = format!("/srv/www/{name}/where.php\n");
    let r = http::get(port, "/where.php").expect("GET through nginx");
    assert_eq!(
        (r.status, r.text()),
        (200, where_line.clone()),
        "nginx:\n{}\nsystemd:\n{}",
        nginx.error_log(),
        ns.log_text()
    );
    assert_eq!(ns.show(&service, "ActiveState"), "active");
    let old_pid = ns.show(&service, "MainPID");

    // 4. Upgrade with the site awake and a request in flight; its runtime
    // tmpfs made as an older fleet made it (symlinks followed) gets
    // nosymfollow from the postinst.
    let run_dir = format!("/run/docker-apps/{name}");
    let options = || run_ok(&ns, "findmnt", &["-n", "-o", "VFS-OPTIONS", &run_dir]);
    assert!(options().contains("nosymfollow"), "{}", options());
    run_ok(&ns, "mount", &["-o", "remount,bind,symfollow", &run_dir]);
    assert!(!options().contains("nosymfollow"), "{}", options());
    let in_flight = std::thread::spawn(move || http::get(port, "/sleep.php?s=3"));
    let state = ns.path(&PathBuf::from(format!("/run/fleet/{name}.state")));
    assert!(
        wait_until(Duration::from_secs(10), || open_at(&state) >= 1),
        "the slow request never reached the waker"
    );
    let out = run_ok(&ns, "dpkg", &["-i", &inside(&new_deb)]);
    note!("dpkg -i (upgrade):\n{out}");
    let r = in_flight
        .join()
        .expect("request thread")
        .expect("the in-flight request is answered");
    assert_eq!(
        (r.status, r.text()),
        (200, "slept 3\n".to_string()),
        "the request in flight during the upgrade"
    );
    let version = run_ok(&ns, "dpkg-query", &["-W", "-f=${Version}", "fleet"]);
    assert_eq!(version.trim(), new_version);
    assert!(options().contains("nosymfollow"), "{}", options());
    let new_pid = ns.show(&service, "MainPID");
    assert_ne!(new_pid, old_pid, "the waker was restarted");
    assert_ne!(new_pid, "0", "the new waker runs");
    let exe = run_ok(&ns, "readlink", &[&format!("/proc/{new_pid}/exe")]);
    assert_eq!(
        exe.trim(),
        "/usr/bin/fleet-waker",
        "not the replaced binary"
    );
    let r = http::get(port, "/where.php").expect("GET after the upgrade");
    assert_eq!((r.status, r.text()), (200, where_line));
    note!(
        "upgrade: waker {old_pid} -> {new_pid} ({}), the in-flight request answered",
        exe.trim()
    );

    // 5. Remove: nothing of fleet runs; what the admin enabled is listed and kept.
    let out = run_ok(&ns, "dpkg", &["-r", "fleet"]);
    note!("dpkg -r:\n{out}");
    assert!(
        out.contains(&socket_unit) && out.contains("fleet-reaper.timer"),
        "{out}"
    );
    assert_eq!(fleet_processes(&ns), Vec::<String>::new());
    for unit in [&socket_unit, &service, "fleet-reaper.timer"] {
        assert_eq!(ns.show(unit, "ActiveState"), "inactive", "{unit}");
    }
    assert!(
        !site.waker_socket().exists(),
        "the socket unit is stopped, its socket removed"
    );
    assert!(fleet_links(&ns).iter().any(|l| l.ends_with(&socket_unit)));

    // 6. Purge: no unit, link, file or process is left.
    let out = run_ok(&ns, "dpkg", &["--purge", "fleet"]);
    note!("dpkg --purge:\n{out}");
    let status = ns.run("dpkg-query", &["-W", "-f=${Status}", "fleet"]);
    assert!(
        !status.status.success() || output_text(&status).contains("not-installed"),
        "dpkg still knows fleet: {}",
        output_text(&status)
    );
    assert_eq!(fleet_links(&ns), Vec::<String>::new());
    // (fleet-test.target is the namespace's own boot target.)
    let patterns = ["fleet-waker*", "fleet-reaper*"];
    let units = ns.systemctl_ok(
        &[
            &["list-units", "--all", "--plain", "--no-legend"][..],
            &patterns,
        ]
        .concat(),
    );
    assert!(units.trim().is_empty(), "units left:\n{units}");
    // list-unit-files exits 1 when nothing matches: its output is the check.
    let unit_files =
        output_text(&ns.systemctl(&[&["list-unit-files", "--no-legend"][..], &patterns].concat()));
    assert!(
        unit_files.trim().is_empty(),
        "unit files left:\n{unit_files}"
    );
    let left: Vec<&String> = files
        .iter()
        .filter(|f| std::fs::symlink_metadata(ns.path(Path::new(f))).is_ok())
        .collect();
    assert!(left.is_empty(), "files left: {left:?}");
    assert!(
        !ns.path(Path::new("/run/fleet")).exists(),
        "/run/fleet left"
    );
    assert_eq!(fleet_processes(&ns), Vec::<String>::new());
    note!(
        "purged: none of its {} files, no unit, link or process left",
        files.len()
    );
}
