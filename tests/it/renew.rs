//! fleet-renew and the systemd units, under a real systemd booted as PID 1
//! in private namespaces.

use crate::support::nsystemd::{Bind, NsSystemd};
use std::path::PathBuf;

#[test]
fn systemd_boots_in_namespaces_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "host").expect("write");
    let before_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    {
        let ns = NsSystemd::boot(&[
            Bind {
                host: PathBuf::from("/run/docker.sock"),
                inside: PathBuf::from("/run/docker.sock"),
            },
            Bind {
                host: dir.path().to_owned(),
                inside: PathBuf::from("/run/docker-apps"),
            },
        ]);
        let units = ns.systemctl_ok(&["list-units", "--no-legend", "--plain"]);
        assert!(units.contains("fleet-test.target"), "{units}");
        assert!(!units.contains("systemd-tmpfiles"), "{units}");
        let seen = ns.run("cat", &["/run/docker-apps/marker"]);
        assert_eq!(String::from_utf8_lossy(&seen.stdout), "host");
    }
    assert!(marker.exists(), "host files survive");
    let after_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert_eq!(before_mounts.lines().count(), after_mounts.lines().count());
}
