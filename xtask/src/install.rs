//! `cargo xtask install [--prefix /usr/local] [--destdir D] [--debug] [--no-build]`:
//! install from source.
//!
//! Builds the release binaries (or takes the debug ones with `--debug`) and
//! installs into `<destdir><prefix>`: `bin/` the binaries, the systemd
//! units (`/lib/systemd/system` for prefix `/usr`, else
//! `<prefix>/lib/systemd/system`, which systemd also reads) with `/usr/bin/`
//! in their `Exec…=` lines rewritten to `<prefix>/bin/`, man pages in
//! `share/man/man1`, shell completions under `share/`. It enables nothing
//! and does not run systemctl; it prints what to run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::dist::{self, Paths};

/// sysexits: usage error.
const EX_USAGE: u8 = 64;

/// Parsed `install` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArgs {
    /// Installation prefix (default `/usr/local`).
    pub prefix: PathBuf,
    /// Staging root prepended to every path (default none).
    pub destdir: Option<PathBuf>,
    /// Install the debug binaries.
    pub debug: bool,
    /// Do not run `cargo build`.
    pub no_build: bool,
}

/// Usage of `cargo xtask install`.
pub const USAGE: &str =
    "usage: cargo xtask install [--prefix DIR] [--destdir DIR] [--debug] [--no-build]
  --prefix DIR   installation prefix (default /usr/local); must be absolute
  --destdir DIR  prepend DIR to every installed path (staging, packaging)
  --debug        install the debug binaries instead of building release ones
  --no-build     do not run cargo build";

/// Parse `install`'s arguments. Pure.
pub fn parse_args(args: &[String]) -> Result<InstallArgs, String> {
    let mut out = InstallArgs {
        prefix: PathBuf::from("/usr/local"),
        destdir: None,
        debug: false,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a directory"))
        };
        match flag {
            "--prefix" => out.prefix = value("--prefix")?,
            "--destdir" => out.destdir = Some(value("--destdir")?),
            "--debug" => out.debug = true,
            "--no-build" => out.no_build = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !out.prefix.is_absolute() {
        return Err(format!(
            "--prefix {}: must be an absolute path",
            out.prefix.display()
        ));
    }
    Ok(out)
}

/// `cargo xtask install …`.
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xtask install: {e}\n\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let dest = args.destdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let paths = Paths::for_prefix(&args.prefix);
    let result = dist::build_binaries(args.debug, args.no_build)
        .and_then(|bin_dir| dist::install_tree(&bin_dir, &dest, &paths, false));
    match result {
        Ok(files) => {
            for f in &files {
                println!("installed {}", dist::under(&dest, f).display());
            }
            if args.destdir.is_none() {
                println!(
                    "\nnext: systemctl daemon-reload; then per site: systemctl enable --now fleet-waker@<site>.socket{}",
                    if Path::new("/run/systemd/system").is_dir() {
                        ""
                    } else {
                        " (systemd is not running here)"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask install: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let d = a(&[]).expect("defaults");
        assert_eq!(d.prefix, Path::new("/usr/local"));
        assert_eq!(d.destdir, None);
        let x = a(&[
            "--prefix",
            "/opt/fleet",
            "--destdir=/tmp/stage",
            "--debug",
            "--no-build",
        ])
        .expect("all");
        assert_eq!(x.prefix, Path::new("/opt/fleet"));
        assert_eq!(x.destdir.as_deref(), Some(Path::new("/tmp/stage")));
        assert!(x.debug && x.no_build);
        assert!(a(&["--prefix", "relative"]).is_err());
        assert!(a(&["--prefix"]).is_err());
        assert!(a(&["--what"]).is_err());
    }
}
