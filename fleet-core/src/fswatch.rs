//! inotify as every binary here uses it: an instance is held only while
//! something waits on it, closed off the caller's thread, and a fallback
//! to polling is said once per process, at warn.
//!
//! Instances count per uid (`fs.inotify.max_user_instances`, 128 by
//! default) and the wakers run as root, sharing that count with PID 1,
//! journald and containerd: a waker that kept one for its life would make
//! a few hundred awake sites use them all up.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use inotify::{Event, EventStream, Inotify, WatchMask};

/// Whether this process already warned that it polls instead.
static WARNED: AtomicBool = AtomicBool::new(false);

/// inotify on one directory, closed off the dropping thread.
pub struct Watch(Option<EventStream<[u8; 1024]>>);

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("open", &self.0.is_some())
            .finish()
    }
}

impl Watch {
    /// A new instance watching `dir` for `mask`, or `None` (logged, see
    /// [`polling_instead`]): then `what` polls.
    pub fn new(dir: &Path, mask: WatchMask, what: &'static str) -> Option<Watch> {
        let r = (|| -> io::Result<EventStream<[u8; 1024]>> {
            let ino = Inotify::init()?;
            ino.watches().add(dir, mask)?;
            ino.into_event_stream([0u8; 1024])
        })();
        match r {
            Ok(events) => Some(Watch(Some(events))),
            Err(e) => {
                polling_instead(what, dir, &e);
                None
            }
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<io::Result<Event<OsString>>> {
        use futures_util::StreamExt;
        match &mut self.0 {
            Some(events) => events.next().await,
            None => None,
        }
    }
}

impl Drop for Watch {
    /// Closing an inotify instance can wait for an RCU grace period in the
    /// kernel; on the single-threaded runtime that would stall every
    /// connection, so a blocking-pool thread does it.
    fn drop(&mut self) {
        let Some(events) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(events))),
            Err(_) => drop(events),
        }
    }
}

/// Logs that `what` polls `dir` instead of watching it: at warn the first
/// time in this process (naming the limit that was hit, when the error
/// says), at debug after that.
pub fn polling_instead(what: &'static str, dir: &Path, error: &io::Error) {
    let limit = match error.raw_os_error() {
        // inotify_init's EMFILE is the uid's instances (or, less likely,
        // the process's open files).
        Some(libc::EMFILE) => "fs.inotify.max_user_instances (or the open-file limit)",
        Some(libc::ENOSPC) => "fs.inotify.max_user_watches",
        _ => "none (see the error)",
    };
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!(what, dir = %dir.display(), error = %error, limit, "no inotify; polling");
    } else {
        tracing::warn!(
            what,
            dir = %dir.display(),
            error = %error,
            limit,
            "no inotify; polling instead (said once per process)"
        );
    }
}
