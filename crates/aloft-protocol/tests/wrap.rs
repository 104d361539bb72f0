//! Content-key wrapping: only the addressed device, under its own id, with an
//! untouched wrapped key, recovers the content key.
//!
//! Run with `--features std` (wrapping needs `sign`, the OS RNG needs `std`).
#![cfg(feature = "std")]

use aloft_protocol::pb;
use aloft_protocol::trust::WrappedContentKey;
use aloft_protocol::wrap::{unwrap_content_key, wrap_content_key};
use aloft_protocol::{ContentKey, DeviceId, Error, PublicKey, SecretKey};
use rand_core::UnwrapErr;

fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

struct Setup {
    key: ContentKey,
    device: SecretKey,
    id: DeviceId,
    wrapped: WrappedContentKey,
}

fn setup() -> Setup {
    let key = ContentKey::from_bytes([0x5a; 32]);
    let device = SecretKey::generate();
    let id = DeviceId::new("sensor-0001").unwrap();
    let wrapped = wrap_content_key(&key, &device.public_key(), &id, &mut rng());
    Setup {
        key,
        device,
        id,
        wrapped,
    }
}

#[test]
fn round_trip() {
    let s = setup();
    assert_eq!(
        unwrap_content_key(&s.wrapped, &s.device, &s.id).unwrap(),
        s.key
    );
    // Through the wire form too.
    let back = WrappedContentKey::from_pb(&s.wrapped.to_pb()).unwrap();
    assert_eq!(back, s.wrapped);
    assert_eq!(unwrap_content_key(&back, &s.device, &s.id).unwrap(), s.key);
}

#[test]
fn every_wrap_uses_a_fresh_ephemeral_key() {
    let s = setup();
    let again = wrap_content_key(&s.key, &s.device.public_key(), &s.id, &mut rng());
    assert_ne!(again.ephemeral, s.wrapped.ephemeral);
    assert_ne!(again.ciphertext, s.wrapped.ciphertext);
    // The ciphertext does not carry the key in the clear.
    assert_ne!(&again.ciphertext[..32], s.key.expose());
    assert_eq!(unwrap_content_key(&again, &s.device, &s.id).unwrap(), s.key);
}

#[test]
fn another_devices_key_cannot_unwrap() {
    let s = setup();
    let other = SecretKey::generate();
    assert_eq!(
        unwrap_content_key(&s.wrapped, &other, &s.id),
        Err(Error::UnwrapFailed)
    );
}

#[test]
fn another_device_id_cannot_unwrap() {
    let s = setup();
    for other in ["sensor-0002", "sensor-000", "Sensor-0001"] {
        let other = DeviceId::new(other).unwrap();
        assert_eq!(
            unwrap_content_key(&s.wrapped, &s.device, &other),
            Err(Error::UnwrapFailed)
        );
    }
}

/// A device that holds the right key but was addressed under another id (a
/// directive for device A re-targeted at B, who shares A's key) is refused.
#[test]
fn a_key_wrapped_for_another_id_cannot_be_unwrapped() {
    let s = setup();
    let other = DeviceId::new("sensor-0002").unwrap();
    let for_other = wrap_content_key(&s.key, &s.device.public_key(), &other, &mut rng());
    assert_eq!(
        unwrap_content_key(&for_other, &s.device, &s.id),
        Err(Error::UnwrapFailed)
    );
    assert_eq!(
        unwrap_content_key(&for_other, &s.device, &other).unwrap(),
        s.key
    );
}

#[test]
fn every_flipped_ciphertext_bit_fails() {
    let s = setup();
    for bit in 0..48 * 8 {
        let mut w = s.wrapped.clone();
        w.ciphertext[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            unwrap_content_key(&w, &s.device, &s.id),
            Err(Error::UnwrapFailed),
            "bit {bit}"
        );
    }
}

/// Every flipped bit of the ephemeral key's wire form is refused: either the
/// point no longer parses (InvalidField at decoding) or unwrapping fails.
/// Bit 0 of byte 0 turns the point into its negation, which has the same ECDH
/// secret; only the binding of the ephemeral key into the derivation stops it.
#[test]
fn every_flipped_ephemeral_key_bit_fails() {
    let s = setup();
    let wire = s.wrapped.to_pb();
    let (mut parsed, mut refused) = (0, 0);
    for bit in 0..33 * 8 {
        let mut w = wire.clone();
        w.ephemeral_public_key[bit / 8] ^= 1 << (bit % 8);
        match WrappedContentKey::from_pb(&w) {
            Ok(wrapped) => {
                parsed += 1;
                assert_eq!(
                    unwrap_content_key(&wrapped, &s.device, &s.id),
                    Err(Error::UnwrapFailed),
                    "bit {bit}"
                );
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e, Error::InvalidField("wrapped key ephemeral public key"));
            }
        }
    }
    // Both paths were exercised (about half of all x values are on the curve).
    assert!(
        parsed > 50 && refused > 50,
        "{parsed} parsed, {refused} refused"
    );
}

#[test]
fn wire_form_sizes_are_checked() {
    let s = setup();
    let good = s.wrapped.to_pb();
    assert_eq!(good.ephemeral_public_key.len(), 33);
    assert_eq!(good.ciphertext.len(), 48);

    let uncompressed = {
        // A valid point, but in the 65-byte uncompressed form.
        let mut w = good.clone();
        let point = p256::ecdsa::VerifyingKey::from_sec1_bytes(&w.ephemeral_public_key).unwrap();
        w.ephemeral_public_key = point.to_sec1_point(false).as_bytes().to_vec();
        assert!(PublicKey::from_sec1(&w.ephemeral_public_key).is_ok());
        assert_eq!(w.ephemeral_public_key.len(), 65);
        w
    };
    let bad_ephemeral = [
        pb::WrappedKey {
            ephemeral_public_key: vec![],
            ..good.clone()
        },
        pb::WrappedKey {
            ephemeral_public_key: good.ephemeral_public_key[..32].to_vec(),
            ..good.clone()
        },
        pb::WrappedKey {
            ephemeral_public_key: [&good.ephemeral_public_key[..], &[0]].concat(),
            ..good.clone()
        },
        pb::WrappedKey {
            ephemeral_public_key: vec![0x04; 33],
            ..good.clone()
        },
        uncompressed,
    ];
    for w in &bad_ephemeral {
        assert_eq!(
            WrappedContentKey::from_pb(w),
            Err(Error::InvalidField("wrapped key ephemeral public key"))
        );
    }
    for len in [0, 32, 47, 49, 64] {
        let w = pb::WrappedKey {
            ciphertext: vec![0; len],
            ..good.clone()
        };
        assert_eq!(
            WrappedContentKey::from_pb(&w),
            Err(Error::InvalidField("wrapped key ciphertext"))
        );
    }
    assert!(WrappedContentKey::from_pb(&good).is_ok());
}
