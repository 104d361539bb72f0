//! A directive envelope from arbitrary bytes, under the fixture's TrustRoot
//! v1 (`verify_directive`), and the content key it carries
//! (`WrappedContentKey::from_pb`, `unwrap_content_key` with the device key).
//!
//! Properties: no panic; a verified directive is unexpired at the later of
//! now and its server time, carries valid ids and sizes, and its wrapped
//! key (when it carries one) round-trips through its protobuf form;
//! unwrapping never panics and fails only as `UnwrapFailed`.
#![no_main]

use aloft_fuzz::fixtures::{DEVICE_KEY, NOW, fixture, key};
use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::trust::WrappedContentKey;
use aloft_protocol::wrap::unwrap_content_key;
use aloft_protocol::{Error, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode_envelope(data) else {
        return;
    };
    let now = UnixTime(NOW);
    let Ok(d) = fixture().v1.verify_directive(&envelope, now) else {
        return;
    };
    assert!(d.expires_at() >= now.max(d.server_time()));
    assert!(d.rollout_id().len() <= aloft_protocol::types::MAX_ID_LEN);
    // A signature-only release's directive carries no key.
    let Some(wrapped) = d.content_key() else {
        return;
    };
    let wire = wrapped.to_pb();
    assert_eq!(WrappedContentKey::from_pb(&wire).as_ref(), Ok(wrapped));
    match unwrap_content_key(wrapped, &key(DEVICE_KEY), d.device_id()) {
        Ok(_) | Err(Error::UnwrapFailed) => {}
        Err(other) => panic!("unwrap failed with {other:?}"),
    }
});
