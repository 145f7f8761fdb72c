//! PLACEHOLDER for the status branch (merged from helper A).
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_STATUS_PATH: &str = "/status";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmStatus {
    pub pool: String,
    pub accepted_conn: u64,
    pub listen_queue: u64,
    pub active_processes: u64,
    pub idle_processes: u64,
    pub total_processes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot connect to {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("php-fpm at {path} has no status page at {status_path}: {answer}")]
    NotEnabled { path: PathBuf, status_path: String, answer: String },
}

impl StatusError {
    pub fn is_not_enabled(&self) -> bool {
        matches!(self, StatusError::NotEnabled { .. })
    }
}

pub async fn query(socket: &Path, status_path: &str, timeout: Duration) -> Result<FpmStatus, StatusError> {
    let _ = (status_path, timeout);
    Err(StatusError::Connect { path: socket.to_owned(), reason: "stub".into() })
}
