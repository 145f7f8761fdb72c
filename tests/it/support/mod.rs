//! Test support: real components for integration tests.
pub mod nsystemd;
