//! The kit: what the integration tests, `xtask bench`, `xtask soak` and
//! `xtask demo` share to set up real sites and run real processes, written
//! once (a test site with its directories and container, the child-process
//! launcher with socket activation, the HTTP client).

pub mod fastcgi;
pub mod http;
pub mod nginx;
pub mod process;
pub mod reaper;
pub mod site;

use std::path::PathBuf;

use crate::Error;

/// The directory cargo built the running program into, `<target>/<profile>`
/// (a test binary sits one below, in `deps/`). Read from the program's own
/// path, so it is cargo's target directory as it really is,
/// `CARGO_TARGET_DIR` or `build.target-dir` included.
pub fn profile_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::failed("path of this program", e))?;
    let dir = exe.parent().ok_or_else(|| {
        Error::failed(
            "path of this program",
            format!("{} has no directory", exe.display()),
        )
    })?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// True under CI (`CI=true`): what a developer's machine may skip with a
/// reason (a missing tool, no root) must fail there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The workspace root (xtask's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: the parent of [`profile_dir`]; failing that,
/// `CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .ok()
        .and_then(|dir| dir.parent().map(PathBuf::from))
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("target"))
}

/// A workspace binary of the release profile (`fleet-waker`, …) in cargo's
/// [`target_dir`]: what the benches, as shipped, measure.
pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_is_where_cargo_put_this_test() {
        let profile = profile_dir().expect("profile dir of this test");
        assert!(profile.join("deps").is_dir(), "{}", profile.display());
        assert_eq!(Some(target_dir().as_path()), profile.parent());
        if let Some(env) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
            && env.is_absolute()
        {
            assert_eq!(target_dir(), env);
        }
    }
}
