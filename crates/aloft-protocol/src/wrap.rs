//! Content-key wrapping to one device: ephemeral ECDH P-256, HKDF-SHA256,
//! AES-256-GCM. Only the holder of the device's private key unwraps it.

use crate::keys::{PublicKey, SecretKey};
use crate::pb;
use crate::trust::WrappedContentKey;
use crate::types::{ContentKey, DeviceId};
use crate::Error;

/// Wraps `key` to `recipient` (the device `device_id`'s public key).
#[cfg(feature = "sign")]
pub fn wrap_content_key<R: rand_core::CryptoRng + ?Sized>(
    key: &ContentKey,
    recipient: &PublicKey,
    device_id: &DeviceId,
    rng: &mut R,
) -> WrappedContentKey {
    let _ = (key, recipient, device_id, rng);
    todo!()
}

/// Unwraps a content key with the device's private key.
pub fn unwrap_content_key(
    wrapped: &WrappedContentKey,
    secret: &SecretKey,
    device_id: &DeviceId,
) -> Result<ContentKey, Error> {
    let _ = (wrapped, secret, device_id);
    todo!()
}

impl WrappedContentKey {
    /// From its wire form, checking sizes and the ephemeral point.
    pub fn from_pb(pb: &pb::WrappedKey) -> Result<Self, Error> {
        let _ = pb;
        todo!()
    }

    /// Its wire form.
    pub fn to_pb(&self) -> pb::WrappedKey {
        todo!()
    }
}
