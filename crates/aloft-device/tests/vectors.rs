//! Reference vectors for the device's on-flash formats, through the public
//! API: a device provisioned with fixed keys (`SecretKey::from_slice(&[n;
//! 32])`, RFC 6979 signatures) and a fixed image writes exactly the bytes
//! in `tests/vectors/` to its slot trailer, its TrustRoot copy and its
//! state log; each file is also decoded back to what it was built from.
//! The state record's own encoder is crate-private: its vector is checked
//! by the unit test `state::vectors`. What each file is:
//! `tests/vectors/README.md`.
//!
//! `ALOFT_WRITE_VECTORS=1 cargo test -p aloft-device --test vectors`
//! rewrites the files (only after a deliberate format change); the normal
//! run only compares.

mod common;

use std::path::PathBuf;

use aloft_device::{Device, Layout, Slot};
use aloft_protocol::envelope::{decode_envelope, seal};
use aloft_protocol::keys::Domain;
use aloft_protocol::prost::Message;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{Digest, SecretKey, UnixTime, pb};
use common::{HARDWARE, NOW, PRODUCT, Sim, config, flash, image, layout};

fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

fn pubkey(n: u8) -> Vec<u8> {
    key(n).public_key().to_sec1_compressed().to_vec()
}

/// Root key 1, release key 11, server key 21; version 1, expiring a year
/// after [`NOW`].
fn trust_root() -> pb::SignedEnvelope {
    let root = pb::TrustRoot {
        version: 1,
        expires_at: NOW + 365 * 86_400,
        root_keys: vec![pubkey(1)],
        root_threshold: 1,
        release_keys: vec![pubkey(11)],
        release_threshold: 1,
        server_keys: vec![pubkey(21)],
    };
    seal(&root, Domain::TrustRoot, &[&key(1)])
}

/// `fw-1`, 1.1.0, security version 1, 1200 bytes of `common::image(1200,
/// 1)` in chunks of 256, signed by release key 11.
fn manifest(image: &[u8]) -> pb::ReleaseManifest {
    pb::ReleaseManifest {
        release_id: "fw-1".into(),
        product: PRODUCT.into(),
        hardware: vec!["rev-a".into(), HARDWARE.into()],
        version: "1.1.0".into(),
        security_version: 1,
        image_len: image.len() as u64,
        image_sha256: Digest::of(image).as_bytes().to_vec(),
        chunk_size: 256,
        nonce_prefix: vec![1; 7],
        created_at: NOW - 10,
        expires_at: NOW + 86_400,
        ..Default::default()
    }
}

fn provisioned() -> (Device<Sim>, pb::SignedEnvelope, pb::SignedEnvelope) {
    let root = trust_root();
    let trust = VerifiedTrustRoot::trust_on_first_use(&root, UnixTime(NOW)).unwrap();
    let image = image(1200, 1);
    let envelope = seal(&manifest(&image), Domain::ReleaseManifest, &[&key(11)]);
    let dev = Device::provision(
        flash(),
        layout(),
        config(),
        &trust,
        &image,
        &envelope.encode_to_vec(),
    )
    .unwrap();
    (dev, root, envelope)
}

/// `(offset, len)` of the slot trailer, TrustRoot copy 0, the state log.
fn trailer(l: &Layout, slot: Slot) -> (usize, usize) {
    let len = l.trailer_len(slot);
    ((l.slot(slot).end() - len) as usize, len as usize)
}

fn trust_copy0(l: &Layout) -> (usize, usize) {
    let at = l.state.end() - 2 * l.trust_len();
    (at as usize, l.trust_len() as usize)
}

fn state_log(l: &Layout) -> (usize, usize) {
    let len = l.state.size - 2 * l.trust_len();
    (l.state.offset as usize, len as usize)
}

/// Compares the flash region `(at, len)` with `tests/vectors/<name>` (its
/// bytes up to the last one that is not erased; the rest must be erased),
/// or writes that file when `ALOFT_WRITE_VECTORS=1`. Returns the file.
fn region_vector(name: &str, flash: &[u8], (at, len): (usize, usize)) -> Vec<u8> {
    let region = &flash[at..at + len];
    let end = region.iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    if std::env::var_os("ALOFT_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &region[..end]).unwrap();
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate with ALOFT_WRITE_VECTORS=1)",
            path.display()
        )
    });
    assert!(
        region[..want.len().min(len)] == want[..] && end <= want.len(),
        "{name}: the on-flash format changed; if deliberate, regenerate with \
         ALOFT_WRITE_VECTORS=1 and say why in the commit"
    );
    assert!(region[want.len()..].iter().all(|&b| b == 0xFF));
    want
}

/// `[len: u32 LE][envelope]`, as both the slot trailer and the TrustRoot
/// copies store an envelope.
fn length_prefixed(bytes: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        4 + len,
        "length prefix, then exactly the envelope"
    );
    &bytes[4..]
}

#[test]
fn slot_trailer() {
    let (dev, _, envelope) = provisioned();
    let l = *dev.layout();
    let file = region_vector(
        "slot-a-trailer.bin",
        dev.flash().bytes(),
        trailer(&l, Slot::A),
    );
    let stored = length_prefixed(&file);
    assert_eq!(stored, envelope.encode_to_vec());
    let decoded = decode_envelope(stored).unwrap();
    assert_eq!(decoded, envelope);
    let m = pb::ReleaseManifest::decode(decoded.payload.as_slice()).unwrap();
    assert_eq!(m, manifest(&image(1200, 1)));
    // Slot B holds nothing yet.
    let (at, len) = trailer(&l, Slot::B);
    assert!(dev.flash().bytes()[at..at + len].iter().all(|&b| b == 0xFF));
}

#[test]
fn trust_root_copy() {
    let (dev, root, _) = provisioned();
    let l = *dev.layout();
    let file = region_vector("trust-copy-0.bin", dev.flash().bytes(), trust_copy0(&l));
    let stored = length_prefixed(&file);
    assert_eq!(stored, root.encode_to_vec());
    let reloaded = VerifiedTrustRoot::reload_stored(&decode_envelope(stored).unwrap()).unwrap();
    assert_eq!(reloaded.digest(), dev.trust_root().unwrap().digest());
    // Copy 1 is erased until the first rotation.
    let (at, len) = (
        trust_copy0(&l).0 + l.trust_len() as usize,
        l.trust_len() as usize,
    );
    assert!(dev.flash().bytes()[at..at + len].iter().all(|&b| b == 0xFF));
}

#[test]
fn provisioned_state_log() {
    let (dev, _, _) = provisioned();
    let l = *dev.layout();
    let file = region_vector(
        "provisioned-state-log.bin",
        dev.flash().bytes(),
        state_log(&l),
    );
    // One record: it opens to the factory state.
    let mut sim = flash();
    let (at, _) = state_log(&l);
    let (t_at, t_len) = trust_copy0(&l);
    sim.bytes_mut()[at..at + file.len()].copy_from_slice(&file);
    sim.bytes_mut()[t_at..t_at + t_len].copy_from_slice(&dev.flash().bytes()[t_at..t_at + t_len]);
    let opened = Device::open(sim, l, config()).unwrap();
    assert_eq!(opened.active_slot(), Slot::A);
    assert!(opened.is_confirmed());
    assert_eq!(opened.security_floor().0, 1);
    assert_eq!(opened.boot_count(), 0);
    assert_eq!(opened.trust_root().unwrap().version(), 1);
    assert_eq!(opened.reports().count(), 0);
}
