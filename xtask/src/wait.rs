//! The one polling loop of the tree, for xtask and the tests.

use std::time::{Duration, Instant};

/// Checks `cond` until it holds or `timeout` passes, sleeping `first`
/// between checks, doubling up to `max`; checks once more at the deadline.
pub fn poll(
    timeout: Duration,
    first: Duration,
    max: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = first;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return cond();
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(max);
    }
}

/// [`poll`] every 200 µs (fine grained: the cold-start benchmark times what
/// it waits for).
pub fn wait_for(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    let step = Duration::from_micros(200);
    poll(timeout, step, step, cond)
}

/// [`poll`] backing off from 1 ms to 20 ms: waiting for something to
/// happen, not timing it.
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    let (first, max) = (Duration::from_millis(1), Duration::from_millis(20));
    poll(timeout, first, max, cond)
}
