//! P-256 keys and ECDSA signatures over SHA-256, with role domains.
//!
//! Every signature covers `SHA-256(domain tag || message)`, so a signature
//! made for one kind of object never verifies as another (role confusion).

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{self, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::{Error, KeyId};

/// What a signature is for. Part of every signed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A TrustRoot, signed by root keys.
    TrustRoot,
    /// A ReleaseManifest, signed by release keys.
    ReleaseManifest,
    /// A Directive, signed by a server key.
    Directive,
    /// A device's registration request, signed by the key it asks to be
    /// registered with (proof of possession; [`crate::registration`]).
    DeviceRegistration,
    /// A device's session message, signed by its device key.
    DeviceMessage,
    /// The server's audit log head (`aloft_protocol::audit`), signed by a
    /// server key.
    AuditHead,
}

impl Domain {
    /// The bytes prefixed to the message before hashing.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Self::TrustRoot => b"aloft/v1/trust-root\0",
            Self::ReleaseManifest => b"aloft/v1/release-manifest\0",
            Self::Directive => b"aloft/v1/directive\0",
            Self::DeviceRegistration => b"aloft/v1/device-registration\0",
            Self::DeviceMessage => b"aloft/v1/device-message\0",
            Self::AuditHead => b"aloft/v1/audit-head\0",
        }
    }

    fn prehash(self, message: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.tag());
        h.update(message);
        h.finalize().into()
    }
}

/// A P-256 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Length of the SEC1 compressed encoding.
    pub const COMPRESSED_LEN: usize = 33;

    /// Parses a SEC1 encoded point (compressed or uncompressed).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, Error> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidKey)
    }

    /// SEC1 compressed encoding (33 bytes).
    pub fn to_sec1_compressed(&self) -> [u8; 33] {
        let point = self.0.to_sec1_point(true);
        let mut out = [0u8; 33];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// The key's id: SHA-256 of its compressed encoding.
    pub fn key_id(&self) -> KeyId {
        KeyId::from_bytes(Sha256::digest(self.to_sec1_compressed()).into())
    }

    /// Verifies `signature` over `message` in `domain`.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), Error> {
        self.verify_prehash(&domain.prehash(message), signature)
    }

    /// Verifies `signature` over a raw SHA-256 `prehash`, with no domain tag.
    /// Crate-internal: every public path goes through a [`Domain`]; this is
    /// the shared core that the known-answer tests exercise.
    pub(crate) fn verify_prehash(
        &self,
        prehash: &[u8; 32],
        signature: &Signature,
    ) -> Result<(), Error> {
        let sig = ecdsa::Signature::from_slice(&signature.0).map_err(|_| Error::BadSignature)?;
        self.0
            .verify_prehash(prehash, &sig)
            .map_err(|_| Error::BadSignature)
    }

    /// The underlying `p256` key, for ECDH.
    pub(crate) fn inner(&self) -> &VerifyingKey {
        &self.0
    }
}

/// Something that checks a signature over a message in a [`Domain`]: the
/// `p256` [`PublicKey`] (the reference, used on devices) or, with feature
/// `ring-verify`, [`crate::ring_verify::RingPublicKey`] (faster, for servers).
/// Implementations accept exactly the same signatures.
pub trait SignatureVerifier {
    /// Verifies `signature` (`r || s`) over `SHA-256(domain tag || message)`.
    fn verify_in(&self, domain: Domain, message: &[u8], signature: &Signature)
    -> Result<(), Error>;
}

impl SignatureVerifier for PublicKey {
    fn verify_in(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), Error> {
        self.verify(domain, message, signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// A fixed-size ECDSA P-256 signature, `r || s`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Length in bytes.
    pub const LEN: usize = 64;

    /// Copies a 64-byte `r || s` signature.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        bytes.try_into().map(Self).map_err(|_| Error::BadSignature)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(..)")
    }
}

/// A P-256 private key: signs (feature `sign`) and unwraps content keys.
/// Never printed; `p256` wipes it on drop.
#[derive(Clone)]
pub struct SecretKey(p256::SecretKey);

impl SecretKey {
    /// Length of the raw scalar.
    pub const LEN: usize = 32;

    /// From a 32-byte big-endian scalar.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        p256::SecretKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidKey)
    }

    /// The raw scalar. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(VerifyingKey::from(self.0.public_key()))
    }

    /// A fresh key from the operating system's RNG.
    #[cfg(feature = "std")]
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate as _;
        Self(p256::SecretKey::generate())
    }

    /// A fresh key from `rng`.
    pub fn generate_from_rng<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        use p256::elliptic_curve::Generate as _;
        Self(p256::SecretKey::generate_from_rng(rng))
    }

    /// Signs `message` in `domain` (deterministic, RFC 6979).
    #[cfg(feature = "sign")]
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        self.sign_prehash(&domain.prehash(message))
    }

    /// Signs a raw SHA-256 `prehash` (RFC 6979), with no domain tag.
    /// Crate-internal core of [`Self::sign`], exercised by the known-answer tests.
    #[cfg(feature = "sign")]
    pub(crate) fn sign_prehash(&self, prehash: &[u8; 32]) -> Signature {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let key = ecdsa::SigningKey::from(&self.0);
        let sig: ecdsa::Signature = key
            .sign_prehash(prehash)
            .expect("a 32-byte prehash always signs");
        Signature(sig.to_bytes().into())
    }

    /// The underlying `p256` key, for ECDH.
    pub(crate) fn inner(&self) -> &p256::SecretKey {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key().key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6979, appendix A.2.5 ("ECDSA, 256 Bits (Prime Field)"): the
    /// private key, its public key, and the deterministic SHA-256 signatures
    /// of the messages "sample" and "test".
    mod rfc6979_a25 {
        pub const X: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
        pub const UX: &str = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6";
        pub const UY: &str = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
        /// (message, r, s) with SHA-256.
        pub const VECTORS: [(&str, &str, &str); 2] = [
            (
                "sample",
                "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
                "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
            ),
            (
                "test",
                "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
                "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
            ),
        ];
    }

    fn rfc_public_key() -> PublicKey {
        let mut sec1 = hex::decode("04").unwrap();
        sec1.extend(hex::decode(rfc6979_a25::UX).unwrap());
        sec1.extend(hex::decode(rfc6979_a25::UY).unwrap());
        PublicKey::from_sec1(&sec1).unwrap()
    }

    fn rfc_signature(r: &str, s: &str) -> Signature {
        let mut rs = hex::decode(r).unwrap();
        rs.extend(hex::decode(s).unwrap());
        Signature::from_slice(&rs).unwrap()
    }

    #[test]
    fn rfc6979_public_key_matches() {
        let secret = SecretKey::from_slice(&hex::decode(rfc6979_a25::X).unwrap()).unwrap();
        assert_eq!(secret.public_key(), rfc_public_key());
        // Compressed encoding round-trips to the same key.
        let compressed = rfc_public_key().to_sec1_compressed();
        assert_eq!(PublicKey::from_sec1(&compressed).unwrap(), rfc_public_key());
    }

    #[test]
    fn rfc6979_signatures_verify() {
        let key = rfc_public_key();
        for (msg, r, s) in rfc6979_a25::VECTORS {
            let prehash: [u8; 32] = Sha256::digest(msg.as_bytes()).into();
            let sig = rfc_signature(r, s);
            assert_eq!(key.verify_prehash(&prehash, &sig), Ok(()), "{msg}");
            // The other message's hash must not verify.
            let other: [u8; 32] = Sha256::digest(b"other").into();
            assert_eq!(
                key.verify_prehash(&other, &sig),
                Err(Error::BadSignature),
                "{msg}"
            );
            // Nor any single flipped bit of the signature.
            for i in [0, 31, 32, 63] {
                let mut bad = *sig.as_bytes();
                bad[i] ^= 0x01;
                let bad = Signature::from_slice(&bad).unwrap();
                assert_eq!(key.verify_prehash(&prehash, &bad), Err(Error::BadSignature));
            }
        }
    }

    #[cfg(feature = "sign")]
    #[test]
    fn rfc6979_signing_is_deterministic_and_matches() {
        let secret = SecretKey::from_slice(&hex::decode(rfc6979_a25::X).unwrap()).unwrap();
        for (msg, r, s) in rfc6979_a25::VECTORS {
            let prehash: [u8; 32] = Sha256::digest(msg.as_bytes()).into();
            assert_eq!(secret.sign_prehash(&prehash), rfc_signature(r, s), "{msg}");
        }
    }

    #[test]
    fn domain_tags_are_distinct_and_prefix_free() {
        let all = [
            Domain::TrustRoot,
            Domain::ReleaseManifest,
            Domain::Directive,
            Domain::DeviceMessage,
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                if i != j {
                    assert_ne!(a.tag(), b.tag(), "{a:?} vs {b:?}");
                    assert!(!b.tag().starts_with(a.tag()), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }

    #[cfg(feature = "sign")]
    #[test]
    fn a_signature_verifies_only_in_its_domain() {
        let secret = SecretKey::from_slice(&hex::decode(rfc6979_a25::X).unwrap()).unwrap();
        let public = secret.public_key();
        let sig = secret.sign(Domain::ReleaseManifest, b"payload");
        assert_eq!(
            public.verify(Domain::ReleaseManifest, b"payload", &sig),
            Ok(())
        );
        for other in [Domain::TrustRoot, Domain::Directive, Domain::DeviceMessage] {
            assert_eq!(
                public.verify(other, b"payload", &sig),
                Err(Error::BadSignature)
            );
        }
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused() {
        assert_eq!(PublicKey::from_sec1(&[0u8; 33]), Err(Error::InvalidKey));
        assert_eq!(PublicKey::from_sec1(&[]), Err(Error::InvalidKey));
        assert!(Signature::from_slice(&[0u8; 63]).is_err());
        // r = s = 0 is not a valid signature.
        let zero = Signature::from_slice(&[0u8; 64]).unwrap();
        let prehash: [u8; 32] = Sha256::digest(b"sample").into();
        assert_eq!(
            rfc_public_key().verify_prehash(&prehash, &zero),
            Err(Error::BadSignature)
        );
    }
}
