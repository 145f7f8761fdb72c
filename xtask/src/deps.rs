//! Debian packages the test suite needs, and how to tell if they are installed.

use std::process::{Command, Stdio};

/// Packages `cargo xtask test` needs (installed when missing, as root with apt).
/// (`init-system-helpers`: the package's maintainer scripts call
/// `deb-systemd-invoke`; `procps`: the package test lists processes with `ps`.)
/// apache2, lighttpd and libfcgi-bin are the other FastCGI front ends of the
/// relay tests (`tests/it/relay.rs`).
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
];

/// True when `dpkg-query -W -f='${Status}'` output says the package is installed.
pub fn parse_dpkg_status(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[0] == "install" && words[2] == "installed"
}

/// Is `package` installed? (Asks `dpkg-query`; not installed when it fails.)
pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && parse_dpkg_status(&String::from_utf8_lossy(&out.stdout))
        })
}

/// The packages of [`PACKAGES`] that are not installed.
pub fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect()
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
