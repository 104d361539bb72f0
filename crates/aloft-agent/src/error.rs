//! The agent's error types.

use crate::identity::IdentityError;

/// Why the agent stopped or a session ended.
///
/// [`AgentError::is_fatal`] separates what reconnecting cannot fix (flash
/// failures, a bad configuration) from what it can (network, server).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The identity bundle is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The device core failed (flash error or corrupt state): fatal; the
    /// firmware should reset.
    #[error("device core: {0}")]
    Device(#[source] aloft_device::Error),
    /// The server URL is unusable.
    #[error("invalid server url {0}")]
    InvalidUrl(String),
    /// The TLS configuration (pinned CA) is unusable.
    #[error("TLS configuration: {}", causes(.0))]
    Tls(#[source] tonic::transport::Error),
    /// Connecting failed: TCP, or the TLS handshake (for instance a server
    /// certificate that does not chain to the pinned CA). The message
    /// includes the causes (tonic's own says only "transport error").
    #[error("connect failed: {}", causes(.0))]
    Connect(#[source] tonic::transport::Error),
    /// The server refused or ended a call.
    #[error("server said {code:?}: {message}")]
    Rpc {
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
        /// How long the server asked us to wait before retrying
        /// (`aloft_protocol::wire::RETRY_AFTER_MS`).
        retry_after: Option<std::time::Duration>,
    },
    /// The server did not follow the device protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The session stream ended.
    #[error("the server closed the session")]
    SessionClosed,
    /// The server broke the session protocol (a message out of order, a
    /// timeout): see the wrapped error.
    #[error("session: {0}")]
    Session(#[source] aloft_session::SessionError),
}

/// `e` and its causes joined with `: `, skipping a cause an outer message
/// already says.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl AgentError {
    /// True if reconnecting cannot help: the device core failed, or the
    /// configuration (identity, URL, TLS settings) is unusable.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Identity(_) | Self::Device(_) | Self::InvalidUrl(_) | Self::Tls(_)
        )
    }

    /// The wait the server asked for on a refusal, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Rpc { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<aloft_device::Error> for AgentError {
    fn from(e: aloft_device::Error) -> Self {
        Self::Device(e)
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        let retry_after = s
            .metadata()
            .get(aloft_protocol::wire::RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(std::time::Duration::from_millis);
        Self::Rpc {
            code: s.code(),
            message: s.message().to_owned(),
            retry_after,
        }
    }
}

/// Why an offered update was refused. Each refusal is reported to the
/// server as `INSTALL_FAILED` and nothing is written to flash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The offer lacks its directive or manifest.
    #[error("offer has no {0}")]
    Missing(&'static str),
    /// Directive or manifest verification failed (signature, role, device
    /// binding, nonce, expiry, attested time, product, hardware, security
    /// floor, version, size): see the wrapped error.
    #[error("update refused: {0}")]
    Verify(#[source] aloft_protocol::Error),
    /// The content key could not be unwrapped with this device's key.
    #[error("content key refused: {0}")]
    Unwrap(#[source] aloft_protocol::Error),
    /// The device core refused to start the install.
    #[error("install refused: {0}")]
    Install(#[source] aloft_device::Error),
    /// A payload chunk was refused (authentication, length, past the end):
    /// nothing of it was written and the install was abandoned.
    #[error("payload refused: {0}")]
    Chunk(#[source] aloft_device::Error),
    /// The installed image does not hash to the manifest's digest.
    #[error("image digest mismatch after download")]
    Digest,
}
