//! Signed envelopes: payload bytes plus signatures by key id, checked
//! against a key set and a threshold where each key counts once.

use alloc::vec::Vec;

use prost::Message;

use crate::keys::{Domain, PublicKey, Signature};
use crate::limits::{MAX_ENVELOPE_LEN, MAX_SIGNATURES};
use crate::pb;
use crate::{Error, KeyId};

/// Checks that at least `threshold` distinct keys of `keys` validly signed
/// `envelope.payload` in `domain`.
///
/// Signatures by keys outside `keys` are ignored; a key id that appears
/// several times counts at most once (threat 2). A threshold of zero is
/// refused: nothing is ever trusted unsigned.
pub fn verify_threshold(
    envelope: &pb::SignedEnvelope,
    domain: Domain,
    keys: &[PublicKey],
    threshold: u32,
) -> Result<(), Error> {
    if threshold == 0 || threshold as usize > keys.len() {
        return Err(Error::InvalidThreshold);
    }
    if envelope.signatures.len() > MAX_SIGNATURES {
        return Err(Error::TooLarge("signature list"));
    }
    if envelope.payload.len() > MAX_ENVELOPE_LEN {
        return Err(Error::TooLarge("envelope payload"));
    }
    let mut counted: Vec<KeyId> = Vec::with_capacity(envelope.signatures.len());
    for sig in &envelope.signatures {
        let Ok(key_id) = KeyId::from_slice(&sig.key_id) else {
            continue;
        };
        if counted.contains(&key_id) {
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.key_id() == key_id) else {
            continue;
        };
        let Ok(signature) = Signature::from_slice(&sig.signature) else {
            continue;
        };
        if key.verify(domain, &envelope.payload, &signature).is_ok() {
            counted.push(key_id);
        }
    }
    let valid = counted.len() as u32;
    if valid >= threshold {
        Ok(())
    } else {
        Err(Error::ThresholdNotMet {
            needed: threshold,
            valid,
        })
    }
}

/// Decodes an envelope from bytes, refusing oversized input before parsing.
pub fn decode_envelope(bytes: &[u8]) -> Result<pb::SignedEnvelope, Error> {
    if bytes.len() > MAX_ENVELOPE_LEN + MAX_SIGNATURES * 128 {
        return Err(Error::TooLarge("signed envelope"));
    }
    pb::SignedEnvelope::decode(bytes).map_err(|_| Error::Malformed("signed envelope"))
}

/// Encodes `message` and signs it with each of `keys` in `domain`.
#[cfg(feature = "sign")]
pub fn seal<M: Message>(
    message: &M,
    domain: Domain,
    keys: &[&crate::SecretKey],
) -> pb::SignedEnvelope {
    let mut envelope = pb::SignedEnvelope {
        payload: message.encode_to_vec(),
        signatures: Vec::new(),
    };
    for key in keys {
        add_signature(&mut envelope, domain, key);
    }
    envelope
}

/// Adds one signature by `key` over the envelope's payload.
#[cfg(feature = "sign")]
pub fn add_signature(envelope: &mut pb::SignedEnvelope, domain: Domain, key: &crate::SecretKey) {
    let signature = key.sign(domain, &envelope.payload);
    envelope.signatures.push(pb::Signature {
        key_id: key.public_key().key_id().as_bytes().to_vec(),
        signature: signature.as_bytes().to_vec(),
    });
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::SecretKey;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_slice(&[n; 32]).unwrap()
    }

    fn envelope(signers: &[u8]) -> pb::SignedEnvelope {
        let mut env = pb::SignedEnvelope {
            payload: b"payload".to_vec(),
            signatures: vec![],
        };
        for &n in signers {
            add_signature(&mut env, Domain::ReleaseManifest, &key(n));
        }
        env
    }

    fn keys(ns: &[u8]) -> Vec<PublicKey> {
        ns.iter().map(|&n| key(n).public_key()).collect()
    }

    #[test]
    fn threshold_met_by_distinct_keys() {
        let env = envelope(&[1, 2]);
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1, 2, 3]), 2),
            Ok(())
        );
    }

    #[test]
    fn a_key_counts_once() {
        let env = envelope(&[1, 1, 1]);
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1, 2]), 2),
            Err(Error::ThresholdNotMet {
                needed: 2,
                valid: 1
            })
        );
    }

    #[test]
    fn invalid_signatures_and_foreign_keys_do_not_count() {
        let mut env = envelope(&[1, 2, 9]);
        env.signatures[1].signature[0] ^= 1;
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1, 2]), 2),
            Err(Error::ThresholdNotMet {
                needed: 2,
                valid: 1
            })
        );
        // The right keys in the wrong domain.
        assert_eq!(
            verify_threshold(&envelope(&[1, 2]), Domain::Directive, &keys(&[1, 2]), 1),
            Err(Error::ThresholdNotMet {
                needed: 1,
                valid: 0
            })
        );
    }

    #[test]
    fn zero_or_unreachable_threshold_is_refused() {
        let env = envelope(&[1]);
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1]), 0),
            Err(Error::InvalidThreshold)
        );
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1]), 2),
            Err(Error::InvalidThreshold)
        );
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &[], 1),
            Err(Error::InvalidThreshold)
        );
    }

    #[test]
    fn oversized_envelopes_are_refused() {
        let mut env = envelope(&[1]);
        env.signatures = vec![env.signatures[0].clone(); MAX_SIGNATURES + 1];
        assert_eq!(
            verify_threshold(&env, Domain::ReleaseManifest, &keys(&[1]), 1),
            Err(Error::TooLarge("signature list"))
        );
        let big = pb::SignedEnvelope {
            payload: vec![0; MAX_ENVELOPE_LEN + 1],
            signatures: vec![],
        };
        assert_eq!(
            verify_threshold(&big, Domain::ReleaseManifest, &keys(&[1]), 1),
            Err(Error::TooLarge("envelope payload"))
        );
        let huge = vec![0u8; MAX_ENVELOPE_LEN + MAX_SIGNATURES * 128 + 1];
        assert_eq!(
            decode_envelope(&huge),
            Err(Error::TooLarge("signed envelope"))
        );
    }

    #[test]
    fn decode_round_trips_and_refuses_garbage() {
        let env = envelope(&[1, 2]);
        assert_eq!(decode_envelope(&env.encode_to_vec()), Ok(env));
        assert_eq!(
            decode_envelope(&[0xff, 0xff]),
            Err(Error::Malformed("signed envelope"))
        );
    }
}
