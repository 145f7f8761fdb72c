//! The on-demand conf parser on arbitrary bytes (as `load_conf` reads them)
//! and arbitrary file names (as `list_sites` sees them).
#![no_main]

use fleet_core::conf::{self, MAX_TIMEOUT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = conf::parse_conf_bytes(data) {
        assert!(!d.is_zero() && d <= MAX_TIMEOUT, "{d:?} out of range");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            conf::parse_conf(text).ok(),
            conf::parse_conf_bytes(data).ok(),
            "text and bytes entry points disagree"
        );
    }
    match conf::site_of_file_name(data) {
        None => assert!(!data.ends_with(b".conf")),
        Some(Ok(site)) => {
            assert!(data.ends_with(b".conf"));
            assert!(!site.as_str().contains('/'));
        }
        Some(Err(_)) => {}
    }
});
