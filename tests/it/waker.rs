//! Tests: waker (see the issue that owns it).
