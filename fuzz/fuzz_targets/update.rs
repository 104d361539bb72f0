//! An offer (directive + manifest) from arbitrary bytes, verified for the
//! fixture device by `trust::verify_update` under TrustRoot v1.
//!
//! Properties: no panic; an accepted update satisfies every rule it claims
//! (bound to this device and nonce, names exactly the manifest, newer,
//! above the floor, fits, for this product and hardware, server time not
//! before the floor, the root's digest) and each half also verifies on its
//! own.
#![no_main]

use aloft_fuzz::fixtures::{DEVICE, HARDWARE, NONCE, NOW, PRODUCT, fixture};
use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{DeviceContext, verify_update};
use aloft_protocol::{DeviceId, DeviceNonce, Digest, SecurityVersion, UnixTime, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = pb::Offer::decode(data) else {
        return;
    };
    let (Some(directive), Some(manifest)) = (offer.directive, offer.manifest) else {
        return;
    };
    let trust = &fixture().v1;
    let id = DeviceId::new(DEVICE).unwrap();
    let nonce = DeviceNonce::from_bytes(NONCE);
    let ctx = DeviceContext {
        device_id: &id,
        device_nonce: &nonce,
        product: PRODUCT,
        hardware: HARDWARE,
        current_version: Version::new(1, 1, 0),
        security_floor: SecurityVersion(1),
        time_floor: UnixTime(NOW - 3600),
        slot_capacity: 5 * 1024,
        now: UnixTime(NOW),
    };
    let Ok(update) = verify_update(trust, &directive, &manifest, &ctx) else {
        return;
    };
    let d = update.directive();
    let m = update.manifest();
    assert_eq!(d.device_id(), &id);
    assert_eq!(d.device_nonce(), &nonce);
    assert_eq!(d.manifest_digest(), Digest::of(&manifest.payload));
    assert_eq!(m.digest(), d.manifest_digest());
    assert!(d.server_time() >= ctx.time_floor);
    assert_eq!(m.product(), PRODUCT);
    assert!(m.hardware().iter().any(|h| h == HARDWARE));
    assert!(m.version() > ctx.current_version);
    assert!(m.security_version() >= ctx.security_floor);
    assert!(m.image_len() <= ctx.slot_capacity);
    assert_eq!(update.root_digest(), trust.digest());
    assert_eq!(trust.verify_directive(&directive, ctx.now).as_ref(), Ok(d));
    let later = ctx.now.max(d.server_time());
    assert_eq!(trust.verify_manifest(&manifest, later).as_ref(), Ok(m));
});
