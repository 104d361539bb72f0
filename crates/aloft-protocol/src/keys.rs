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
    /// A device's session message, signed by its device key.
    DeviceMessage,
}

impl Domain {
    /// The bytes prefixed to the message before hashing.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Self::TrustRoot => b"aloft/v1/trust-root\0",
            Self::ReleaseManifest => b"aloft/v1/release-manifest\0",
            Self::Directive => b"aloft/v1/directive\0",
            Self::DeviceMessage => b"aloft/v1/device-message\0",
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
        VerifyingKey::from_sec1_bytes(bytes).map(Self).map_err(|_| Error::InvalidKey)
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
    pub fn verify(&self, domain: Domain, message: &[u8], signature: &Signature) -> Result<(), Error> {
        let sig = ecdsa::Signature::from_slice(&signature.0).map_err(|_| Error::BadSignature)?;
        self.0
            .verify_prehash(&domain.prehash(message), &sig)
            .map_err(|_| Error::BadSignature)
    }

    /// The underlying `p256` key, for ECDH.
    pub(crate) fn inner(&self) -> &VerifyingKey {
        &self.0
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
        p256::SecretKey::from_slice(bytes).map(Self).map_err(|_| Error::InvalidKey)
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
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let key = ecdsa::SigningKey::from(&self.0);
        let sig: ecdsa::Signature = key
            .sign_prehash(&domain.prehash(message))
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

