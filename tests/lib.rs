//! Integration and end-to-end tests live in `it/`; see `it/main.rs`.
