//! Test support: real components for integration tests.
