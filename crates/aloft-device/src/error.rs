use core::fmt;

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

/// Why a device operation was refused or failed.
///
/// Flash errors keep only their generic kind so the type does not depend on
/// the flash driver; protocol refusals (wrong hardware, security floor,
/// chunk authentication, ...) carry the [`aloft_protocol::Error`] unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The flash driver failed (power loss, alignment, bounds, ...).
    Flash(NorFlashErrorKind),
    /// A protocol-level refusal: see the wrapped error.
    Protocol(aloft_protocol::Error),
    /// The layout does not fit the flash or its geometry; names the rule broken.
    InvalidLayout(&'static str),
    /// No valid state record was found: provision the device first.
    NotProvisioned,
    /// Neither slot holds an image that verifies: nothing may be started.
    NoBootableSlot,
    /// A trial image is pending: boot and confirm (or let it roll back) first.
    TrialPending,
    /// Another release is being installed; finish or abort it first.
    InstallInProgress,
    /// `finish` was called before every chunk was written.
    Incomplete,
    /// The written image does not hash to the manifest's digest; slot not marked.
    DigestMismatch,
    /// The manifest envelope does not fit the slot's manifest area.
    ManifestTooLarge,
    /// `confirm` was called while not running a trial image.
    NotInTrial,
    /// The stored TrustRoot no longer verifies: the device boots and runs,
    /// but cannot verify updates until the chain is sent again.
    TrustRootUnreadable,
    /// A TrustRoot does not fit the layout's TrustRoot area.
    TrustRootTooLarge {
        /// Its encoded length.
        len: usize,
        /// The room in one copy.
        room: usize,
    },
    /// The offer was verified under another TrustRoot than the device's
    /// current one: verify it again.
    OfferFromAnotherRoot,
    /// The release's payload encoding is not one this device installs (a
    /// device that requires encryption offered a signature-only release, or
    /// one that cannot decrypt offered an encrypted one). Nothing was written.
    PayloadRefused {
        /// The release's encoding.
        offered: aloft_protocol::pb::PayloadEncoding,
        /// What this device installs.
        policy: crate::PayloadPolicy,
    },
}

impl Error {
    pub(crate) fn flash<E: NorFlashError>(e: E) -> Self {
        Self::Flash(e.kind())
    }
}

impl From<aloft_protocol::Error> for Error {
    fn from(e: aloft_protocol::Error) -> Self {
        Self::Protocol(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flash(kind) => write!(f, "flash error: {kind}"),
            Self::Protocol(e) => write!(f, "{e}"),
            Self::InvalidLayout(rule) => write!(f, "invalid flash layout: {rule}"),
            Self::NotProvisioned => f.write_str("no valid device state: provision the device"),
            Self::NoBootableSlot => f.write_str("no slot holds a verified image"),
            Self::TrialPending => f.write_str("a trial image is pending; reboot and confirm first"),
            Self::InstallInProgress => {
                f.write_str("another release is being installed; finish or abort it")
            }
            Self::Incomplete => f.write_str("not every chunk of the image was written"),
            Self::DigestMismatch => f.write_str("written image does not match the manifest digest"),
            Self::ManifestTooLarge => {
                f.write_str("manifest envelope exceeds the slot's manifest area")
            }
            Self::NotInTrial => f.write_str("not running a trial image"),
            Self::TrustRootUnreadable => f.write_str(
                "the stored TrustRoot does not verify; updates are refused until the server sends the chain again",
            ),
            Self::TrustRootTooLarge { len, room } => write!(
                f,
                "TrustRoot of {len} bytes does not fit the layout's TrustRoot area ({room} bytes)"
            ),
            Self::OfferFromAnotherRoot => f.write_str(
                "the offer was verified under another TrustRoot than the device's current one",
            ),
            Self::PayloadRefused { offered, policy } => match offered {
                aloft_protocol::pb::PayloadEncoding::SignatureOnly => write!(
                    f,
                    "this device requires encrypted releases ({}) and refuses a signature-only one: publish an encrypted release for its product",
                    policy.as_str()
                ),
                aloft_protocol::pb::PayloadEncoding::Encrypted => write!(
                    f,
                    "this device cannot decrypt ({}{}) and refuses an encrypted release: publish a signature-only release for its product",
                    policy.as_str(),
                    if cfg!(feature = "decrypt") { "" } else { ", built without decryption" }
                ),
            },
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Protocol(e) => Some(e),
            _ => None,
        }
    }
}
