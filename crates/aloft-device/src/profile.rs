//! Capability profiles: which payload encodings a device installs.
//!
//! A release is encrypted (AES-256-GCM, the default) or signature-only
//! (plaintext chunks with Merkle proofs, for processors that cannot
//! decrypt; `aloft_protocol::signed_chunks`). Both keep every signature,
//! expiry, nonce and anti-rollback check. A device's [`PayloadPolicy`] is
//! fixed when its firmware is built ([`crate::DeviceConfig::payloads`]):
//! [`crate::Device::verify_offer`] refuses an offer the policy does not
//! allow before anything is written, and the installer re-checks it.
//!
//! The `decrypt` cargo feature (default) compiles the decrypting installer.
//! A build without it links no AES-GCM code at all, and only installs
//! signature-only releases whatever its policy says.

use aloft_protocol::pb;

/// Which payload encodings a device installs (`pb::PayloadSupport` on the
/// wire, in its registration request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadPolicy {
    /// Only encrypted releases: a device whose data needs encryption. A
    /// signature-only offer is refused before anything is written.
    RequireEncrypted,
    /// Encrypted and signature-only releases.
    EncryptedOrSignatureOnly,
    /// Only signature-only releases: a device that cannot decrypt.
    SignatureOnly,
}

impl Default for PayloadPolicy {
    /// [`PayloadPolicy::RequireEncrypted`] when the `decrypt` feature is on
    /// (today's behaviour), [`PayloadPolicy::SignatureOnly`] without it.
    fn default() -> Self {
        if cfg!(feature = "decrypt") {
            Self::RequireEncrypted
        } else {
            Self::SignatureOnly
        }
    }
}

impl PayloadPolicy {
    /// Whether a release of `encoding` may be installed under this policy
    /// by this build (an encrypted one needs the `decrypt` feature too).
    pub fn accepts(self, encoding: pb::PayloadEncoding) -> bool {
        match encoding {
            pb::PayloadEncoding::Encrypted => {
                cfg!(feature = "decrypt") && self != Self::SignatureOnly
            }
            pb::PayloadEncoding::SignatureOnly => self != Self::RequireEncrypted,
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::PayloadSupport {
        match self {
            Self::RequireEncrypted => pb::PayloadSupport::EncryptedOnly,
            Self::EncryptedOrSignatureOnly => pb::PayloadSupport::EncryptedOrSignatureOnly,
            Self::SignatureOnly => pb::PayloadSupport::SignatureOnly,
        }
    }

    /// From the wire enum.
    pub fn from_pb(support: pb::PayloadSupport) -> Self {
        match support {
            pb::PayloadSupport::EncryptedOnly => Self::RequireEncrypted,
            pb::PayloadSupport::EncryptedOrSignatureOnly => Self::EncryptedOrSignatureOnly,
            pb::PayloadSupport::SignatureOnly => Self::SignatureOnly,
        }
    }

    /// A word for messages: `encrypted-only`, `encrypted-or-signature-only`,
    /// `signature-only`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RequireEncrypted => "encrypted-only",
            Self::EncryptedOrSignatureOnly => "encrypted-or-signature-only",
            Self::SignatureOnly => "signature-only",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_accept_what_they_say() {
        use PayloadPolicy as P;
        use pb::PayloadEncoding::{Encrypted, SignatureOnly};
        assert!(!P::RequireEncrypted.accepts(SignatureOnly));
        assert!(P::EncryptedOrSignatureOnly.accepts(SignatureOnly));
        assert!(P::SignatureOnly.accepts(SignatureOnly));
        assert!(!P::SignatureOnly.accepts(Encrypted));
        assert_eq!(
            P::RequireEncrypted.accepts(Encrypted),
            cfg!(feature = "decrypt")
        );
        for p in [
            P::RequireEncrypted,
            P::EncryptedOrSignatureOnly,
            P::SignatureOnly,
        ] {
            assert_eq!(P::from_pb(p.to_pb()), p);
        }
    }
}
