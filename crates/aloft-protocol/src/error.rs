use alloc::boxed::Box;
use core::fmt;

use crate::types::{SecurityVersion, UnixTime, Version};

/// Why a protocol object, key or payload chunk was refused.
///
/// Verification failures are deliberately coarse where detail would help an
/// attacker (a bad signature says only that), and precise where an operator
/// needs to act (which field, which version, which time).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid protobuf encoding of the expected message.
    Malformed(&'static str),
    /// A field is missing, the wrong size or out of range.
    InvalidField(&'static str),
    /// An input is larger than its limit (see [`crate::limits`]).
    TooLarge(&'static str),
    /// A public key is not a valid SEC1 P-256 point.
    InvalidKey,
    /// A signature is malformed or does not verify.
    BadSignature,
    /// Fewer distinct trusted keys signed than the threshold requires.
    ThresholdNotMet {
        /// Signatures required.
        needed: u32,
        /// Distinct valid signatures found.
        valid: u32,
    },
    /// A threshold of zero, or above the number of keys, was declared.
    InvalidThreshold,
    /// The object expired at `expires_at`; it is now `now`.
    Expired {
        /// When it expired.
        expires_at: UnixTime,
        /// The time it was checked against.
        now: UnixTime,
    },
    /// A new TrustRoot's version is not exactly the current one plus one.
    VersionNotSuccessor {
        /// Current TrustRoot version.
        current: u32,
        /// Offered TrustRoot version.
        offered: u32,
    },
    /// The directive is bound to another device.
    WrongDevice,
    /// The directive does not echo this session's device nonce.
    NonceMismatch,
    /// The directive names a different manifest (mix-and-match).
    ManifestMismatch,
    /// The release is for another product.
    WrongProduct,
    /// The release does not list this hardware revision.
    IncompatibleHardware,
    /// The release's security version is below the device's floor.
    SecurityVersionBelowFloor {
        /// The device's floor.
        floor: SecurityVersion,
        /// The release's security version.
        offered: SecurityVersion,
    },
    /// The release is not newer than the running firmware.
    NotNewer {
        /// Running version.
        current: Version,
        /// Offered version.
        offered: Version,
    },
    /// The signed server time is older than a time the device already attested.
    ServerTimeRegressed {
        /// The device's attested-time floor.
        floor: UnixTime,
        /// The directive's server time.
        offered: UnixTime,
    },
    /// The image does not fit the slot.
    ImageTooLarge {
        /// Image length from the manifest.
        image_len: u64,
        /// Slot capacity.
        capacity: u64,
    },
    /// A payload chunk failed authentication (tampered, reordered, wrong key or release).
    ChunkAuthentication {
        /// Index of the refused chunk.
        index: u32,
    },
    /// A chunk has the wrong length for its index.
    ChunkLength {
        /// Index of the refused chunk.
        index: u32,
    },
    /// More chunks than the manifest's image length allows.
    PayloadTooLong,
    /// The content key could not be unwrapped with this device's key.
    UnwrapFailed,
    /// A device message is bound to another session's challenge.
    ChallengeMismatch,
    /// A successor in a TrustRoot chain was refused; the device keeps the
    /// root it had.
    ChainLink {
        /// Version the refused link claimed (0 if it did not decode).
        version: u32,
        /// Position in the chain, from 0.
        index: u32,
        /// Why it was refused.
        source: Box<Error>,
    },
    /// A TrustRoot chain update carried no successor.
    EmptyChain,
    /// A device message's sequence number is not the expected one
    /// (replayed, dropped or reordered within the session).
    SequenceMismatch {
        /// The sequence number the session expects next.
        expected: u64,
        /// The message's sequence number.
        got: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed {what}"),
            Self::InvalidField(what) => write!(f, "invalid {what}"),
            Self::TooLarge(what) => write!(f, "{what} exceeds its size limit"),
            Self::InvalidKey => f.write_str("invalid P-256 public key"),
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::ThresholdNotMet { needed, valid } => {
                write!(
                    f,
                    "signature threshold not met: {valid} of {needed} required"
                )
            }
            Self::InvalidThreshold => f.write_str("invalid signature threshold"),
            Self::Expired { expires_at, now } => {
                write!(f, "expired at {} (now {})", expires_at.0, now.0)
            }
            Self::VersionNotSuccessor { current, offered } => write!(
                f,
                "TrustRoot version {offered} does not succeed version {current}"
            ),
            Self::WrongDevice => f.write_str("directive is for another device"),
            Self::NonceMismatch => f.write_str("directive does not echo this session's nonce"),
            Self::ManifestMismatch => f.write_str("directive names a different manifest"),
            Self::WrongProduct => f.write_str("release is for another product"),
            Self::IncompatibleHardware => f.write_str("release does not support this hardware"),
            Self::SecurityVersionBelowFloor { floor, offered } => write!(
                f,
                "security version {} is below the device floor {}",
                offered.0, floor.0
            ),
            Self::NotNewer { current, offered } => {
                write!(f, "version {offered} is not newer than running {current}")
            }
            Self::ServerTimeRegressed { floor, offered } => write!(
                f,
                "server time {} is older than attested time {}",
                offered.0, floor.0
            ),
            Self::ImageTooLarge {
                image_len,
                capacity,
            } => {
                write!(
                    f,
                    "image of {image_len} bytes exceeds slot of {capacity} bytes"
                )
            }
            Self::ChunkAuthentication { index } => {
                write!(f, "payload chunk {index} failed authentication")
            }
            Self::ChunkLength { index } => write!(f, "payload chunk {index} has the wrong length"),
            Self::PayloadTooLong => f.write_str("payload is longer than the manifest allows"),
            Self::UnwrapFailed => f.write_str("content key cannot be unwrapped by this device"),
            Self::ChallengeMismatch => {
                f.write_str("device message is bound to another session's challenge")
            }
            Self::ChainLink {
                version,
                index,
                source,
            } => write!(
                f,
                "TrustRoot chain link {index} (version {version}) refused: {source}"
            ),
            Self::EmptyChain => f.write_str("TrustRoot chain update carries no successor"),
            Self::SequenceMismatch { expected, got } => {
                write!(
                    f,
                    "device message sequence number {got}, expected {expected}"
                )
            }
        }
    }
}

impl Error {
    /// A short name of the rule this error broke, for reports and chain links.
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::Malformed(what) | Self::InvalidField(what) | Self::TooLarge(what) => what,
            Self::InvalidKey => "invalid key",
            Self::BadSignature => "bad signature",
            Self::ThresholdNotMet { .. } => "signature threshold not met",
            Self::InvalidThreshold => "invalid threshold",
            Self::Expired { .. } => "expired",
            Self::VersionNotSuccessor { .. } => "version is not the successor",
            Self::WrongDevice => "wrong device",
            Self::NonceMismatch => "nonce mismatch",
            Self::ManifestMismatch => "manifest mismatch",
            Self::WrongProduct => "wrong product",
            Self::IncompatibleHardware => "incompatible hardware",
            Self::SecurityVersionBelowFloor { .. } => "security version below floor",
            Self::NotNewer { .. } => "not newer",
            Self::ServerTimeRegressed { .. } => "server time regressed",
            Self::ImageTooLarge { .. } => "image too large",
            Self::ChunkAuthentication { .. } => "chunk authentication",
            Self::ChunkLength { .. } => "chunk length",
            Self::PayloadTooLong => "payload too long",
            Self::UnwrapFailed => "unwrap failed",
            Self::ChainLink { source, .. } => source.rule(),
            Self::EmptyChain => "empty chain",
            Self::ChallengeMismatch => "challenge mismatch",
            Self::SequenceMismatch { .. } => "sequence mismatch",
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::ChainLink { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
