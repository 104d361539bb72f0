//! The server's error type, and its mapping to gRPC status codes.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why the server could not start, serve or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The storage backend failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A key or token file could not be read, created or parsed.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Binding or serving the listen address failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Stored rollouts could not be rebuilt, or a rollout tick failed.
    #[error("rollouts: {0}")]
    Rollouts(String),
    /// An I/O operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        tonic::Status::internal(format!("storage failure: {e}"))
    }
}
