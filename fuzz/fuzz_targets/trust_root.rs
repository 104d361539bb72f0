//! A TrustRoot envelope from arbitrary bytes: `VerifiedTrustRoot::
//! reload_stored`, `trust_on_first_use` and `rotate` (as a successor of the
//! fixture's v1).
//!
//! Properties: no panic; a root that verifies keeps verifying after an
//! encode/decode round trip of its envelope, to an equal root; what it
//! exposes obeys the structural rules (thresholds in 1..=keys, at most 16
//! keys a role, a server key, no key in two roles, digest of the payload);
//! first use accepts exactly the unexpired ones; a root is never its own
//! successor; a rotation of v1 gives version 2 and agrees with a one-link
//! `update_chain`.
#![no_main]

use aloft_fuzz::fixtures::{NOW, fixture};
use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::limits::MAX_KEYS_PER_ROLE;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{Digest, Error, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode_envelope(data) else {
        return;
    };
    let now = UnixTime(NOW);
    let v1 = &fixture().v1;
    let rotated = v1.rotate(&envelope, now);
    if let Ok(next) = &rotated {
        assert_eq!(next.version(), 2);
        assert!(!next.is_expired(now));
        let chained = v1.update_chain(core::slice::from_ref(&envelope), now);
        assert_eq!(chained.as_ref(), Ok(next));
    }
    let Ok(root) = VerifiedTrustRoot::reload_stored(&envelope) else {
        assert!(rotated.is_err(), "a successor that does not reload");
        return;
    };
    assert_eq!(root.digest(), Digest::of(&envelope.payload));
    assert_eq!(root.envelope(), &envelope);
    for (keys, threshold) in [
        (root.root_keys(), root.root_threshold()),
        (root.release_keys(), root.release_threshold()),
    ] {
        assert!(threshold >= 1 && threshold as usize <= keys.len());
    }
    for keys in [root.root_keys(), root.release_keys(), root.server_keys()] {
        assert!(keys.len() <= MAX_KEYS_PER_ROLE);
    }
    assert!(!root.server_keys().is_empty());
    let roles = [root.root_keys(), root.release_keys(), root.server_keys()];
    for (i, a) in roles.iter().enumerate() {
        for (j, b) in roles.iter().enumerate() {
            if i != j {
                assert!(a.iter().all(|k| !b.contains(k)), "a key in two roles");
            }
        }
    }

    let bytes = root.envelope().encode_to_vec();
    let again = VerifiedTrustRoot::reload_stored(&decode_envelope(&bytes).expect("re-decodes"))
        .expect("a verified root keeps verifying after a round trip");
    assert_eq!(again, root);
    assert_eq!(
        (again.version(), again.digest()),
        (root.version(), root.digest())
    );

    let first_use = VerifiedTrustRoot::trust_on_first_use(&envelope, now);
    assert_eq!(first_use.is_ok(), !root.is_expired(now));
    if root.is_expired(now) {
        assert!(matches!(first_use, Err(Error::Expired { .. })));
    }
    assert!(
        root.rotate(&envelope, now).is_err(),
        "a root is not its own successor"
    );
});
