//! `cargo xtask fuzz <target> [--seconds N]`: run one cargo-fuzz target of
//! `fuzz/` (conf, site, listen_env) for N seconds (default 600) with
//! libFuzzer, one process (the machine is shared), and print its final
//! stats. Needs the nightly toolchain and `cargo install cargo-fuzz`.
//! Not part of `cargo xtask test`.

use std::path::Path;

use xtask::Error;
use xtask::error::{Cmd, Stream};

/// The targets in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["conf", "site", "listen_env"];

/// `cargo xtask fuzz` arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct FuzzArgs {
    /// The fuzz target.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: String,
    /// Run for N seconds.
    #[arg(long, value_name = "N", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
}

/// Runs the target; its output goes through to stderr, then libFuzzer's
/// `Done N runs in S second(s)` line and its `stat::…` lines
/// (`-print_final_stats=1`) to stdout. Err on a crash (libFuzzer found an
/// input; it is saved under `fuzz/artifacts/<target>/`).
pub fn run(root: &Path, target: &str, seconds: u64) -> Result<(), Error> {
    let fuzz_dir = root.join("fuzz");
    let max = format!("-max_total_time={seconds}");
    eprintln!("==> cargo +nightly fuzz run {target} -O -- {max} -print_final_stats=1");
    // `cargo` here is rustup's proxy (for +nightly), not $CARGO (stable).
    let (mut done, mut stats) = (None, Vec::new());
    let status = Cmd::new("cargo")
        .args(["+nightly", "fuzz", "run", target, "-O", "--"])
        .arg(&max)
        .arg("-print_final_stats=1")
        .dir(&fuzz_dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .each_line(Stream::Stderr, |line| {
            eprintln!("{line}");
            if line.starts_with("Done ") {
                done = Some(line.to_owned());
            } else if line.starts_with("stat::") {
                stats.push(line.to_owned());
            }
        })
        .map_err(|e| {
            let how = "rustup toolchain install nightly; cargo install cargo-fuzz";
            let why = format!("{} ({how})", xtask::error::chain(&e));
            Error::unavailable("cargo +nightly fuzz", why)
        })?;
    if !status.success() {
        let why = format!("{status}; see fuzz/artifacts/{target}/");
        return Err(Error::failed(format!("target {target}"), why));
    }
    println!("fuzz {target}: {}", done.unwrap_or_default());
    for s in stats {
        println!("  {s}");
    }
    Ok(())
}
