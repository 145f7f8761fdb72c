//! Debian packages the test suite needs, and how to tell if they are installed;
//! the prerequisites the demo and the integration tests check, each with
//! what to install.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use crate::Error;
use crate::error::chain;
use crate::kit::nginx::{FASTCGI_PARAMS, NGINX};
use crate::kit::process::find_in_path;

/// `Ok(())` when every one of `files` exists and every one of `programs` is
/// on `PATH`; else which are missing and the package that brings them.
pub fn need(files: &[&str], programs: &[&str], package: &str) -> Result<(), String> {
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !Path::new(f).exists())
        .map(|f| f.to_string())
        .chain(
            programs
                .iter()
                .filter(|p| find_in_path(p).is_none())
                .map(|p| format!("{p} on PATH")),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let missing = missing.join(", ");
    Err(format!("{missing} missing (apt-get install {package})"))
}

/// What the demo and most integration tests need of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prerequisite {
    /// Running as root (euid 0): containers, nginx, sockets to chown.
    Root,
    /// A working Docker engine (`docker info` succeeds).
    Docker,
    /// nginx and the `fastcgi_params` the shipped snippets include.
    Nginx,
    /// The host's php-fpm, from which the php-fpm image is built.
    PhpFpm,
    /// `systemd-socket-activate` on `PATH`.
    SocketActivate,
}

impl Prerequisite {
    /// Every prerequisite (what the demo needs).
    pub const ALL: [Prerequisite; 5] = [
        Prerequisite::Root,
        Prerequisite::Docker,
        Prerequisite::Nginx,
        Prerequisite::PhpFpm,
        Prerequisite::SocketActivate,
    ];

    /// `Ok(())` when present, else why not and how to get it. Docker is
    /// asked once per process.
    pub fn check(self) -> Result<(), String> {
        match self {
            Prerequisite::Root if nix::unistd::geteuid().is_root() => Ok(()),
            Prerequisite::Root => {
                Err("not root (run it as root: it starts containers and nginx)".to_string())
            }
            Prerequisite::Docker => docker_version().map(drop),
            Prerequisite::Nginx => need(&[NGINX, FASTCGI_PARAMS], &[], "nginx-light"),
            Prerequisite::PhpFpm => need(&[crate::image::PHP_FPM], &[], "php8.2-fpm"),
            Prerequisite::SocketActivate => need(&[], &["systemd-socket-activate"], "systemd"),
        }
    }
}

/// The Docker engine's version, or why it did not answer (asked once per
/// process).
pub fn docker_version() -> Result<String, String> {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            let info = crate::error::run("docker", &["info", "--format", "{{.ServerVersion}}"]);
            let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into());
            let hint = format!("is the Docker engine running, and DOCKER_HOST ({host}) right?");
            let why = |e: Error| format!("{} ({hint} else apt-get install docker.io)", chain(&e));
            info.map(|v| v.trim().to_owned()).map_err(why)
        })
        .clone()
}

/// Packages `cargo xtask test` needs (installed when missing, as root with apt).
/// (`init-system-helpers`: the package's maintainer scripts call
/// `deb-systemd-invoke`; `procps`: the package test lists processes with `ps`.)
/// apache2, lighttpd and libfcgi-bin are the other FastCGI front ends of the
/// relay tests (`tests/it/relay.rs`). `cargo xtask dist` needs dpkg-dev
/// (`dpkg-shlibdeps`) and binutils (`strip`); lintian checks the package
/// (`tests/it/demo.rs`).
pub const PACKAGES: &[&str] = &[
    "php8.2-fpm",
    "nginx-light",
    "wrk",
    "systemd",
    "man-db",
    "init-system-helpers",
    "procps",
    "apache2",
    "lighttpd",
    "libfcgi-bin",
    "dpkg-dev",
    "binutils",
    "lintian",
];

/// True when `dpkg-query -W -f='${Status}'` output says the package is installed.
pub fn parse_dpkg_status(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[0] == "install" && words[2] == "installed"
}

/// Is `package` installed? (Asks `dpkg-query`; not installed when it fails.)
pub fn is_installed(package: &str) -> bool {
    is_installed_in(Path::new("/var/lib/dpkg"), package)
}

/// [`is_installed`] in the dpkg database at `admindir` (another root's).
pub fn is_installed_in(admindir: &Path, package: &str) -> bool {
    crate::error::Cmd::new("dpkg-query")
        .arg("--admindir")
        .arg(admindir)
        .args(["-W", "-f=${Status}", package])
        .stdout()
        .is_ok_and(|status| parse_dpkg_status(&status))
}

/// The packages of [`PACKAGES`] that are not installed.
pub fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect()
}

/// The one package step of `cargo xtask test` and `cargo xtask demo`: as
/// root with apt, install what [`PACKAGES`] lists and is missing; otherwise
/// name what to install ([`Error::Unavailable`]).
pub fn ensure_packages() -> Result<(), Error> {
    let start = Instant::now();
    let missing = missing();
    if missing.is_empty() {
        eprintln!(
            "==> packages: {} installed ({:.1}s)",
            PACKAGES.join(" "),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let list = missing.join(" ");
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!("==> packages: missing {list}");
        let how = "install them with:\n    sudo apt-get install -y --no-install-recommends";
        let why = format!("missing {list}; {how} {list}");
        return Err(Error::unavailable("packages", why));
    }
    let apt = |args: &[&str]| -> Result<(), Error> {
        eprintln!("==> apt-get {}", args.join(" "));
        crate::error::Cmd::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    apt(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)?;
    let still = self::missing();
    if !still.is_empty() {
        let why = format!("still missing after apt-get install: {}", still.join(" "));
        return Err(Error::unavailable("packages", why));
    }
    let took = start.elapsed().as_secs_f64();
    eprintln!("==> packages: installed {list} in {took:.1}s");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_is_parsed() {
        assert!(parse_dpkg_status("install ok installed"));
        assert!(!parse_dpkg_status("unknown ok not-installed"));
        assert!(!parse_dpkg_status("deinstall ok config-files"));
        assert!(!parse_dpkg_status("install ok half-configured"));
        assert!(!parse_dpkg_status(""));
    }

    #[test]
    fn need_names_what_is_missing_and_its_package() {
        assert_eq!(need(&["/"], &["sh"], "x"), Ok(()));
        assert_eq!(
            need(&["/", "/nonexistent/a"], &["sh", "no-such-tool-b"], "pkg"),
            Err("/nonexistent/a, no-such-tool-b on PATH missing (apt-get install pkg)".to_string())
        );
    }
}
