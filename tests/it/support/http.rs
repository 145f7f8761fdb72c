//! The kit's HTTP/1.1 client, under the name the tests use.

pub use xtask::kit::http::*;
