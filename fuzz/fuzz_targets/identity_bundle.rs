//! An identity bundle from arbitrary bytes: `Identity::from_bytes` (decode
//! and `from_bundle`), then `device_config`.
//!
//! Properties: no panic; an accepted identity's bundle form is accepted
//! again and gives back the same bundle (decode-then-encode round trip);
//! the public key matches the private key; the TrustRoot verifies.
#![no_main]

use aloft_agent::Identity;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(identity) = Identity::from_bytes(data) else {
        return;
    };
    let bundle = identity.to_bundle();
    let again = Identity::from_bytes(&bundle.encode_to_vec())
        .expect("an identity's own bundle is accepted");
    assert_eq!(again.to_bundle(), bundle);
    assert_eq!(identity.public_key(), identity.secret_key().public_key());
    assert!(VerifiedTrustRoot::reload_stored(identity.factory_trust_root().envelope()).is_ok());
    assert!(
        identity.server_url().starts_with("https://")
            || identity.server_url().starts_with("http://")
    );
    if identity.server_url().starts_with("https://") {
        assert!(identity.ca_pem().is_some());
    }
    let _ = identity.device_config();
});
