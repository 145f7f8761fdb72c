//! Site-name validation on arbitrary strings: an accepted name is a safe
//! path component, container name and unit instance name.
#![no_main]

use fleet_core::Site;
use fleet_core::site::{MAX_LABEL_LEN, MAX_NAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    match Site::new(name) {
        Ok(site) => {
            assert_eq!(site.as_str(), name);
            assert!(name.len() <= MAX_NAME_LEN);
            assert!(name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= MAX_LABEL_LEN
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
            assert_eq!(site.container(), format!("{name}.fpm"));
        }
        Err(e) => assert!(e.to_string().contains("rule")),
    }
});
