//! Waking a container: start or unpause, then wait for php-fpm (fleet-waker).
