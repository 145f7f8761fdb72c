//! The host memory guard's parts: sizes, a container's memory from its
//! cgroup, and which awake sites to stop to get under a budget. Parsing and
//! choosing are pure; [`container_memory`] reads two small files.
//!
//! **What is counted.** A container's cgroup usage minus its inactive file
//! cache (`memory.usage_in_bytes` − `total_inactive_file` on cgroup v1,
//! `memory.current` − `inactive_file` on v2), the figure `docker stats`
//! shows. Inactive page cache is the first thing the kernel reclaims under
//! pressure, so counting it would stop sites for memory the host gets back
//! for free; active cache and anonymous memory (php-fpm's workers, opcache)
//! are what a stop actually frees.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the cgroup hierarchies are mounted.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "bad size {0:?} (rule: a whole number of bytes with an optional unit K, M, G or T, \
         powers of 1024, optionally followed by \"iB\" or \"B\", e.g. 512M, 2GiB)"
    )]
    Bad(String),
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses a size such as `512M`, `2GiB`, `1048576` (units are powers of
/// 1024, as in systemd's `MemoryMax=`).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::Bad(s.to_owned()));
    }
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| SizeError::TooLarge(s.to_owned()))?;
    let shift = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(SizeError::Bad(s.to_owned())),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::TooLarge(s.to_owned()))
}

/// A size for people: `12.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Reading a container's memory failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("container id {id:?} is not a Docker id (hex digits)")]
    BadId { id: String },
    #[error("no memory cgroup for container {id} under {root} (tried {tried})")]
    NoCgroup {
        id: String,
        root: PathBuf,
        tried: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a number: {text:?}")]
    Parse { path: PathBuf, text: String },
}

/// The cgroup directories Docker uses for container `id`, v1 then v2, the
/// cgroupfs driver then the systemd one. Each is paired with its usage file
/// and the key of inactive file cache in its `memory.stat`.
fn candidates(root: &Path, id: &str) -> [(PathBuf, &'static str, &'static str); 4] {
    const V1: (&str, &str) = ("memory.usage_in_bytes", "total_inactive_file");
    const V2: (&str, &str) = ("memory.current", "inactive_file");
    let scope = format!("docker-{id}.scope");
    [
        (root.join("memory/docker").join(id), V1.0, V1.1),
        (root.join("memory/system.slice").join(&scope), V1.0, V1.1),
        (root.join("docker").join(id), V2.0, V2.1),
        (root.join("system.slice").join(&scope), V2.0, V2.1),
    ]
}

/// Value of `key` in a `memory.stat` text (`key value` lines).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_number(path: &Path) -> Result<u64, MemoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| MemoryError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.trim().parse().map_err(|_| MemoryError::Parse {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

/// Container `id`'s memory in bytes (see the module doc for what is
/// counted), from its cgroup under `root`.
pub fn container_memory(root: &Path, id: &str) -> Result<u64, MemoryError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MemoryError::BadId { id: id.to_owned() });
    }
    let list = candidates(root, id);
    for (dir, usage_file, inactive_key) in &list {
        if !dir.is_dir() {
            continue;
        }
        let usage = read_number(&dir.join(usage_file))?;
        let stat_path = dir.join("memory.stat");
        let stat = std::fs::read_to_string(&stat_path).map_err(|source| MemoryError::Read {
            path: stat_path,
            source,
        })?;
        let inactive = stat_value(&stat, inactive_key).unwrap_or(0);
        return Ok(usage.saturating_sub(inactive));
    }
    Err(MemoryError::NoCgroup {
        id: id.to_owned(),
        root: root.to_owned(),
        tried: list
            .iter()
            .map(|(d, _, _)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// An awake site the guard may stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The caller's index of the site.
    pub index: usize,
    /// Its memory.
    pub bytes: u64,
    /// Its last activity (its container's start when none was seen): the
    /// order of the stops, least recent first.
    pub last_active: SystemTime,
    /// The later of its last activity and its container's start: the site
    /// has been quiet since then.
    pub quiet_since: SystemTime,
}

/// Which candidates to stop, least recently active first, until the awake
/// sites' `total` is at most `budget`. Candidates quiet for less than
/// `min_idle` are never chosen (a site just woken or just used). Returns the
/// chosen indices in stop order and the total they leave.
pub fn choose(
    mut candidates: Vec<Candidate>,
    total: u64,
    budget: u64,
    now: SystemTime,
    min_idle: Duration,
) -> (Vec<usize>, u64) {
    let mut left = total;
    if left <= budget {
        return (Vec::new(), left);
    }
    candidates.retain(|c| {
        now.duration_since(c.quiet_since)
            .is_ok_and(|d| d >= min_idle)
    });
    candidates.sort_by_key(|c| (c.last_active, c.index));
    let mut chosen = Vec::new();
    for c in candidates {
        if left <= budget {
            break;
        }
        left = left.saturating_sub(c.bytes);
        chosen.push(c.index);
    }
    (chosen, left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "M", "1.5G", "-1G", "12X", "1 GB extra"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.to_string().contains("rule:"), "{e}");
        }
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge(_))
        ));
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12 << 20), "12.0 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn memory_stat() {
        let stat = "cache 100\ntotal_inactive_file 4096\ninactive_file 10\nrss 5\n";
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_value(stat, "inactive_file"), Some(10));
        assert_eq!(stat_value(stat, "missing"), None);
    }

    #[test]
    fn reads_v1_and_v2_layouts() {
        let root = tempfile::tempdir().expect("tempdir");
        let id = "abc123";
        let v1 = root.path().join("memory/docker").join(id);
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("memory.usage_in_bytes"), "10000\n").expect("write");
        std::fs::write(
            v1.join("memory.stat"),
            "cache 9\ntotal_inactive_file 3000\n",
        )
        .expect("write");
        assert_eq!(container_memory(root.path(), id).expect("v1"), 7000);

        let id2 = "def456";
        let v2 = root
            .path()
            .join("system.slice")
            .join(format!("docker-{id2}.scope"));
        std::fs::create_dir_all(&v2).expect("mkdir");
        std::fs::write(v2.join("memory.current"), "5000\n").expect("write");
        std::fs::write(v2.join("memory.stat"), "anon 1\ninactive_file 6000\n").expect("write");
        assert_eq!(
            container_memory(root.path(), id2).expect("v2"),
            0,
            "saturates"
        );

        let e = container_memory(root.path(), "0f0f").expect_err("missing");
        assert!(e.to_string().contains("0f0f"), "{e}");
        assert!(matches!(
            container_memory(root.path(), "../../etc"),
            Err(MemoryError::BadId { .. })
        ));
        std::fs::write(v1.join("memory.usage_in_bytes"), "lots\n").expect("write");
        assert!(matches!(
            container_memory(root.path(), id),
            Err(MemoryError::Parse { .. })
        ));
    }

    #[test]
    fn real_cgroup_root_reads_or_says_why() {
        // On this kernel a made-up id has no cgroup; the error names the root.
        let e = container_memory(Path::new(DEFAULT_CGROUP_ROOT), "00").expect_err("none");
        assert!(e.to_string().contains(DEFAULT_CGROUP_ROOT), "{e}");
    }

    #[test]
    fn chooses_least_recently_active_until_under_budget() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let c = |index, bytes, ago| Candidate {
            index,
            bytes,
            last_active: now - Duration::from_secs(ago),
            quiet_since: now - Duration::from_secs(ago),
        };
        let min = Duration::from_secs(60);
        let all = vec![
            c(0, 100, 120),
            c(1, 100, 3600),
            c(2, 100, 600),
            c(3, 500, 30),
        ];
        // Under budget: nothing.
        assert_eq!(choose(all.clone(), 800, 800, now, min), (vec![], 800));
        // 50 over: the least recently active one (1) is enough.
        assert_eq!(choose(all.clone(), 850, 800, now, min), (vec![1], 750));
        // 150 over: 1 then 2.
        assert_eq!(choose(all.clone(), 950, 800, now, min), (vec![1, 2], 750));
        // Far over: every idle-enough one, never 3 (quiet only 30 s).
        assert_eq!(choose(all, 5000, 100, now, min), (vec![1, 2, 0], 4700));
        // A clock step (quiet since the future) is never idle enough.
        let future = vec![Candidate {
            index: 9,
            bytes: 1,
            last_active: now - Duration::from_secs(500),
            quiet_since: now + Duration::from_secs(5),
        }];
        assert_eq!(choose(future, 10, 1, now, Duration::ZERO), (vec![], 10));
        // Ordered by last activity, while a recent start still protects.
        let started_recently = vec![
            Candidate {
                index: 0,
                bytes: 10,
                last_active: now - Duration::from_secs(100),
                quiet_since: now - Duration::from_secs(70),
            },
            Candidate {
                index: 1,
                bytes: 10,
                last_active: now - Duration::from_secs(900),
                quiet_since: now - Duration::from_secs(65),
            },
            Candidate {
                index: 2,
                bytes: 10,
                last_active: now - Duration::from_secs(9000),
                quiet_since: now - Duration::from_secs(5),
            },
        ];
        assert_eq!(choose(started_recently, 30, 15, now, min), (vec![1, 0], 10));
    }
}
