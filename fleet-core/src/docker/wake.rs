//! Waking a container: start or unpause it (fleet-waker), and watch that it
//! does not die while php-fpm is coming up.
//!
//! Waiting for php-fpm's socket is the waker's business (`crate::waker`):
//! this module only speaks Docker.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;

use super::{ContainerState, DockerError, Engine};

/// What [`Engine::make_running`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeAction {
    /// It was running already (php-fpm may just be slow or restarting).
    AlreadyRunning,
    /// It was created or exited; we started it.
    Started,
    /// It was paused; we unpaused it.
    Unpaused,
    /// Docker is restarting it; we wait.
    Restarting,
}

impl WakeAction {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WakeAction::AlreadyRunning => "already running",
            WakeAction::Started => "started",
            WakeAction::Unpaused => "unpaused",
            WakeAction::Restarting => "restarting",
        }
    }
}

/// Why a container could not be made to run.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("container {container} is {state} and cannot be started")]
    Unwakeable {
        container: String,
        state: ContainerState,
    },
    #[error("container {container} exited while starting (exit code {exit_code}{detail})")]
    Exited {
        container: String,
        exit_code: i64,
        /// `", error: …"` from Docker, or empty.
        detail: String,
        /// The container's last start as Docker reported it after the
        /// death (None if unknown): older than a wake means the wake did
        /// not start this life.
        started_at: Option<SystemTime>,
    },
}

impl WakeError {
    /// True for a death whose container was last started before `t`.
    pub fn started_before(&self, t: SystemTime) -> bool {
        matches!(self, WakeError::Exited { started_at: Some(s), .. } if *s < t)
    }
}

impl Engine {
    /// Makes `container` run: starts it when created or exited, unpauses it
    /// when paused, does nothing when running or restarting. A missing
    /// container is [`DockerError::NoSuchContainer`].
    ///
    /// One API call in the usual cases: `start` first, which Docker answers
    /// with 204 when it started the container and 304 when it was running
    /// (or restarting) already. Only when Docker refuses with 409 (paused,
    /// or not startable: dead, being removed) is the container inspected,
    /// then unpaused or reported. Inspecting first would cost every cold
    /// wake one more round trip to the engine.
    pub async fn make_running(&self, container: &str) -> Result<WakeAction, WakeError> {
        match self.make_running_once(container).await {
            Err(WakeError::Docker(e)) if e.is_version_mismatch() => {
                // The engine changed under us: settle the version again.
                tracing::info!(host = %self.host(), container, error = %crate::exit::chain(&e), "Docker refused the API version; settling it again");
                self.reset().await;
                self.make_running_once(container).await
            }
            r => r,
        }
    }

    async fn make_running_once(&self, container: &str) -> Result<WakeAction, WakeError> {
        match self.start_reporting(container).await {
            Ok(true) => return Ok(WakeAction::Started),
            Ok(false) => return Ok(WakeAction::AlreadyRunning),
            Err(DockerError::Api {
                source:
                    BollardError::DockerResponseServerError {
                        status_code: 409, ..
                    },
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let info = self.inspect(container).await?;
        match info.state {
            ContainerState::Running => Ok(WakeAction::AlreadyRunning),
            ContainerState::Restarting => Ok(WakeAction::Restarting),
            ContainerState::Paused => {
                self.unpause(container).await?;
                Ok(WakeAction::Unpaused)
            }
            ContainerState::Created | ContainerState::Exited | ContainerState::Stopping => {
                self.start(container).await?;
                Ok(WakeAction::Started)
            }
            state @ (ContainerState::Dead | ContainerState::Removing | ContainerState::Unknown) => {
                Err(WakeError::Unwakeable {
                    container: container.to_owned(),
                    state,
                })
            }
        }
    }

    /// Resolves when `container` dies at or after `since` (a Docker `die`
    /// event), with the exit code and Docker's error text. Never resolves
    /// when the container keeps running, or when the event stream cannot be
    /// had (the caller's timeout covers that case).
    ///
    /// `since` replays events from that moment, so a container that died
    /// before the stream was established is still seen.
    pub async fn watch_death(&self, container: &str, since: SystemTime) -> WakeError {
        let pending = std::future::pending::<WakeError>();
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(container, error = %e, "no Docker event stream");
                return pending.await;
            }
        };
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut filters = HashMap::new();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        filters.insert("container".to_owned(), vec![container.to_owned()]);
        filters.insert("event".to_owned(), vec!["die".to_owned()]);
        let opts = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        let mut events = client.events(Some(opts));
        while let Some(ev) = events.next().await {
            match ev {
                Ok(msg) => {
                    let died_at = msg
                        .time_nano
                        .and_then(|n| u64::try_from(n).ok())
                        .map(|n| UNIX_EPOCH + Duration::from_nanos(n));
                    let attrs = msg.actor.and_then(|a| a.attributes).unwrap_or_default();
                    // The filter matches ids and names; make sure it is ours.
                    if attrs.get("name").is_some_and(|n| n != container) {
                        continue;
                    }
                    let exit_code = attrs
                        .get("exitCode")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1);
                    let info = self.inspect(container).await.ok();
                    // Docker records `die` a moment after the state turns
                    // "exited", so a wake that began in between replays the
                    // previous life's death. A container started after the
                    // event is a new life: that event is not about it.
                    if let Some(info) = &info {
                        let alive = matches!(
                            info.state,
                            ContainerState::Running | ContainerState::Restarting
                        );
                        if alive && is_stale_death(died_at, info.started_at) {
                            tracing::debug!(container, "ignoring the previous life's die event");
                            continue;
                        }
                    }
                    let started_at = info.as_ref().and_then(|i| i.started_at);
                    let detail = info
                        .and_then(|i| i.error)
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default();
                    return WakeError::Exited {
                        container: container.to_owned(),
                        exit_code,
                        detail,
                        started_at,
                    };
                }
                Err(e) => {
                    tracing::debug!(container, error = %e, "Docker event stream failed");
                    break;
                }
            }
        }
        pending.await
    }
}

/// A die event at `died_at` is stale for a container last started at
/// `started_at` when the start came after the death.
fn is_stale_death(died_at: Option<SystemTime>, started_at: Option<SystemTime>) -> bool {
    match (died_at, started_at) {
        (Some(died), Some(started)) => started > died,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_tells_whether_its_life_began_before_a_wake() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let died = |started_at| WakeError::Exited {
            container: "c".into(),
            exit_code: 137,
            detail: String::new(),
            started_at,
        };
        assert!(died(Some(t(10))).started_before(t(11)));
        assert!(!died(Some(t(12))).started_before(t(11)));
        assert!(!died(None).started_before(t(11)));
        let other = WakeError::Unwakeable {
            container: "c".into(),
            state: ContainerState::Dead,
        };
        assert!(!other.started_before(t(11)));
    }

    #[test]
    fn stale_death_is_a_death_before_the_last_start() {
        let t = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert!(is_stale_death(t(10), t(11)));
        assert!(!is_stale_death(t(11), t(10)));
        assert!(!is_stale_death(None, t(10)));
        assert!(!is_stale_death(t(10), None));
    }
}
