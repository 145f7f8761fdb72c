//! The kit's fleet-reaper runner ([`xtask::kit::reaper`]) for tests: this
//! build's binary, and failures as panics.

use serde_json::Value;
use xtask::error::or_panic;

pub use xtask::kit::reaper::{Reaper, Run};

use super::{TestSite, bin};

/// This build's `fleet-reaper --format json` over `site`'s own layout (its
/// run, sites and state directories).
pub fn over(site: &TestSite) -> Reaper {
    Reaper::over(bin("fleet-reaper"), site.layout()).json()
}

/// This build's `fleet-reaper` with no arguments yet.
pub fn reaper() -> Reaper {
    Reaper::new(bin("fleet-reaper"))
}

/// The tests' side of [`Reaper`].
pub trait ReaperExt {
    /// One pass to its end, printed (libtest shows it for a failing test).
    fn pass(&self) -> Run;

    /// [`ReaperExt::pass`], asserted to exit with `code` (else its command
    /// line and output are the message).
    fn exits(&self, code: i32) -> Run;

    /// Passes until `site`'s entry says `action`; that entry.
    fn reap_until(&self, site: &TestSite, action: &str, within: std::time::Duration) -> Value;
}

impl ReaperExt for Reaper {
    fn pass(&self) -> Run {
        let run = or_panic(self.run());
        eprintln!("{} -> {run}", self.line());
        run
    }

    #[track_caller]
    fn exits(&self, code: i32) -> Run {
        let run = self.pass();
        assert_eq!(run.code, Some(code), "{}\n{run}", self.line());
        run
    }

    fn reap_until(&self, site: &TestSite, action: &str, within: std::time::Duration) -> Value {
        or_panic(self.until(site.name(), action, within))
    }
}

/// The tests' side of [`Run`].
pub trait RunExt {
    /// The JSON plan.
    fn plan(&self) -> Value;

    /// The plan's entry of `site` (a site's name or a conf file's).
    fn site(&self, site: &str) -> Value;
}

impl RunExt for Run {
    fn plan(&self) -> Value {
        or_panic(self.json())
    }

    fn site(&self, site: &str) -> Value {
        or_panic(self.entry(site))
    }
}
