//! `cargo xtask install [--prefix /usr/local] [--destdir D] [--debug] [--no-build]`:
//! install from source into `<destdir><prefix>` what the Debian package
//! installs under `/usr` ([`dist::files`]: binaries, units pointing at
//! them, man pages, completions). It enables nothing and does not run
//! systemctl; it prints what to run.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::dist;

/// `cargo xtask install` arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct InstallArgs {
    /// Installation prefix; must be absolute.
    #[arg(long, value_name = "DIR", default_value = "/usr/local", value_parser = absolute)]
    pub prefix: PathBuf,
    /// Prepend DIR to every installed path (staging, packaging).
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
    /// Install the debug binaries instead of building release ones.
    #[arg(long)]
    pub debug: bool,
    /// Do not run cargo build.
    #[arg(long)]
    pub no_build: bool,
}

/// clap value parser: an absolute path.
fn absolute(s: &str) -> Result<PathBuf, Error> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(Error::failed(s, "must be an absolute path"));
    }
    Ok(p)
}

/// `cargo xtask install …`.
pub fn main(args: &InstallArgs) -> Result<(), Error> {
    let dest = args.destdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let bin_dir = dist::build_binaries(args.debug, args.no_build)?;
    let files = dist::files(&bin_dir, &args.prefix, false)?;
    dist::install(&dest, &files)?;
    for (f, _, _) in &files {
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
    Ok(())
}
