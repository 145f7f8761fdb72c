//! The kit: what the integration tests, `xtask bench`, `xtask soak` and
//! `xtask demo` share to set up real sites and run real processes, written
//! once: a test site with its directories and container ([`site`]), the
//! child-process launcher with socket activation ([`process`]), nginx from
//! the shipped snippets ([`nginx`]), fleet-reaper runs ([`reaper`]), the
//! HTTP and FastCGI clients ([`http`], [`fastcgi`]), and where cargo and
//! its builds are.

pub mod fastcgi;
pub mod http;
pub mod nginx;
pub mod process;
pub mod reaper;
pub mod site;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::Cmd;

/// The directory cargo built the running program into, `<target>/<profile>`
/// (a test binary sits one below, in `deps/`). Read from the program's own
/// path, so it is cargo's target directory as it really is,
/// `CARGO_TARGET_DIR` or `build.target-dir` included.
pub fn profile_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::failed("path of this program", e))?;
    let deps = exe.parent().is_some_and(|d| d.ends_with("deps"));
    let dir = exe
        .ancestors()
        .nth(if deps { 2 } else { 1 })
        .unwrap_or(&exe);
    Ok(dir.to_path_buf())
}

/// True under CI (`CI=true`): what a developer's machine may skip with a
/// reason (a missing tool, no root) must fail there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The workspace root (xtask's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo that runs us (`$CARGO`), else the one on `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// `cargo build --quiet --profile <profile> -p <package>…` in the
/// repository: the command line printed first, then only cargo's warnings
/// and errors; returns nothing but how it went.
pub fn build(profile: &str, packages: &[&str]) -> Result<(), Error> {
    let mut args = vec!["build", "--quiet", "--profile", profile];
    args.extend(packages.iter().flat_map(|p| ["-p", p]));
    let cmd = Cmd::new(cargo()).args(&args).dir(repo_root());
    eprintln!("==> {}", cmd.line());
    cmd.status()
}

/// `mkdir -p` of `dir`, each directory it creates mode 0755 whatever the
/// umask (nginx workers and containers must traverse what the kit makes; a
/// staged package's directories are 0755). Directories that exist are left
/// as they are: `cargo xtask install` must not chmod `/usr/local/bin`.
pub fn mkdir(dir: &Path) -> Result<(), Error> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .collect();
    for d in missing.into_iter().rev() {
        std::fs::create_dir(d).map_err(Error::io("mkdir", d))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("chmod", d))?;
    }
    if !dir.is_dir() {
        return Err(Error::failed(
            dir.display().to_string(),
            "is not a directory",
        ));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::failed("a free port on 127.0.0.1", e))
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
    fn mkdir_makes_new_dirs_0755_and_leaves_existing_ones_alone() {
        let tmp = site::temp_dir("mkdir-test");
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).expect("mkdir old");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
        let new = old.join("a/b");
        mkdir(&new).expect("mkdir -p");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(
            [mode(&old), mode(&old.join("a")), mode(&new)],
            [0o2775, 0o755, 0o755]
        );
        mkdir(&new).expect("again");
        let file = old.join("f");
        std::fs::write(&file, "").expect("write");
        assert!(mkdir(&file).is_err(), "a file is not a directory");
    }

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
