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
use crate::keys::{Domain, Signature, SignatureVerifier};
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
    if let Some(pb::device_message::Body::Hello(hello)) = &message.body
        && hello.reports.len() > MAX_REPORTS_PER_HELLO
    {
        return Err(Error::TooLarge("hello report list"));
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
///
/// `key` is the device's [`crate::keys::PublicKey`] or any other [`SignatureVerifier`]
/// for it (e.g. the ring-backed one a server may use).
pub fn open<K: SignatureVerifier + ?Sized>(
    signed: &pb::SignedDeviceMessage,
    key: &K,
    challenge: &[u8],
    expected_seq: u64,
) -> Result<pb::DeviceMessage, Error> {
    if signed.payload.len() > MAX_DEVICE_MESSAGE_LEN {
        return Err(Error::TooLarge("device message"));
    }
    let signature = Signature::from_slice(&signed.signature)?;
    key.verify_in(Domain::DeviceMessage, &signed.payload, &signature)?;
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

#[cfg(all(test, feature = "sign"))]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::keys::SecretKey;

    const CHALLENGE: [u8; 32] = [0x5a; 32];

    fn device_key() -> SecretKey {
        SecretKey::from_slice(&[31; 32]).unwrap()
    }

    fn hello(seq: u64, reports: usize) -> pb::DeviceMessage {
        pb::DeviceMessage {
            device_id: "dev-a".into(),
            challenge: CHALLENGE.to_vec(),
            seq,
            body: Some(pb::device_message::Body::Hello(pb::Hello {
                device_nonce: vec![9; 16],
                state: None,
                reports: (0..reports)
                    .map(|i| pb::Report {
                        report_id: vec![i as u8; 16],
                        ..Default::default()
                    })
                    .collect(),
            })),
        }
    }

    fn open_with_defaults(signed: &pb::SignedDeviceMessage) -> Result<pb::DeviceMessage, Error> {
        open(signed, &device_key().public_key(), &CHALLENGE, 1)
    }

    #[test]
    fn sealed_message_opens() {
        let msg = hello(1, 2);
        let signed = seal(&msg, &device_key());
        assert_eq!(peek(&signed), Ok(msg.clone()));
        assert_eq!(open_with_defaults(&signed), Ok(msg));
    }

    #[test]
    fn peek_does_not_verify_but_open_does() {
        let mut signed = seal(&hello(1, 0), &device_key());
        signed.signature[5] ^= 1;
        assert!(peek(&signed).is_ok());
        assert_eq!(open_with_defaults(&signed), Err(Error::BadSignature));
    }

    #[test]
    fn bad_signatures_are_refused() {
        let signed = seal(&hello(1, 0), &device_key());
        // Another device's key (threat 17: a report signed by another key).
        let other = SecretKey::from_slice(&[32; 32]).unwrap().public_key();
        assert_eq!(
            open(&signed, &other, &CHALLENGE, 1),
            Err(Error::BadSignature)
        );
        // Missing, truncated, or over-long signature.
        for sig in [
            Vec::new(),
            signed.signature[..63].to_vec(),
            [&signed.signature[..], &[0]].concat(),
        ] {
            let s = pb::SignedDeviceMessage {
                payload: signed.payload.clone(),
                signature: sig,
            };
            assert_eq!(open_with_defaults(&s), Err(Error::BadSignature));
        }
        // Any flipped payload byte.
        for i in 0..signed.payload.len() {
            let mut s = signed.clone();
            s.payload[i] ^= 0x10;
            assert_eq!(open_with_defaults(&s), Err(Error::BadSignature), "byte {i}");
        }
        // The device key signing the same bytes in another role's domain.
        let key = device_key();
        for domain in [
            Domain::Directive,
            Domain::ReleaseManifest,
            Domain::TrustRoot,
        ] {
            let s = pb::SignedDeviceMessage {
                payload: signed.payload.clone(),
                signature: key.sign(domain, &signed.payload).as_bytes().to_vec(),
            };
            assert_eq!(
                open_with_defaults(&s),
                Err(Error::BadSignature),
                "{domain:?}"
            );
        }
    }

    #[test]
    fn another_sessions_challenge_is_refused() {
        // Threat 17: a hello replayed into a new session.
        let signed = seal(&hello(1, 0), &device_key());
        let key = device_key().public_key();
        assert_eq!(
            open(&signed, &key, &[0x5b; 32], 1),
            Err(Error::ChallengeMismatch)
        );
        assert_eq!(
            open(&signed, &key, &CHALLENGE[..31], 1),
            Err(Error::ChallengeMismatch)
        );
        assert_eq!(open(&signed, &key, &[], 1), Err(Error::ChallengeMismatch));
    }

    #[test]
    fn wrong_sequence_number_is_refused() {
        // In-session replay (seq 1 again when 2 is due) and skipping ahead.
        let key = device_key().public_key();
        let signed = seal(&hello(1, 0), &device_key());
        assert_eq!(
            open(&signed, &key, &CHALLENGE, 2),
            Err(Error::SequenceMismatch {
                expected: 2,
                got: 1
            })
        );
        let signed = seal(&hello(3, 0), &device_key());
        assert_eq!(
            open(&signed, &key, &CHALLENGE, 2),
            Err(Error::SequenceMismatch {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn oversized_and_malformed_messages_are_refused() {
        let big = pb::SignedDeviceMessage {
            payload: vec![0; MAX_DEVICE_MESSAGE_LEN + 1],
            signature: vec![0; 64],
        };
        assert_eq!(peek(&big), Err(Error::TooLarge("device message")));
        assert_eq!(
            open_with_defaults(&big),
            Err(Error::TooLarge("device message"))
        );
        let garbage = pb::SignedDeviceMessage {
            payload: vec![0xff; 4],
            signature: vec![],
        };
        assert_eq!(peek(&garbage), Err(Error::Malformed("device message")));
        // Authentic but undecodable bytes.
        let signed_garbage = pb::SignedDeviceMessage {
            payload: vec![0xff; 4],
            signature: device_key()
                .sign(Domain::DeviceMessage, &[0xff; 4])
                .as_bytes()
                .to_vec(),
        };
        assert_eq!(
            open_with_defaults(&signed_garbage),
            Err(Error::Malformed("device message"))
        );
        // Too many reports in one hello; the limit itself is accepted.
        let many = seal(&hello(1, MAX_REPORTS_PER_HELLO + 1), &device_key());
        assert_eq!(peek(&many), Err(Error::TooLarge("hello report list")));
        assert_eq!(
            open_with_defaults(&many),
            Err(Error::TooLarge("hello report list"))
        );
        let most = seal(&hello(1, MAX_REPORTS_PER_HELLO), &device_key());
        assert!(open_with_defaults(&most).is_ok());
    }
}
