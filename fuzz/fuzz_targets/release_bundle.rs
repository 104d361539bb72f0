//! A release bundle from arbitrary bytes, checked as the release tooling
//! and a device would (`aloft_release::release::check_bundle`) under the
//! fixture's TrustRoot v1: manifest, content key, every chunk, the image.
//!
//! Properties: no panic, allocation bounded by the input (the payload
//! length is checked against the manifest before anything is reserved);
//! an accepted bundle's image has the manifest's length and SHA-256, and its
//! payload re-encrypts to exactly the bundle's payload.
#![no_main]

use aloft_fuzz::fixtures::fixture;
use aloft_protocol::payload::encrypt_payload;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{ContentKey, Digest, pb};
use aloft_release::release::check_bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = pb::ReleaseBundle::decode(data) else {
        return;
    };
    let Ok((manifest, image)) = check_bundle(&bundle, &fixture().v1) else {
        return;
    };
    assert_eq!(image.len() as u64, manifest.image_len());
    assert_eq!(Digest::of(&image), manifest.image_digest());
    let key = ContentKey::from_slice(&bundle.content_key).expect("an accepted key");
    let payload = encrypt_payload(&key, &manifest.payload_params(), &image).expect("re-encrypts");
    assert_eq!(payload, bundle.payload);
});
