//! A site's runtime directory as a small tmpfs of its own.
//!
//! `/run/docker-apps/<site>` is bind-mounted read-write into the site's
//! container. On the host's `/run` tmpfs, a tenant could fill it, and with it
//! the `/run` that Docker, containerd, systemd and every state file live on.
//! Mounted as its own tmpfs with a size and inode limit, a full directory
//! hurts only that site (php-fpm needs one inode for its socket).
//!
//! The tmpfs is mounted `nosymfollow`: nginx connects to the sockets here by
//! path, and `connect(2)` follows a symlink, so a symlink the container puts
//! at `php-fpm.sock` or `vhost-waker.sock` would send the site's requests to
//! any socket nginx can reach (another site's php-fpm, the host's own). On
//! this mount no symlink is followed; fleet's own binaries never follow one
//! anyway ([`crate::upstream`]).
//!
//! [`prepare`] is idempotent and never mounts over a directory something
//! still uses: a tmpfs mounted under a running container would hide its
//! php-fpm socket from the host (the container keeps the old directory), so
//! a directory holding anything but dead sockets is left as it is and
//! reported. The socket unit runs it before binding (`fleet-renew
//! --mount-only`), and `fleet-renew` runs it once the container is stopped.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::site::{Layout, Site};
use crate::upstream::{self, Liveness};

/// The mount source of a site's runtime tmpfs (how a sweep of dead test
/// runs tells these mounts from others in `/proc/self/mountinfo`).
pub const MOUNT_SOURCE: &str = "fleet-rundir";
/// The per-mount flag that makes path lookups refuse (`ELOOP`) every symlink
/// on the mount (Linux 5.10); `nix` does not name it.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
/// Default size of a runtime directory's tmpfs.
const DEFAULT_SIZE: u64 = 1024 * 1024;
/// Default number of inodes (files, directories, sockets) in it.
pub const DEFAULT_INODES: u64 = 1024;

/// Limits of one runtime directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub size: u64,
    pub inodes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            size: DEFAULT_SIZE,
            inodes: DEFAULT_INODES,
        }
    }
}

impl Limits {
    /// The tmpfs mount options.
    pub fn options(&self) -> String {
        format!(
            "size={},nr_inodes={},mode=0755",
            self.size.max(4096),
            self.inodes.max(2)
        )
    }
}

/// Parses a size such as `1048576`, `512K`, `1M` or `2G` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size (e.g. 1048576, 512K, 1M, 2G)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 1048576, 512K, 1M, 2G)"))
}

/// What [`prepare`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A tmpfs with the limits was mounted on the directory.
    Mounted,
    /// The directory is a mount point already (ours, or the admin's own);
    /// `true` when it was remounted `nosymfollow` just now (a mount made
    /// before fleet set the flag).
    AlreadyMounted(bool),
    /// The directory holds something in use or not ours to hide (named);
    /// nothing was mounted.
    InUse(Vec<String>),
}

/// Why a runtime directory could not be prepared. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("cannot create runtime directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory (a symlink or file there is not followed)")]
    NotDirectory { path: PathBuf },
    #[error("cannot mount {what} on {path}")]
    Mount {
        path: PathBuf,
        /// What was to be mounted, and how.
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Makes `<run_dir>/<site>` a tmpfs with `limits`, creating the directory
/// (and `run_dir`, mode 0750, when missing) as needed.
pub fn prepare(layout: &Layout, site: &Site, limits: Limits) -> Result<Prepared, RunDirError> {
    let root = &layout.run_dir;
    let dir = layout.site_dir(site);
    if !root.exists() {
        // 0750: only root and the web server's group (set by the admin or
        // tmpfiles.d) may reach the sockets below.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(root)
            .map_err(|source| RunDirError::Create {
                path: root.clone(),
                source,
            })?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(RunDirError::Create { path: dir, source }),
    }
    let inspect = |p: &Path| {
        std::fs::symlink_metadata(p).map_err(|source| RunDirError::Inspect {
            path: p.to_owned(),
            source,
        })
    };
    let meta = inspect(&dir)?;
    if !meta.file_type().is_dir() {
        return Err(RunDirError::NotDirectory { path: dir });
    }
    if meta.dev() != inspect(root)?.dev() {
        return forbid_symlinks(&dir).map(Prepared::AlreadyMounted);
    }
    let in_use = in_use(&dir)?;
    if !in_use.is_empty() {
        return Ok(Prepared::InUse(in_use));
    }
    let options = limits.options();
    nix::mount::mount(
        Some(MOUNT_SOURCE),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MS_NOSYMFOLLOW,
        Some(options.as_str()),
    )
    .map_err(|e| RunDirError::Mount {
        path: dir,
        what: format!("a tmpfs ({options}, nosymfollow)"),
        source: e.into(),
    })?;
    Ok(Prepared::Mounted)
}

/// For a directory [`prepare`] found in use: binds it onto itself, unless a
/// mount is there already, and makes that mount `nosymfollow`. Nothing is
/// hidden (the bind shows the same entries, and the container keeps its own
/// mount), yet nginx follows no symlink in it until a tmpfs replaces it.
/// Whether it changed anything.
pub fn forbid_symlinks_in_place(layout: &Layout, site: &Site) -> Result<bool, RunDirError> {
    let dir = layout.site_dir(site);
    let inspect = |source: io::Error| RunDirError::Inspect {
        path: dir.clone(),
        source,
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(inspect)?;
    // mountinfo names the canonical path (the run directory may be given
    // through /var/run); the directory's parents are the host's own.
    let point = std::fs::canonicalize(&dir).map_err(inspect)?;
    if mount_options(&mountinfo, &point).is_none() {
        let flags = MsFlags::MS_BIND;
        nix::mount::mount(Some(&dir), &dir, None::<&str>, flags, None::<&str>).map_err(|e| {
            RunDirError::Mount {
                path: dir.clone(),
                what: "the directory (bind) onto itself; nosymfollow next".into(),
                source: e.into(),
            }
        })?;
    }
    forbid_symlinks(&dir)
}

/// Makes the mount at `dir` `nosymfollow` when it is not, keeping its other
/// per-mount flags (a bind remount changes this mount alone, not the file
/// system, nor the container's own mount of it). Whether it changed anything.
fn forbid_symlinks(dir: &Path) -> Result<bool, RunDirError> {
    let inspect = |source: io::Error| RunDirError::Inspect {
        path: dir.to_owned(),
        source,
    };
    // statvfs's flags as nix reports them lack `nosymfollow`; mountinfo
    // lists every per-mount option.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(inspect)?;
    let point = std::fs::canonicalize(dir).map_err(inspect)?;
    if mount_options(&mountinfo, &point).is_some_and(|o| o.split(',').any(|o| o == "nosymfollow")) {
        return Ok(false);
    }
    let flags = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| inspect(e.into()))?
        .flags()
        .bits();
    let kept = [
        (libc::ST_RDONLY, MsFlags::MS_RDONLY),
        (libc::ST_NOSUID, MsFlags::MS_NOSUID),
        (libc::ST_NODEV, MsFlags::MS_NODEV),
        (libc::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (libc::ST_NOATIME, MsFlags::MS_NOATIME),
        (libc::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (libc::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let keep = kept
        .into_iter()
        .filter(|(st, _)| flags & st != 0)
        .fold(MsFlags::empty(), |all, (_, ms)| all | ms);
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | keep | MS_NOSYMFOLLOW;
    nix::mount::mount(None::<&str>, dir, None::<&str>, remount, None::<&str>).map_err(|e| {
        RunDirError::Mount {
            path: dir.to_owned(),
            what: "the mount again (remount,bind) with nosymfollow".into(),
            source: e.into(),
        }
    })?;
    Ok(true)
}

/// The per-mount options (`rw,nosuid,…`) of the topmost mount at `point`,
/// from the text of `/proc/self/mountinfo` (whose paths escape space, tab,
/// newline and backslash in octal).
fn mount_options<'a>(mountinfo: &'a str, point: &Path) -> Option<&'a str> {
    let escaped: String = point
        .to_string_lossy()
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect();
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ').skip(4);
        (fields.next()? == escaped).then(|| fields.next()).flatten()
    })
}

/// The entries of `dir` a mount would hide from someone using them: all
/// but dead sockets (nobody listens: leftovers of a stopped php-fpm or
/// socket unit).
fn in_use(dir: &Path) -> Result<Vec<String>, RunDirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RunDirError::Inspect {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RunDirError::Inspect {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        match upstream::probe(&path) {
            Liveness::Dead | Liveness::Absent => {}
            other => out.push(format!(
                "{} ({})",
                entry.file_name().to_string_lossy(),
                match other {
                    Liveness::Listening => "a socket in use".to_owned(),
                    Liveness::NotSocket(kind) => kind.to_string(),
                    Liveness::Unknown(why) => why,
                    Liveness::Dead | Liveness::Absent => String::new(),
                }
            )),
        }
        if out.len() >= 5 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn mount_options_of_the_topmost_mount_with_octal_escapes() {
        let info = "\
36 25 0:32 / /run/docker-apps/a rw,nosuid - tmpfs fleet-rundir rw
37 25 0:33 / /run/docker-apps/a\\040b rw - tmpfs fleet-rundir rw
38 36 0:34 / /run/docker-apps/a rw,nosymfollow - tmpfs fleet-rundir rw
";
        let at = |p: &str| mount_options(info, Path::new(p));
        assert_eq!(at("/run/docker-apps/a"), Some("rw,nosymfollow"));
        assert_eq!(at("/run/docker-apps/a b"), Some("rw"));
        assert_eq!(at("/run/docker-apps"), None);
    }

    #[test]
    fn options_have_floors() {
        assert_eq!(
            Limits::default().options(),
            "size=1048576,nr_inodes=1024,mode=0755"
        );
        assert_eq!(
            Limits { size: 0, inodes: 0 }.options(),
            "size=4096,nr_inodes=2,mode=0755"
        );
    }

    #[test]
    fn a_directory_in_use_is_not_mounted_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            run_dir: tmp.path().join("run"),
            state_dir: tmp.path().join("state"),
            sites_dir: tmp.path().join("sites"),
        };
        let site = Site::new("in-use.test").expect("site");
        std::fs::create_dir_all(layout.site_dir(&site)).expect("mkdir");
        let _live = std::os::unix::net::UnixListener::bind(layout.fpm_socket(&site)).expect("bind");
        // A dead socket alone would not stop the mount; a live one does.
        drop(std::os::unix::net::UnixListener::bind(layout.waker_socket(&site)).expect("bind"));
        match prepare(&layout, &site, Limits::default()).expect("prepare") {
            Prepared::InUse(names) => {
                assert_eq!(names, ["php-fpm.sock (a socket in use)"]);
            }
            other => panic!("{other:?}"),
        }
        // A symlink where the directory should be is refused, not followed.
        let other = Site::new("link.test").expect("site");
        std::os::unix::fs::symlink(tmp.path(), layout.site_dir(&other)).expect("symlink");
        assert!(matches!(
            prepare(&layout, &other, Limits::default()),
            Err(RunDirError::NotDirectory { .. })
        ));
    }
}
