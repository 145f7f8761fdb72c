//! Property tests (issue 8) of the pure parsers the binaries feed with
//! outside input: the conf parser, site validation, the sd_listen_fds and
//! NOTIFY_SOCKET environment parsing, and the waker's state file format.
//! The same functions are also fuzzed with cargo-fuzz (`fuzz/`,
//! `cargo xtask fuzz <target>`).
//!
//! Each property runs `PROPTEST_CASES` cases (proptest's default: 256; the
//! long run for RELIABILITY.md used `PROPTEST_CASES=1000000`).

use std::time::{Duration, UNIX_EPOCH};

use fleet_core::conf::{self, ConfError, MAX_LINE_LEN, MAX_TIMEOUT};
use fleet_core::listen::{LISTEN_FDS_START, ListenError, parse_listen_env};
use fleet_core::notify::{NotifyAddr, parse_notify_addr};
use fleet_core::site::{MAX_LABEL_LEN, MAX_NAME_LEN, Site};
use fleet_core::state::{self, Activity};
use proptest::prelude::*;

/// An independent statement of the site-name rule (DNS host name).
fn reference_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_LABEL_LEN
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Names near the rule: mostly legal characters, some illegal ones.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,80}",
        "[a-zA-Z0-9-]{1,63}(\\.[a-zA-Z0-9-]{1,63}){0,4}",
        "[a-z0-9./_ ~$;`\\\\-]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn site_validation_matches_the_rule(name in name_like()) {
        let got = Site::new(&name);
        prop_assert_eq!(got.is_ok(), reference_valid(&name), "{:?}: {:?}", name, got);
        if let Ok(site) = got {
            // Safe as a path component, a container and a unit instance name.
            prop_assert_eq!(site.as_str(), name.as_str());
            prop_assert!(!site.as_str().contains('/') && site.as_str() != "." && site.as_str() != "..");
            prop_assert_eq!(site.container(), format!("{name}.fpm"));
            prop_assert_eq!(name.parse::<Site>().ok(), Some(site));
        } else if let Err(e) = got {
            // Every refusal names its rule.
            let msg = e.to_string();
            prop_assert!(msg.contains("rule"), "{}", msg);
        }
    }

    #[test]
    fn conf_bytes_never_panic_and_stay_in_range(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        if let Ok(d) = conf::parse_conf_bytes(&bytes) {
            prop_assert!(!d.is_zero() && d <= MAX_TIMEOUT);
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            // The text and the bytes entry points agree on text input.
            prop_assert_eq!(conf::parse_conf(text).ok(), conf::parse_conf_bytes(&bytes).ok());
        }
        // A file name: never panics, a `.conf` suffix is required.
        let named = conf::site_of_file_name(&bytes);
        prop_assert_eq!(named.is_some(), bytes.ends_with(b".conf"));
    }

    #[test]
    fn conf_text_never_panics(text in any::<String>()) {
        if let Ok(d) = conf::parse_conf(&text) {
            prop_assert!(!d.is_zero() && d <= MAX_TIMEOUT);
        }
    }

    /// A well-formed line 1 with any prefix (no colon, no control
    /// characters), any spacing, line ending, BOM and later lines parses to
    /// exactly its duration.
    #[test]
    fn conf_well_formed_round_trip(
        prefix in "[^:\\p{Cc}]{0,100}",
        secs in 1u64..=MAX_TIMEOUT.as_secs(),
        unit in prop_oneof![Just("s"), Just("m"), Just("h")],
        pad in "[ \t]{0,3}",
        bom in any::<bool>(),
        crlf in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let per = match unit { "s" => 1, "m" => 60, _ => 3600 };
        let n = (secs / per).max(1);
        let mut bytes = Vec::new();
        if bom {
            bytes.extend_from_slice("\u{feff}".as_bytes());
        }
        bytes.extend_from_slice(format!("{prefix}:{pad}{n}{unit}{pad}").as_bytes());
        bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        bytes.extend_from_slice(&rest);
        let want = Duration::from_secs(n * per);
        let line_len = bytes.len() - rest.len() - if crlf { 2 } else { 1 } - if bom { 3 } else { 0 };
        let got = conf::parse_conf_bytes(&bytes);
        if line_len > MAX_LINE_LEN {
            prop_assert!(matches!(got, Err(ConfError::LineTooLong { .. })), "{:?}", got);
        } else {
            prop_assert_eq!(got, Ok(want));
        }
    }

    #[test]
    fn listen_env_never_panics(
        pid in proptest::option::of(any::<String>()),
        fds in proptest::option::of(any::<String>()),
        names in proptest::option::of(any::<String>()),
        my_pid in any::<u32>(),
    ) {
        if let Ok(v) = parse_listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), my_pid) {
            prop_assert!(!v.is_empty());
            for (i, (fd, _)) in v.iter().enumerate() {
                prop_assert_eq!(*fd, LISTEN_FDS_START + i as i32);
            }
        }
    }

    /// With well-formed variables: one entry per fd, names in order, and
    /// the pid check always applied.
    #[test]
    fn listen_env_well_formed(
        my_pid in 1u32..=4_194_304,
        other in 1u32..=4_194_304,
        names in proptest::collection::vec("[a-z0-9_.-]{0,12}", 1..8),
        with_names in any::<bool>(),
    ) {
        let n = names.len();
        let pid = my_pid.to_string();
        let count = n.to_string();
        let joined = names.join(":");
        let names_var = with_names.then_some(joined.as_str());
        let got = parse_listen_env(Some(&pid), Some(&count), names_var, my_pid)
            .expect("well-formed variables are accepted");
        prop_assert_eq!(got.len(), n);
        for (i, (fd, name)) in got.iter().enumerate() {
            prop_assert_eq!(*fd, LISTEN_FDS_START + i as i32);
            let want = (with_names && !names[i].is_empty()).then(|| names[i].clone());
            prop_assert_eq!(name, &want);
        }
        if other != my_pid {
            let wrong = parse_listen_env(Some(&other.to_string()), Some(&count), None, my_pid);
            prop_assert!(
                matches!(wrong, Err(ListenError::WrongPid { .. })),
                "sockets for pid {} taken by {}: {:?}", other, my_pid, wrong
            );
        }
    }

    #[test]
    fn notify_addr_never_panics_and_is_absolute_or_abstract(v in proptest::option::of(any::<String>())) {
        match parse_notify_addr(v.as_deref()) {
            Ok(Some(NotifyAddr::Path(p))) => prop_assert!(p.is_absolute()),
            Ok(Some(NotifyAddr::Abstract(name))) => {
                prop_assert!(v.as_deref().is_some_and(|v| v.starts_with('@')));
                prop_assert!(name.len() < 108);
            }
            Ok(None) => prop_assert!(v.as_deref().is_none_or(str::is_empty)),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn state_file_never_panics(text in any::<String>()) {
        let _ = state::parse(&text);
    }

    /// render → parse is the identity (times at the file's millisecond
    /// precision).
    #[test]
    fn state_round_trip(
        pid in proptest::option::of(1u32..=4_194_304),
        open in any::<u64>(),
        connections in proptest::option::of(any::<u64>()),
        start_ms in proptest::option::of(0u64..=4_102_444_800_000),
        end_ms in proptest::option::of(0u64..=4_102_444_800_000),
        wakes in any::<u64>(),
        last_wake_ms in proptest::option::of(any::<u64>()),
    ) {
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let a = Activity {
            pid,
            open,
            connections,
            last_start: start_ms.map(t),
            last_end: end_ms.map(t),
            wakes,
            last_wake_ms,
        };
        let back = state::parse(&state::render(&a)).expect("own rendering parses");
        prop_assert_eq!(back, a);
    }
}

#[test]
fn reference_rule_sanity() {
    // The reference itself is checked against known answers, so a wrong
    // reference cannot make the property vacuous.
    for ok in ["a", "example.com", "a-b.c0", &"a".repeat(63)] {
        assert!(reference_valid(ok), "{ok}");
    }
    for bad in ["", ".", "a..b", "-a", "a-", "a_b", &"a".repeat(64), "ä"] {
        assert!(!reference_valid(bad), "{bad}");
    }
}
