//! Tests: reaper (see the issue that owns it).
