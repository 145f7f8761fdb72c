//! Container lifecycle through the Docker Engine API (bollard).
//!
//! [`Engine`] connects lazily: nothing talks to Docker until the first call
//! that needs it, so the waker starts instantly and keeps proxying while
//! Docker is down. The API version is settled once per successful
//! connection (the engine here speaks 1.41; Docker 29 refuses anything
//! below 1.44, so no version can be hard-coded): `DOCKER_API_VERSION` when
//! set, as for the docker CLI; else, on a unix socket, the `Api-Version`
//! header of `GET /_ping`, as the docker CLI does it (0.8 ms here, against
//! 8–9 ms for bollard's negotiation through `GET /version`, a cost every
//! socket-activated waker would pay on its first wake); else bollard's
//! negotiation.
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
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

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

    /// True when the engine refused the API version this client settled on
    /// ("client version 1.41 is too old. Minimum supported API version is
    /// 1.44"): the engine was upgraded (or downgraded) under a running
    /// client, which must settle the version again.
    pub fn is_version_mismatch(&self) -> bool {
        match self {
            DockerError::Api {
                source:
                    BollardError::DockerResponseServerError {
                        status_code: 400,
                        message,
                    },
                ..
            } => is_version_message(message),
            _ => false,
        }
    }
}

/// Docker's words for a refused API version (pure).
fn is_version_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("client version") && (m.contains("too old") || m.contains("too new"))
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
    /// The container's full id (64 hex digits); empty if Docker gave none.
    pub id: String,
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
                let known = match pinned_version() {
                    Some(v) => Some(v),
                    None => match tokio::time::timeout(PING_TIMEOUT, ping_version(path)).await {
                        Ok(Ok(v)) => Some(v),
                        Ok(Err(e)) => {
                            tracing::debug!(host = %self.host, error = %e, "no API version from /_ping; negotiating");
                            None
                        }
                        Err(_) => None,
                    },
                };
                let default = bollard::API_DEFAULT_VERSION;
                let version = match known {
                    Some((major, minor))
                        if (major, minor) < (default.major_version, default.minor_version) =>
                    {
                        bollard::ClientVersion {
                            major_version: major,
                            minor_version: minor,
                        }
                    }
                    _ => *default,
                };
                let client = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &version)
                    .map_err(unreachable)?;
                if known.is_some() {
                    client
                } else {
                    client.negotiate_version().await.map_err(unreachable)?
                }
            }
            None => Docker::connect_with_host(&self.host)
                .map_err(unreachable)?
                .negotiate_version()
                .await
                .map_err(unreachable)?,
        };
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
            id: resp.id.unwrap_or_default(),
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
    /// running already and the client says so (Docker answers 304, which
    /// bollard 0.21 reports as success: then true as well).
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

/// Bound on the `/_ping` that settles the API version (then bollard
/// negotiates instead).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// `DOCKER_API_VERSION` (`1.41`), as the docker CLI honours it.
fn pinned_version() -> Option<(usize, usize)> {
    parse_api_version(&std::env::var("DOCKER_API_VERSION").ok()?)
}

/// `1.41` → (1, 41).
fn parse_api_version(v: &str) -> Option<(usize, usize)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The API version in the engine's answer to `GET /_ping`: status 200 and
/// an `Api-Version` header.
fn parse_ping_version(response: &str) -> Option<(usize, usize)> {
    let mut lines = response.split("\r\n");
    if lines.next()?.split_whitespace().nth(1)? != "200" {
        return None;
    }
    lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("api-version"))
        .and_then(|(_, v)| parse_api_version(v))
}

/// Asks the engine on the unix socket `path` for its API version.
async fn ping_version(path: &str) -> std::io::Result<(usize, usize)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await?;
    // HTTP/1.0: the engine closes after answering, which ends the read.
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    let mut answer = Vec::with_capacity(512);
    (&mut s).take(16 * 1024).read_to_end(&mut answer).await?;
    parse_ping_version(&String::from_utf8_lossy(&answer)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no Api-Version header in the engine's answer to /_ping",
        )
    })
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
    fn version_refusals_are_recognised() {
        // Docker 20.10 and 29's own words.
        assert!(is_version_message(
            "client version 1.99 is too new. Maximum supported API version is 1.41"
        ));
        assert!(is_version_message(
            "client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version"
        ));
        assert!(!is_version_message("No such container: x"));
        assert!(!is_version_message("client version"));
    }

    #[test]
    fn api_version_from_ping() {
        let ok = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\n\r\nOK";
        assert_eq!(parse_ping_version(ok), Some((1, 41)));
        let lower = "HTTP/1.0 200 OK\r\napi-version:1.47\r\n\r\nOK";
        assert_eq!(parse_ping_version(lower), Some((1, 47)));
        assert_eq!(
            parse_ping_version("HTTP/1.1 200 OK\r\n\r\nApi-Version: 1.41"),
            None
        );
        assert_eq!(
            parse_ping_version("HTTP/1.1 500 Internal\r\nApi-Version: 1.41\r\n\r\n"),
            None
        );
        assert_eq!(
            parse_ping_version("HTTP/1.1 200 OK\r\nApi-Version: one\r\n\r\n"),
            None
        );
        assert_eq!(parse_ping_version(""), None);
        assert_eq!(parse_api_version(" 1.44 "), Some((1, 44)));
        assert_eq!(parse_api_version("1"), None);
    }

    /// The version comes from a real exchange on a unix socket.
    #[tokio::test(flavor = "current_thread")]
    async fn ping_reads_the_engine_header() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("fleet-ping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("docker.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 64];
            let n = s.read(&mut req).await.expect("read");
            s.write_all(b"HTTP/1.0 200 OK\r\nApi-Version: 1.43\r\nContent-Length: 2\r\n\r\nOK")
                .await
                .expect("write");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let v = ping_version(path.to_str().expect("utf-8"))
            .await
            .expect("ping");
        assert_eq!(v, (1, 43));
        assert!(
            server
                .await
                .expect("server")
                .starts_with("GET /_ping HTTP/1.0\r\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

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
