//! Reading a device's identity bundle (`identity.pb`, written by
//! `aloft device provision`) for what the boot path needs: the device id,
//! its attributes and the TrustRoot that verifies images.

use std::path::{Path, PathBuf};

use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{UnixTime, pb};

/// Largest identity file read (a bundle is a few KiB).
pub const MAX_IDENTITY_LEN: u64 = 256 * 1024;

/// Why an identity bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read.
    #[error("identity bundle {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an identity bundle.
    #[error("identity bundle {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Reads and decodes an identity bundle.
pub fn read_bundle(path: &Path) -> Result<pb::IdentityBundle, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let invalid = |reason: String| IdentityError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_IDENTITY_LEN {
        return Err(invalid(format!("{len} bytes is too large")));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let bundle = pb::IdentityBundle::decode(bytes.as_slice())
        .map_err(|e| invalid(format!("does not decode ({e})")))?;
    if bundle.device_id.is_empty() {
        return Err(invalid("no device id".into()));
    }
    Ok(bundle)
}

/// The bundle's TrustRoot, verified as a first TrustRoot **without expiry**
/// (at time zero), as the boot path does: an expired TrustRoot must not
/// stop a device from booting the image it already runs; installs check
/// expiry with the attested time.
pub fn boot_trust_root(
    bundle: &pb::IdentityBundle,
    path: &Path,
) -> Result<VerifiedTrustRoot, IdentityError> {
    let envelope = bundle
        .trust_root
        .as_ref()
        .ok_or_else(|| IdentityError::Invalid {
            path: path.to_owned(),
            reason: "no TrustRoot".into(),
        })?;
    VerifiedTrustRoot::from_initial(envelope, UnixTime(0)).map_err(|e| IdentityError::Invalid {
        path: path.to_owned(),
        reason: format!("TrustRoot refused: {e}"),
    })
}
