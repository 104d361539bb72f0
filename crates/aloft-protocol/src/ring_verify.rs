//! Signature verification with `ring` (feature `ring-verify`, std only): the
//! same acceptance rule as [`PublicKey::verify`], several times faster, for
//! servers that verify every device check-in. Devices keep `p256`.
//!
//! # Equivalence with the `p256` verifier
//!
//! [`PublicKey::verify`] checks the ECDSA signature `r || s` against the
//! prehash `SHA-256(domain tag || message)`. ring's
//! `ECDSA_P256_SHA256_FIXED` hashes its input with SHA-256 itself, so it is
//! fed `domain tag || message`: the digest, and so the scalar `e`, is the
//! same. Both take the fixed 64-byte big-endian `r || s` encoding, both
//! refuse `r` or `s` outside `1..n`, and neither enforces low-S (a high-S
//! signature `(r, n - s)` is accepted by both). The differential test
//! (`tests/ring_verify.rs`) holds them to that on valid, tampered, wrong-key,
//! wrong-domain, high-S and malformed signatures.

use alloc::vec::Vec;
use core::fmt;

use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

use crate::Error;
use crate::keys::{Domain, PublicKey, Signature, SignatureVerifier};

/// Length of a SEC1 uncompressed P-256 point (the only form ring's ECDSA takes).
const UNCOMPRESSED_LEN: usize = 65;

/// A P-256 public key prepared for verification with ring.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RingPublicKey {
    uncompressed: [u8; UNCOMPRESSED_LEN],
}

impl RingPublicKey {
    /// The ring form of `key` (its SEC1 uncompressed encoding).
    pub fn new(key: &PublicKey) -> Self {
        let point = key.inner().to_sec1_point(false);
        let mut uncompressed = [0u8; UNCOMPRESSED_LEN];
        uncompressed.copy_from_slice(point.as_bytes());
        Self { uncompressed }
    }

    /// Verifies `signature` over `message` in `domain`; accepts exactly what
    /// [`PublicKey::verify`] accepts. Errors: [`Error::BadSignature`].
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), Error> {
        let tag = domain.tag();
        let mut signed = Vec::with_capacity(tag.len() + message.len());
        signed.extend_from_slice(tag);
        signed.extend_from_slice(message);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.uncompressed[..])
            .verify(&signed, signature.as_bytes())
            .map_err(|_| Error::BadSignature)
    }
}

impl From<&PublicKey> for RingPublicKey {
    fn from(key: &PublicKey) -> Self {
        Self::new(key)
    }
}

impl SignatureVerifier for RingPublicKey {
    fn verify_in(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), Error> {
        self.verify(domain, message, signature)
    }
}

impl fmt::Debug for RingPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match PublicKey::from_sec1(&self.uncompressed) {
            Ok(key) => write!(f, "RingPublicKey({})", key.key_id()),
            Err(_) => f.write_str("RingPublicKey(?)"),
        }
    }
}
