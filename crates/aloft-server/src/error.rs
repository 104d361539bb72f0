//! The server's error type, and its mapping to gRPC status codes.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why the server could not start, serve or stop. Each variant keeps its
/// cause (`source()`), so a caller can both print the whole chain and match
/// on what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The storage backend failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A key or token file could not be read, created or parsed.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: KeyFileError,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS {what}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Tls {
        /// What was being loaded (a file, "private key PEM", ...).
        what: String,
        /// Why it failed, when a library said.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Serving connections failed.
    #[error("transport: {0}")]
    Transport(#[source] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// The stored TrustRoot chain does not verify (altered or corrupt).
    #[error("the stored TrustRoot chain does not verify: {0}")]
    TrustChain(#[source] aloft_protocol::Error),
    /// Stored rollouts could not be rebuilt, or a rollout tick failed.
    #[error("rollouts: {0}")]
    Rollouts(#[source] crate::rollouts::RolloutError),
    /// The payload object store could not be opened, swept or migrated.
    #[error("payloads: {0}")]
    Payloads(#[from] crate::payloads::PayloadError),
    /// An I/O operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ServerError {
    /// A TLS loading failure with its cause.
    pub(crate) fn tls(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Tls {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading, creating or renaming it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It does not hold exactly the 32 bytes of a key.
    #[error("expected 32 bytes, found {0}")]
    Length(usize),
    /// The 32 bytes are not a P-256 scalar.
    #[error("not a valid P-256 private scalar: {0}")]
    Key(#[source] aloft_protocol::Error),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            // Nothing was written: the caller may retry.
            StoreError::Unavailable(_) | StoreError::Schema { .. } => tonic::Status::unavailable(
                format!("storage unavailable, nothing was written; retry later: {e}"),
            ),
            // The connection failed, not the statement: PostgreSQL went
            // away mid-call. No commit was acknowledged to the server, so
            // none is to the caller; one may still have happened.
            StoreError::Postgres(ref pg) if pg.as_db_error().is_none() => {
                tonic::Status::unavailable(format!(
                    "storage unavailable (the database connection failed mid-call; the change \
                     may not have been saved); retry later: {e}"
                ))
            }
            StoreError::Unsupported(what) => tonic::Status::failed_precondition(what),
            _ => tonic::Status::internal(format!("storage failure: {e}")),
        }
    }
}
