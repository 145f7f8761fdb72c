//! The one integration test binary. Tests against real components (Docker,
//! php-fpm, nginx, systemd tools) live here; helpers are in `support`.

mod support;

mod bad_input;
mod demo;
mod direct;
mod faults;
mod first_run;
mod fleet;
mod fleetops;
mod harness;
mod package;
mod props;
mod readme;
mod reaper;
mod relay;
mod renew;
mod sleep;
mod status;
mod tenant;
mod timer;
mod waker;
