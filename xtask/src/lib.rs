//! Library half of xtask: pieces that the test suite reuses (the php-fpm
//! image) and the package checks of `cargo xtask test`.

pub mod demo;
pub mod deps;
pub mod dist;
pub mod error;
pub mod image;
pub mod install;
pub mod kit;
pub mod readme;
pub mod wait;
pub mod wakes;

pub use error::Error;
