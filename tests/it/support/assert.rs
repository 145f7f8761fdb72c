//! Checks that several test files make the same way.

use super::TestSite;
use super::wake::hello;

/// The site answers its hello page through its waker socket. `what` names
/// the moment for the failure message; `logs` (read only on failure) adds
/// what helps to see why, e.g. the waker's log.
pub fn says_hello(site: &TestSite, what: &str, logs: impl FnOnce() -> String) {
    let r = match hello(&site.waker_socket()) {
        Ok(r) => r,
        Err(e) => panic!("{what}: {e}\n{}", logs()),
    };
    assert_eq!(
        (r.status, r.text()),
        (200, site.hello_line()),
        "{what}\n{}",
        logs()
    );
}

/// php-fpm itself answers the hello page at the site's own socket (no
/// waker in between). `what` names the moment for the failure message.
pub fn fpm_says_hello(site: &TestSite, what: &str) {
    let r = hello(&site.fpm_socket()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.text(), site.hello_line(), "{what}");
}

/// The reaper's plan entry of `site` (its name, or a conf file's name).
pub fn plan_entry<'a>(plan: &'a serde_json::Value, site: &str) -> &'a serde_json::Value {
    xtask::kit::reaper::plan_entry(plan, site)
        .unwrap_or_else(|| panic!("no entry for {site} in {plan:#}"))
}

/// A finished command's stdout then stderr, for messages and searches.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
