//! The one error type of the release tooling.

use std::path::PathBuf;

/// Why a release-tooling step was refused or failed. Each variant names the
/// file or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A key file is missing, unreadable, has loose permissions or does not
    /// hold a P-256 scalar.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file this step creates already exists; nothing was overwritten.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A command-line value is malformed (version, key, fault, ...).
    #[error("invalid {what}: {reason}")]
    InvalidArg {
        /// The argument.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A file does not hold what it should (bundle, identity, TrustRoot).
    #[error("{path} is not a valid {what}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A signature, TrustRoot or payload check refused the input.
    #[error("{what}: {source}")]
    Refused {
        /// What was being checked.
        what: &'static str,
        /// The protocol's reason.
        source: aloft_protocol::Error,
    },
    /// The device core refused or failed (layout, flash, provisioning).
    #[error("device flash: {0}")]
    Device(#[source] aloft_device::Error),
    /// Building the firmware failed.
    #[error("building the firmware failed: {0}")]
    Build(String),
    /// Generating TLS certificates failed.
    #[error("TLS certificate generation failed: {0}")]
    Tls(#[source] rcgen::Error),
    /// Encoding a JSON summary failed.
    #[error("encoding {what} as JSON: {source}")]
    Json {
        /// What was being encoded.
        what: &'static str,
        /// serde_json's reason.
        source: serde_json::Error,
    },
}

impl ReleaseError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A protocol refusal while checking `what`.
    pub fn refused(what: &'static str) -> impl FnOnce(aloft_protocol::Error) -> Self {
        move |source| Self::Refused { what, source }
    }
}
