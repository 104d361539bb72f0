//! Device session messages: signed by the device key in the
//! `DeviceMessage` domain, bound to the session challenge and a sequence
//! number.

use crate::keys::{PublicKey, SecretKey};
use crate::pb;
use crate::Error;

/// Encodes and signs a device message.
#[cfg(feature = "sign")]
pub fn seal(message: &pb::DeviceMessage, key: &SecretKey) -> pb::SignedDeviceMessage {
    let _ = (message, key);
    todo!()
}

/// Decodes a signed device message *without* checking its signature, so the
/// server can look up the claimed device's key. Refuses oversized input.
pub fn peek(signed: &pb::SignedDeviceMessage) -> Result<pb::DeviceMessage, Error> {
    let _ = signed;
    todo!()
}

/// Verifies the signature with `key`, then checks the message is bound to
/// `challenge` and carries sequence number `expected_seq`.
pub fn open(
    signed: &pb::SignedDeviceMessage,
    key: &PublicKey,
    challenge: &[u8],
    expected_seq: u64,
) -> Result<pb::DeviceMessage, Error> {
    let _ = (signed, key, challenge, expected_seq);
    todo!()
}

#[allow(unused_imports)]
use SecretKey as _;
