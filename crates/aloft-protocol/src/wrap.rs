//! Content-key wrapping to one device: ephemeral ECDH P-256, HKDF-SHA256,
//! AES-256-GCM. Only the holder of the device's private key unwraps it.
//!
//! Wrapping: a fresh ephemeral key `e`; `z = ECDH(e, device)` (the shared
//! point's x-coordinate); `kek = HKDF-SHA256(salt = "aloft/v1/content-key-wrap",
//! ikm = z, info = E || D || device_id)` where `E` and `D` are the SEC1
//! compressed ephemeral and device public keys; the content key is sealed with
//! AES-256-GCM under `kek` with an all-zero nonce (each `kek` encrypts exactly
//! one message) and associated data = the device id. Binding both public keys
//! and the device id into the derivation means a wrapped key cannot be
//! re-targeted to another device or replayed with a substituted ephemeral key.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::Error;
use crate::keys::{PublicKey, SecretKey};
use crate::payload::{NONCE_LEN, TAG_LEN, gcm, gcm_open};
use crate::pb;
use crate::trust::WrappedContentKey;
use crate::types::{ContentKey, DeviceId};

/// HKDF salt of the key-encryption key derivation.
const HKDF_SALT: &[u8] = b"aloft/v1/content-key-wrap";
/// The single message each derived key encrypts uses this nonce.
const WRAP_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];
/// Length of [`WrappedContentKey::ciphertext`].
#[cfg(feature = "sign")]
const WRAPPED_LEN: usize = ContentKey::LEN + TAG_LEN;

/// The raw ECDH shared secret (x-coordinate of `secret * public`).
fn ecdh(secret: &SecretKey, public: &PublicKey) -> p256::ecdh::SharedSecret {
    p256::ecdh::diffie_hellman(
        secret.inner().to_nonzero_scalar(),
        public.inner().as_affine(),
    )
}

/// HKDF-SHA256 extract-and-expand of `ikm` with `info` given in parts (they
/// are concatenated). `okm` of 32 bytes never fails.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), Error> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand_multi_info(info, okm)
        .map_err(|_| Error::UnwrapFailed)
}

/// Derives the key-encryption key from the shared secret and the context.
fn derive_kek(
    shared: &p256::ecdh::SharedSecret,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
    info_device_id: &[u8],
) -> Result<[u8; 32], Error> {
    let mut kek = [0u8; 32];
    hkdf_sha256(
        HKDF_SALT,
        shared.raw_secret_bytes().as_slice(),
        &[
            &ephemeral.to_sec1_compressed(),
            &recipient.to_sec1_compressed(),
            info_device_id,
        ],
        &mut kek,
    )?;
    Ok(kek)
}

/// Best-effort wipe of a stack copy of key material.
fn wipe(bytes: &mut [u8; 32]) {
    *bytes = [0; 32];
    core::hint::black_box(bytes);
}

/// Seals `key` for `recipient` with the given ephemeral key, binding
/// `info_device_id` into the derivation and `aad_device_id` into the AEAD.
/// The public API always passes the same device id for both.
#[cfg(feature = "sign")]
fn wrap_with(
    key: &ContentKey,
    ephemeral: &SecretKey,
    recipient: &PublicKey,
    info_device_id: &[u8],
    aad_device_id: &[u8],
) -> Result<WrappedContentKey, Error> {
    let ephemeral_public = ephemeral.public_key();
    let shared = ecdh(ephemeral, recipient);
    let mut kek = derive_kek(&shared, &ephemeral_public, recipient, info_device_id)?;
    let cipher = gcm(&kek);
    wipe(&mut kek);

    let mut ciphertext = [0u8; WRAPPED_LEN];
    let (body, tag_out) = ciphertext.split_at_mut(ContentKey::LEN);
    body.copy_from_slice(key.expose());
    let tag = crate::payload::gcm_seal(&cipher, &WRAP_NONCE, aad_device_id, body)
        .map_err(|_| Error::UnwrapFailed)?;
    tag_out.copy_from_slice(&tag);
    Ok(WrappedContentKey {
        ephemeral: ephemeral_public,
        ciphertext,
    })
}

/// Wraps `key` to `recipient` (the device `device_id`'s public key), with a
/// fresh ephemeral key drawn from `rng`.
#[cfg(feature = "sign")]
pub fn wrap_content_key<R: rand_core::CryptoRng + ?Sized>(
    key: &ContentKey,
    recipient: &PublicKey,
    device_id: &DeviceId,
    rng: &mut R,
) -> WrappedContentKey {
    let ephemeral = SecretKey::generate_from_rng(rng);
    let id = device_id.as_str().as_bytes();
    // A 32-byte HKDF output and a 32-byte AES-GCM message are far within both
    // primitives' limits, so this cannot fail.
    wrap_with(key, &ephemeral, recipient, id, id).expect("fixed-size wrap never fails")
}

/// Unwraps a content key with the device's private key.
///
/// Every failure (another device's key, another device id, a tampered
/// ciphertext or ephemeral key) is the same opaque [`Error::UnwrapFailed`].
pub fn unwrap_content_key(
    wrapped: &WrappedContentKey,
    secret: &SecretKey,
    device_id: &DeviceId,
) -> Result<ContentKey, Error> {
    let id = device_id.as_str().as_bytes();
    let shared = ecdh(secret, &wrapped.ephemeral);
    let mut kek = derive_kek(&shared, &wrapped.ephemeral, &secret.public_key(), id)?;
    let cipher = gcm(&kek);
    wipe(&mut kek);

    let (body, tag) = wrapped.ciphertext.split_at(ContentKey::LEN);
    let mut key = [0u8; ContentKey::LEN];
    key.copy_from_slice(body);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::UnwrapFailed)?;
    let opened = gcm_open(&cipher, &WRAP_NONCE, id, &mut key, tag);
    let result = match opened {
        Ok(()) => Ok(ContentKey::from_bytes(key)),
        Err(_) => Err(Error::UnwrapFailed),
    };
    wipe(&mut key);
    result
}

impl WrappedContentKey {
    /// From its wire form, checking sizes and the ephemeral point: a 33-byte
    /// SEC1 compressed P-256 point and a 48-byte ciphertext
    /// ([`Error::InvalidField`] otherwise).
    pub fn from_pb(pb: &pb::WrappedKey) -> Result<Self, Error> {
        if pb.ephemeral_public_key.len() != PublicKey::COMPRESSED_LEN {
            return Err(Error::InvalidField("wrapped key ephemeral public key"));
        }
        let ephemeral = PublicKey::from_sec1(&pb.ephemeral_public_key)
            .map_err(|_| Error::InvalidField("wrapped key ephemeral public key"))?;
        let ciphertext = pb
            .ciphertext
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidField("wrapped key ciphertext"))?;
        Ok(Self {
            ephemeral,
            ciphertext,
        })
    }

    /// Its wire form.
    pub fn to_pb(&self) -> pb::WrappedKey {
        pb::WrappedKey {
            ephemeral_public_key: self.ephemeral.to_sec1_compressed().to_vec(),
            ciphertext: self.ciphertext.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// HKDF-SHA256 known answer: RFC 5869 Appendix A.1 (Test Case 1), with the
    /// info split in parts the way `derive_kek` passes it.
    #[test]
    fn hkdf_sha256_matches_rfc5869_test_case_1() {
        let ikm = [0x0b_u8; 22];
        let salt: [u8; 13] = unhex("000102030405060708090a0b0c");
        let info: [u8; 10] = unhex("f0f1f2f3f4f5f6f7f8f9");
        let okm: [u8; 42] = unhex(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
             34007208d5b887185865",
        );
        let mut out = [0u8; 42];
        hkdf_sha256(
            &salt,
            &ikm,
            &[&info[..3], &info[3..7], &info[7..]],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, okm);
        let mut out = [0u8; 42];
        hkdf_sha256(&salt, &ikm, &[&info], &mut out).unwrap();
        assert_eq!(out, okm);
    }

    /// P-256 ECDH known answer: RFC 5903 section 8.1 (256-bit random ECP
    /// group): initiator `i`, responder `r`, shared x-coordinate of `g^ir`.
    #[test]
    fn p256_ecdh_matches_rfc5903_section_8_1() {
        let i = SecretKey::from_slice(&unhex::<32>(
            "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
        ))
        .unwrap();
        let gi = PublicKey::from_sec1(&unhex::<65>(
            "04dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180\
             5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
        ))
        .unwrap();
        let r = SecretKey::from_slice(&unhex::<32>(
            "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
        ))
        .unwrap();
        let gr = PublicKey::from_sec1(&unhex::<65>(
            "04d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63\
             56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
        ))
        .unwrap();
        let girx: [u8; 32] =
            unhex("d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de");

        assert_eq!(i.public_key(), gi);
        assert_eq!(r.public_key(), gr);
        assert_eq!(ecdh(&i, &gr).raw_secret_bytes().as_slice(), girx);
        assert_eq!(ecdh(&r, &gi).raw_secret_bytes().as_slice(), girx);
    }

    #[cfg(feature = "sign")]
    fn keys() -> (SecretKey, SecretKey) {
        let device = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let ephemeral = SecretKey::from_slice(&[0x22; 32]).unwrap();
        (device, ephemeral)
    }

    #[cfg(feature = "sign")]
    #[test]
    fn wrap_with_same_ids_unwraps() {
        let (device, ephemeral) = keys();
        let id = DeviceId::new("dev-a").unwrap();
        let key = ContentKey::from_bytes([7; 32]);
        let wrapped =
            wrap_with(&key, &ephemeral, &device.public_key(), b"dev-a", b"dev-a").unwrap();
        assert_eq!(unwrap_content_key(&wrapped, &device, &id).unwrap(), key);
    }

    /// The device id is bound twice; each binding alone is enough to refuse.
    #[cfg(feature = "sign")]
    #[test]
    fn device_id_is_bound_by_the_derivation_and_by_the_aad() {
        let (device, ephemeral) = keys();
        let id = DeviceId::new("dev-a").unwrap();
        let key = ContentKey::from_bytes([7; 32]);
        let recipient = device.public_key();

        let other_info = wrap_with(&key, &ephemeral, &recipient, b"dev-b", b"dev-a").unwrap();
        assert_eq!(
            unwrap_content_key(&other_info, &device, &id),
            Err(Error::UnwrapFailed)
        );

        let other_aad = wrap_with(&key, &ephemeral, &recipient, b"dev-a", b"dev-b").unwrap();
        assert_eq!(
            unwrap_content_key(&other_aad, &device, &id),
            Err(Error::UnwrapFailed)
        );
    }

    /// Negating the ephemeral point (flipping the compressed prefix 02 <-> 03)
    /// gives the SAME ECDH secret; only binding the ephemeral key into the
    /// HKDF info makes the substitution fail.
    #[cfg(feature = "sign")]
    #[test]
    fn negated_ephemeral_point_has_the_same_shared_secret_but_fails() {
        let (device, ephemeral) = keys();
        let id = DeviceId::new("dev-a").unwrap();
        let key = ContentKey::from_bytes([7; 32]);
        let mut wrapped =
            wrap_with(&key, &ephemeral, &device.public_key(), b"dev-a", b"dev-a").unwrap();
        let mut sec1 = wrapped.ephemeral.to_sec1_compressed();
        sec1[0] ^= 1;
        let negated = PublicKey::from_sec1(&sec1).unwrap();
        assert_eq!(
            ecdh(&device, &negated).raw_secret_bytes(),
            ecdh(&device, &wrapped.ephemeral).raw_secret_bytes()
        );
        wrapped.ephemeral = negated;
        assert_eq!(
            unwrap_content_key(&wrapped, &device, &id),
            Err(Error::UnwrapFailed)
        );
    }
}
