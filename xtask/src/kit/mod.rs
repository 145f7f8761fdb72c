//! The kit: what the integration tests, `xtask bench`, `xtask soak` and
//! `xtask demo` share to set up real sites and run real processes, written
//! once (a test site with its directories and container, the child-process
//! launcher with socket activation).

pub mod process;
pub mod site;
