//! `decode_envelope` and `verify_threshold` on arbitrary bytes.
//!
//! Properties: no panic; a decoded envelope re-encodes to bytes that decode
//! to the same value; `verify_threshold` accepts exactly when at least
//! `threshold` distinct listed keys signed validly (checked against an
//! independent count), for every domain.
#![no_main]

use aloft_fuzz::fixtures::{DEVICE_KEY, RELEASE, ROOT_V1, SERVER, key};
use aloft_protocol::envelope::{decode_envelope, verify_threshold};
use aloft_protocol::keys::Domain;
use aloft_protocol::limits::{MAX_ENVELOPE_LEN, MAX_SIGNATURES};
use aloft_protocol::prost::Message as _;
use aloft_protocol::{Error, KeyId, PublicKey, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode_envelope(data) else {
        return;
    };
    let again = decode_envelope(&envelope.encode_to_vec()).expect("a decoded envelope re-decodes");
    assert_eq!(again, envelope);

    let keys: Vec<PublicKey> = [ROOT_V1, RELEASE[0], RELEASE[1], SERVER, DEVICE_KEY]
        .iter()
        .map(|&n| key(n).public_key())
        .collect();
    let within_limits =
        envelope.signatures.len() <= MAX_SIGNATURES && envelope.payload.len() <= MAX_ENVELOPE_LEN;
    for domain in [
        Domain::TrustRoot,
        Domain::ReleaseManifest,
        Domain::Directive,
        Domain::DeviceMessage,
    ] {
        // Independent count: distinct listed key ids with a valid signature.
        let mut valid: Vec<KeyId> = Vec::new();
        for sig in &envelope.signatures {
            let (Ok(id), Ok(s)) = (
                KeyId::from_slice(&sig.key_id),
                Signature::from_slice(&sig.signature),
            ) else {
                continue;
            };
            if valid.contains(&id) {
                continue;
            }
            if let Some(k) = keys.iter().find(|k| k.key_id() == id)
                && k.verify(domain, &envelope.payload, &s).is_ok()
            {
                valid.push(id);
            }
        }
        let count = valid.len() as u32;
        for threshold in [0, 1, count, count + 1] {
            let got = verify_threshold(&envelope, domain, &keys, threshold);
            let want = if threshold == 0 || threshold as usize > keys.len() {
                Err(Error::InvalidThreshold)
            } else if !within_limits {
                // Refused before any crypto.
                assert!(matches!(got, Err(Error::TooLarge(_))), "{got:?}");
                continue;
            } else if count >= threshold {
                Ok(())
            } else {
                Err(Error::ThresholdNotMet {
                    needed: threshold,
                    valid: count,
                })
            };
            assert_eq!(got, want, "{domain:?} threshold {threshold}");
        }
    }
});
