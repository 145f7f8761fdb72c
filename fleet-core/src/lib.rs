//! fleet-core: everything reusable behind the fleet binaries.
//!
//! See `ARCHITECTURE.md` at the repository root for the bird's-eye view.
//! Binaries are thin: they parse flags, set up logging, call into this crate
//! and map errors to exit codes ([`exit`]), all through [`startup`].

pub mod admission;
pub mod atomic;
pub mod conf;
pub mod docker;
pub mod drain;
pub mod exit;
pub mod fastcgi;
pub mod fpm_status;
pub mod fswatch;
pub mod heal;
pub mod listen;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod placeholder;
pub mod proxy;
pub mod reaper;
pub mod renew;
pub mod reply;
pub mod rundir;
pub mod site;
pub mod startup;
pub mod state;
pub mod upstream;
pub mod waker;

pub use site::{Layout, Site, SiteError};
