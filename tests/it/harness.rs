//! Tests: harness (see the issue that owns it).
