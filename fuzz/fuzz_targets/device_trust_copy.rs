//! A TrustRoot copy in the state partition from arbitrary bytes, through
//! the public API: a provisioned device (root v1 in copy 0, named by the
//! state) whose copy 0 or 1 (the first input byte picks) is the rest of the
//! input (bytes past its end erased). Then `Device::open`, `trust_root`,
//! `boot`, `verify_offer` and `update_trust_root` with the real v2 chain.
//!
//! Properties: no panic, no flash error; a damaged copy never stops the
//! device (open and boot succeed: "a copy that rots no longer verifies, the
//! device still boots"); a root read from flash is exactly the recorded one
//! (version and digest); the unnamed copy never matters; offers and chain
//! updates work exactly when the root reads back, and a chain update is
//! durable across a reopen.
#![no_main]

use aloft_device::{Clock, Device, Error, SessionBinding, Slot};
use aloft_fuzz::fixtures::{DEVICE, NONCE, NOW, Stage, config, fixture, flash, layout, regions};
use aloft_protocol::{DeviceId, DeviceNonce, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, copy_bytes)) = data.split_first() else {
        return;
    };
    let copy = pick & 1;
    let mut sim = flash(Stage::Provisioned);
    let (at, len) = regions::trust_copy(copy);
    let area = &mut sim.bytes_mut()[at..at + len];
    area.fill(0xFF);
    let n = copy_bytes.len().min(len);
    area[..n].copy_from_slice(&copy_bytes[..n]);

    let fx = fixture();
    let mut dev =
        Device::open(sim, layout(), config()).expect("a bad TrustRoot copy does not stop open");
    let readable = match dev.trust_root() {
        Ok(root) => {
            assert_eq!(
                (root.version(), root.digest()),
                (fx.v1.version(), fx.v1.digest())
            );
            true
        }
        Err(e) => {
            assert_eq!(e, Error::TrustRootUnreadable);
            assert_eq!(copy, 0, "the copy the state does not name broke the root");
            false
        }
    };
    let status = dev.trust_status(Clock::At(UnixTime(NOW)));
    assert_eq!(status.expired, !readable);
    let booted = dev.boot().expect("a bad TrustRoot copy does not stop boot");
    assert_eq!(booted.slot, Slot::A);

    let id = DeviceId::new(DEVICE).unwrap();
    let nonce = DeviceNonce::from_bytes(NONCE);
    let binding = SessionBinding {
        device_id: &id,
        nonce: &nonce,
    };
    let clock = Clock::At(UnixTime(NOW));
    let offer = dev.verify_offer(&fx.directive, &fx.fw2.envelope, binding, clock);
    assert_eq!(offer.is_ok(), readable, "{offer:?}");

    let chain = [fx.roots[1].clone()];
    match dev.update_trust_root(&chain, clock) {
        Ok(version) => {
            assert!(readable);
            assert_eq!(version, 2);
            let dev = Device::open(dev.into_flash(), layout(), config()).expect("reopens");
            assert_eq!(dev.trust_root().map(|r| r.version()), Ok(2));
        }
        Err(e) => {
            assert!(!readable);
            assert_eq!(e, Error::TrustRootUnreadable);
        }
    }
});
