//! The one integration test binary. Tests against real components (Docker,
//! php-fpm, nginx, systemd tools) live here; helpers are in `support`.

mod support;

mod demo;
mod direct;
mod harness;
mod reaper;
mod renew;
mod waker;
