//! A release manifest envelope from arbitrary bytes, under the fixture's
//! TrustRoot v1: `verify_manifest`, `Manifest::from_recorded` (the boot
//! path) and `danger::verify_manifest_ignoring_expiry` (the factory).
//!
//! Properties: no panic; the three agree (a verified manifest is also
//! accepted ignoring expiry and by its recorded digest, with equal fields;
//! a wrong digest is always `ManifestMismatch`); every accepted manifest's
//! payload layout passes `PayloadParams::validate` and its chunk arithmetic
//! is consistent; a verified manifest is unexpired.
#![no_main]

use aloft_fuzz::fixtures::{NOW, fixture};
use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::payload::TAG_LEN;
use aloft_protocol::trust::{Manifest, danger};
use aloft_protocol::{Digest, Error, UnixTime};
use libfuzzer_sys::fuzz_target;

fn check_layout(m: &Manifest) {
    let params = m.payload_params();
    params
        .validate()
        .expect("an accepted manifest has a valid layout");
    let count = u64::from(params.chunk_count());
    let size = u64::from(params.chunk_size);
    assert!(count >= 1 && count * size >= m.image_len() && (count - 1) * size < m.image_len());
    let last = params.chunk_count() - 1;
    let last_len = params.plaintext_len(last).expect("the last chunk exists") as u64;
    assert!(last_len >= 1 && last_len <= size);
    assert_eq!((count - 1) * size + last_len, m.image_len());
    assert_eq!(params.plaintext_len(last + 1), None);
    assert_eq!(params.payload_len(), m.image_len() + count * TAG_LEN as u64);
    assert_eq!(
        params.chunk_offset(last) + last_len + TAG_LEN as u64,
        params.payload_len()
    );
    assert!(!m.hardware().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode_envelope(data) else {
        return;
    };
    let now = UnixTime(NOW);
    let trust = &fixture().v1;
    let digest = Digest::of(&envelope.payload);

    let recorded = Manifest::from_recorded(&envelope, digest);
    let mut other = *digest.as_bytes();
    other[0] ^= 1;
    if envelope.payload.len() <= aloft_protocol::limits::MAX_ENVELOPE_LEN
        && envelope.signatures.len() <= aloft_protocol::limits::MAX_SIGNATURES
    {
        assert_eq!(
            Manifest::from_recorded(&envelope, Digest::from_bytes(other)),
            Err(Error::ManifestMismatch)
        );
    }
    if let Ok(m) = &recorded {
        assert_eq!(m.digest(), digest);
        check_layout(m);
    }

    let factory = danger::verify_manifest_ignoring_expiry(trust, &envelope);
    if let Ok(f) = &factory {
        assert_eq!(
            Ok(f.manifest()),
            recorded.as_ref(),
            "factory and boot views differ"
        );
    }
    match trust.verify_manifest(&envelope, now) {
        Ok(verified) => {
            assert!(verified.expires_at() >= now);
            assert_eq!(Ok(&verified), factory.as_ref());
            assert_eq!(verified.envelope(), &envelope);
        }
        Err(Error::Expired { .. }) => assert!(factory.is_ok()),
        Err(_) => assert!(
            factory.is_err(),
            "refused for more than expiry, accepted ignoring it"
        ),
    }
});
