//! Device session messages: signed by the device key in the
//! `DeviceMessage` domain, bound to the session challenge and a sequence
//! number.
//!
//! The server [`peek`]s at an unverified message only to learn which device
//! claims to have sent it, looks that device's key up, and then [`open`]s it:
//! signature first, then the binding to this session (challenge) and to its
//! place in the session (sequence number).

use prost::Message;

use crate::Error;
use crate::keys::{Domain, PublicKey, Signature};
use crate::limits::{MAX_DEVICE_MESSAGE_LEN, MAX_REPORTS_PER_HELLO};
use crate::pb;

/// Encodes and signs a device message.
#[cfg(feature = "sign")]
pub fn seal(message: &pb::DeviceMessage, key: &crate::keys::SecretKey) -> pb::SignedDeviceMessage {
    let payload = message.encode_to_vec();
    let signature = key.sign(Domain::DeviceMessage, &payload);
    pb::SignedDeviceMessage {
        payload,
        signature: signature.as_bytes().to_vec(),
    }
}

/// Decodes a signed device message *without* checking its signature, so the
/// server can look up the claimed device's key. Refuses oversized input:
/// a payload over [`MAX_DEVICE_MESSAGE_LEN`], or a hello carrying more than
/// [`MAX_REPORTS_PER_HELLO`] reports.
pub fn peek(signed: &pb::SignedDeviceMessage) -> Result<pb::DeviceMessage, Error> {
    if signed.payload.len() > MAX_DEVICE_MESSAGE_LEN {
        return Err(Error::TooLarge("device message"));
    }
    let message = pb::DeviceMessage::decode(signed.payload.as_slice())
        .map_err(|_| Error::Malformed("device message"))?;
    if let Some(pb::device_message::Body::Hello(hello)) = &message.body {
        if hello.reports.len() > MAX_REPORTS_PER_HELLO {
            return Err(Error::TooLarge("hello report list"));
        }
    }
    Ok(message)
}

/// Verifies the signature with `key`, then checks the message is bound to
/// `challenge` and carries sequence number `expected_seq`.
///
/// Errors: [`Error::TooLarge`] / [`Error::Malformed`] as for [`peek`],
/// [`Error::BadSignature`], then [`Error::ChallengeMismatch`] (a message
/// from another session) and [`Error::SequenceMismatch`] (replayed,
/// dropped or reordered within this session).
pub fn open(
    signed: &pb::SignedDeviceMessage,
    key: &PublicKey,
    challenge: &[u8],
    expected_seq: u64,
) -> Result<pb::DeviceMessage, Error> {
    if signed.payload.len() > MAX_DEVICE_MESSAGE_LEN {
        return Err(Error::TooLarge("device message"));
    }
    let signature = Signature::from_slice(&signed.signature)?;
    key.verify(Domain::DeviceMessage, &signed.payload, &signature)?;
    let message = peek(signed)?;
    if message.challenge != challenge {
        return Err(Error::ChallengeMismatch);
    }
    if message.seq != expected_seq {
        return Err(Error::SequenceMismatch {
            expected: expected_seq,
            got: message.seq,
        });
    }
    Ok(message)
}
