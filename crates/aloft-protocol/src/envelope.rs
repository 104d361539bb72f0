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
        let Ok(key_id) = KeyId::from_slice(&sig.key_id) else { continue };
        if counted.contains(&key_id) {
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.key_id() == key_id) else { continue };
        let Ok(signature) = Signature::from_slice(&sig.signature) else { continue };
        if key.verify(domain, &envelope.payload, &signature).is_ok() {
            counted.push(key_id);
        }
    }
    let valid = counted.len() as u32;
    if valid >= threshold {
        Ok(())
    } else {
        Err(Error::ThresholdNotMet { needed: threshold, valid })
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
    let mut envelope = pb::SignedEnvelope { payload: message.encode_to_vec(), signatures: Vec::new() };
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
