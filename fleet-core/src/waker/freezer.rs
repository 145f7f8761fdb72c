//! Whether php-fpm's listener is frozen (`docker pause`): its cgroup's
//! freezer state file, found once per listener pid and kept open.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::Shared;

impl Shared {
    /// True when the process listening behind `s` is frozen (`docker
    /// pause`): the kernel still queues connections for it, but nothing
    /// would answer. Reads one cgroup file; unknown counts as not frozen.
    pub(super) fn is_frozen(&self, s: &UnixStream) -> bool {
        let pid = s.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
        self.is_frozen_pid(pid)
    }

    /// [`Shared::is_frozen`] for a listener pid already known (the connect
    /// in `attempt` has it: no second `SO_PEERCRED` on the warm path). Pid 0
    /// (not visible here) counts as not frozen.
    pub(super) fn is_frozen_pid(&self, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        use std::os::unix::fs::FileExt;
        let mut cache = self.freezer.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|(p, _)| *p != pid) {
            let f = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|t| freezer_file(&t))
                .and_then(|f| std::fs::File::open(f.path()).ok().map(|file| (f, file)));
            *cache = Some((pid, f));
        }
        let Some((_, Some((kind, file)))) = cache.as_ref() else {
            return false;
        };
        let mut buf = [0u8; 32];
        match file.read_at(&mut buf, 0) {
            Ok(n) => kind.is_frozen(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {
                // The cgroup went away (container removed): look it up again.
                *cache = None;
                false
            }
        }
    }
}

/// A freezer state file, kept open.
pub(super) type OpenFreezer = (FreezerFile, std::fs::File);

/// Where a process's freezer state is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezerFile {
    /// cgroup v1: `freezer.state` (`THAWED`, `FREEZING`, `FROZEN`).
    V1(PathBuf),
    /// cgroup v2: `cgroup.freeze` (`0` or `1`).
    V2(PathBuf),
}

impl FreezerFile {
    fn path(&self) -> &Path {
        match self {
            FreezerFile::V1(p) | FreezerFile::V2(p) => p,
        }
    }

    /// Interprets the file's content.
    pub fn is_frozen(&self, content: &str) -> bool {
        match self {
            FreezerFile::V1(_) => matches!(content.trim(), "FROZEN" | "FREEZING"),
            FreezerFile::V2(_) => content.trim() == "1",
        }
    }
}

/// From `/proc/<pid>/cgroup`, the file telling whether that process is
/// frozen; `None` for the root group (which cannot be frozen). A v1
/// `freezer` hierarchy wins over the v2 one (that is what Docker uses on
/// such hosts).
pub fn freezer_file(proc_cgroup: &str) -> Option<FreezerFile> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if rel.contains("..") {
            continue;
        }
        if ctrls.split(',').any(|c| c == "freezer") {
            if rel.is_empty() {
                return None;
            }
            return Some(FreezerFile::V1(
                Path::new("/sys/fs/cgroup/freezer")
                    .join(rel)
                    .join("freezer.state"),
            ));
        }
        if id == "0" && ctrls.is_empty() && !rel.is_empty() {
            v2 = Some(FreezerFile::V2(
                Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"),
            ));
        }
    }
    v2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_freezer_files() {
        let v1 = "9:name=systemd:/docker/abc\n6:freezer:/docker/abc\n0::/\n";
        assert_eq!(
            freezer_file(v1),
            Some(FreezerFile::V1(
                "/sys/fs/cgroup/freezer/docker/abc/freezer.state".into()
            ))
        );
        assert_eq!(freezer_file("6:freezer:/\n0::/\n"), None);
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            freezer_file(v2),
            Some(FreezerFile::V2(
                "/sys/fs/cgroup/system.slice/docker-abc.scope/cgroup.freeze".into()
            ))
        );
        assert_eq!(freezer_file("0::/\n"), None);
        assert_eq!(freezer_file("garbage\n\n"), None);
        assert_eq!(freezer_file("6:freezer:/../../etc\n"), None);
        let f = FreezerFile::V1("x".into());
        assert!(f.is_frozen("FROZEN\n"));
        assert!(f.is_frozen("FREEZING\n"));
        assert!(!f.is_frozen("THAWED\n"));
        let f = FreezerFile::V2("x".into());
        assert!(f.is_frozen("1\n"));
        assert!(!f.is_frozen("0\n"));
    }
}
