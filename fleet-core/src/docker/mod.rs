//! Container lifecycle through the Docker Engine API (bollard).
//!
//! [`Engine`] connects lazily: nothing talks to Docker until the first call
//! that needs it, so the waker starts instantly and keeps proxying while
//! Docker is down. The API version is negotiated once per successful
//! connection (the engine here speaks 1.41; newer engines refuse old
//! versions, so neither can be hard-coded).
//!
//! Sub-modules add the operations one binary needs; this module holds what
//! every binary shares: connecting, inspecting and the plain verbs.

pub mod reap;
pub mod wake;

use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{InspectContainerOptions, StopContainerOptions};
use tokio::sync::Mutex;

/// Default engine address when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds bollard waits for any one API response. Callers bound their own
/// waits more tightly (e.g. the waker's `--start-timeout`).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// What can go wrong talking to Docker. Every variant names the container
/// (or the engine address) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {host}")]
    Unreachable {
        host: String,
        #[source]
        source: BollardError,
    },
    #[error("container {container} does not exist")]
    NoSuchContainer { container: String },
    #[error("Docker could not {op} container {container}")]
    Api {
        op: &'static str,
        container: String,
        #[source]
        source: BollardError,
    },
}

impl DockerError {
    /// True when the engine itself could not be reached (exit code 69).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. })
    }
}

/// The state of a container as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Stopping,
    Unknown,
}

impl ContainerState {
    /// Docker's own word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Stopping => "stopping",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Engine::inspect`] tells about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub state: ContainerState,
    /// When the container was last started (None if never).
    pub started_at: Option<SystemTime>,
    /// Docker's error text for the last start, if any.
    pub error: Option<String>,
    pub exit_code: Option<i64>,
}

/// A lazily connected Docker engine client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    host: String,
    client: Mutex<Option<Docker>>,
}

impl Engine {
    /// An engine at `DOCKER_HOST` (or the default socket). Does not connect.
    pub fn from_env() -> Self {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self::new(host)
    }

    /// An engine at `host` (`unix:///path`, `tcp://…`). Does not connect.
    pub fn new(host: impl Into<String>) -> Self {
        Engine {
            host: host.into(),
            client: Mutex::new(None),
        }
    }

    /// The engine address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A connected client, negotiating the API version on first use. A failed
    /// attempt is not cached: the next call tries again.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let unreachable = |source| DockerError::Unreachable {
            host: self.host.clone(),
            source,
        };
        let client = match self.host.strip_prefix("unix://") {
            Some(path) => {
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            None => Docker::connect_with_host(&self.host),
        }
        .map_err(unreachable)?;
        let client = client.negotiate_version().await.map_err(unreachable)?;
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection, so the next call reconnects (after the engine
    /// restarted, say).
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Maps a bollard error of operation `op` on `container` to ours.
    pub fn classify(&self, op: &'static str, container: &str, err: BollardError) -> DockerError {
        match err {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NoSuchContainer {
                container: container.to_owned(),
            },
            BollardError::DockerResponseServerError { .. }
            | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. } => DockerError::Api {
                op,
                container: container.to_owned(),
                source: err,
            },
            other => DockerError::Unreachable {
                host: self.host.clone(),
                source: other,
            },
        }
    }

    /// Inspects `container`.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInfo, DockerError> {
        let client = self.client().await?;
        let resp = client
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.classify("inspect", container, e))?;
        let st = resp.state.unwrap_or_default();
        let state = match st.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
            Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
            Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
            Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
            Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
            Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
            Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
            Some(ContainerStateStatusEnum::STOPPING) => ContainerState::Stopping,
            Some(ContainerStateStatusEnum::EMPTY) | None => ContainerState::Unknown,
        };
        Ok(ContainerInfo {
            state,
            started_at: st.started_at.as_deref().and_then(parse_docker_time),
            error: st.error.filter(|e| !e.is_empty()),
            exit_code: st.exit_code,
        })
    }

    /// Starts `container`. Already running is success (Docker answers 304).
    pub async fn start(&self, container: &str) -> Result<(), DockerError> {
        self.start_reporting(container).await.map(|_| ())
    }

    /// Starts `container`: true when Docker started it, false when it was
    /// running already (Docker answers 304).
    pub async fn start_reporting(&self, container: &str) -> Result<bool, DockerError> {
        let client = self.client().await?;
        match client.start_container(container, None).await {
            Ok(()) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(false),
            Err(e) => Err(self.classify("start", container, e)),
        }
    }

    /// Unpauses `container`.
    pub async fn unpause(&self, container: &str) -> Result<(), DockerError> {
        let client = self.client().await?;
        client
            .unpause_container(container)
            .await
            .map_err(|e| self.classify("unpause", container, e))
    }

    /// Pauses `container`.
    pub async fn pause(&self, container: &str) -> Result<(), DockerError> {
        let client = self.client().await?;
        client
            .pause_container(container)
            .await
            .map_err(|e| self.classify("pause", container, e))
    }

    /// Stops `container`, giving it `grace` before SIGKILL. Already stopped is
    /// success (Docker answers 304).
    pub async fn stop(&self, container: &str, grace: Duration) -> Result<(), DockerError> {
        let client = self.client().await?;
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(secs),
            ..Default::default()
        };
        match client.stop_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.classify("stop", container, e)),
        }
    }
}

/// Parses Docker's RFC 3339 timestamps; the zero time (`0001-01-01…`, never
/// started) and anything unparsable is `None`.
pub fn parse_docker_time(s: &str) -> Option<SystemTime> {
    if s.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times() {
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        let t = parse_docker_time("2026-11-23T19:42:50.123456789Z").expect("parses");
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        assert_eq!(secs, 1_795_462_970);
        assert_eq!(parse_docker_time("garbage"), None);
    }
}
