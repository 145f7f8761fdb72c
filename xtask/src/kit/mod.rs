//! The kit: what the integration tests, `xtask bench`, `xtask soak` and
//! `xtask demo` share to set up real sites and run real processes, written
//! once (a test site with its directories and container, the child-process
//! launcher with socket activation).

pub mod process;
pub mod site;

use std::path::PathBuf;

/// A workspace binary of the release profile (`fleet-waker`, …) in cargo's
/// target directory, which honours `CARGO_TARGET_DIR`: what the benches,
/// as shipped, measure.
pub fn release_bin(name: &str) -> PathBuf {
    crate::dist::target_dir().join("release").join(name)
}
