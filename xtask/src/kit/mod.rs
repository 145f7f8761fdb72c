//! The kit: what the integration tests, `xtask bench`, `xtask soak` and
//! `xtask demo` share to set up real sites and run real processes, written
//! once (a test site with its directories and container, the child-process
//! launcher with socket activation).

pub mod process;
pub mod site;

use std::path::Path;

/// Prefix of every temp dir the kit makes in /tmp (and /run): the sweep of
/// leftovers of dead runs goes by it and the pid that follows.
pub const TEMP_PREFIX: &str = "fleet-it-";

/// A new temp dir `/tmp/fleet-it-<pid>-<kind>-XXXXXX`, mode 0755 (nginx
/// workers and containers must traverse it). Removed on drop; if the process
/// dies without dropping it, the leftover sweep of a later run removes it
/// (the pid in the name is gone).
pub fn temp_dir(kind: &str) -> std::io::Result<tempfile::TempDir> {
    temp_dir_in(Path::new("/tmp"), kind)
}

/// Like [`temp_dir`], in `base` (`/tmp` or `/run`, which the sweep also
/// covers).
pub fn temp_dir_in(base: &Path, kind: &str) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-{kind}-", std::process::id()))
        .tempdir_in(base)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}
