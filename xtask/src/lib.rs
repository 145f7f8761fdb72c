//! Library half of xtask: pieces that the test suite reuses (the php-fpm image).

pub mod image;
