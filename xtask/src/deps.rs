//! Debian packages the test suite needs, and how to tell if they are installed.

use std::path::Path;

use std::time::Instant;

use crate::Error;

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
    crate::error::run("dpkg-query", &["-W", "-f=${Status}", package])
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
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!("==> packages: missing {}", missing.join(" "));
        return Err(Error::unavailable(
            "packages",
            format!(
                "missing {}; install them with:\n    sudo apt-get install -y --no-install-recommends {}",
                missing.join(" "),
                missing.join(" ")
            ),
        ));
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
        return Err(Error::unavailable(
            "packages",
            format!("still missing after apt-get install: {}", still.join(" ")),
        ));
    }
    eprintln!(
        "==> packages: installed {} in {:.1}s",
        missing.join(" "),
        start.elapsed().as_secs_f64()
    );
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
}
