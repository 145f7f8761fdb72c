//! Exit codes shared by the binaries (sysexits(3) style).
//!
//! | code | name        | meaning                                              |
//! |------|-------------|------------------------------------------------------|
//! | 0    | OK          | success                                              |
//! | 1    | FAILURE     | some items (sites) failed, the others were handled   |
//! | 64   | USAGE       | bad command line, bad site name, no socket passed    |
//! | 65   | DATAERR     | bad input data                                       |
//! | 69   | UNAVAILABLE | a service (Docker, systemd) could not be reached     |
//! | 70   | SOFTWARE    | internal error                                       |
//! | 71   | OSERR       | an operating-system call failed                      |
//! | 73   | CANTCREAT   | a file could not be created                          |
//! | 75   | TEMPFAIL    | interrupted (SIGTERM) before finishing; try again    |
//! | 78   | CONFIG      | configuration error                                  |

/// Success.
pub const OK: u8 = 0;
/// Some items failed; the others were handled.
pub const FAILURE: u8 = 1;
/// Command line usage error.
pub const USAGE: u8 = 64;
/// Service unavailable (Docker, systemd).
pub const UNAVAILABLE: u8 = 69;
/// Internal software error.
pub const SOFTWARE: u8 = 70;
/// System error.
pub const OSERR: u8 = 71;
/// Temporary failure, e.g. interrupted by a signal.
pub const TEMPFAIL: u8 = 75;

/// Formats an error and all its sources as `a: b: c`, for printing the whole chain.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // thiserror messages often already embed the source; don't repeat it.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
