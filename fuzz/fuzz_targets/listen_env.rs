//! The systemd environment parsing: LISTEN_PID / LISTEN_FDS /
//! LISTEN_FDNAMES (sd_listen_fds) and NOTIFY_SOCKET, on arbitrary values.
//! Input: the four values separated by NUL bytes (a missing part is an
//! unset variable); the first 4 bytes also give "our" pid.
#![no_main]

use fleet_core::listen::{LISTEN_FDS_START, parse_listen_env};
use fleet_core::notify::{NotifyAddr, parse_notify_addr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pid_bytes, rest) = data.split_at(data.len().min(4));
    let mut pid = [0u8; 4];
    pid[..pid_bytes.len()].copy_from_slice(pid_bytes);
    let my_pid = u32::from_le_bytes(pid);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\0');
    let (p, f, n, s) = (parts.next(), parts.next(), parts.next(), parts.next());
    if let Ok(v) = parse_listen_env(p, f, n, my_pid) {
        assert!(!v.is_empty());
        // Sockets are only ever taken by the process they were passed to.
        assert_eq!(p.and_then(|p| p.trim().parse::<u32>().ok()), Some(my_pid));
        for (i, (fd, _)) in v.iter().enumerate() {
            assert_eq!(*fd, LISTEN_FDS_START + i as i32);
        }
    }
    match parse_notify_addr(s) {
        Ok(Some(NotifyAddr::Path(path))) => assert!(path.is_absolute()),
        Ok(Some(NotifyAddr::Abstract(name))) => assert!(name.len() < 108),
        Ok(None) | Err(_) => {}
    }
});
