//! Loading identity bundles: every refusal names what was wrong.

mod common;

use aloft_agent::{Identity, IdentityError, MAX_IDENTITY_LEN};
use aloft_protocol::prost::Message as _;
use aloft_protocol::{SecretKey, pb};
use common::*;

fn bundle() -> pb::IdentityBundle {
    let keys = Keys::new();
    let server = SecretKey::generate();
    pb::IdentityBundle {
        device_id: "dev-1".into(),
        private_key: SecretKey::generate().to_bytes().to_vec(),
        server_url: "https://localhost:7443".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
        trust_root: Some(keys.trust_root(&server.public_key())),
        attributes: [("product", "sensor"), ("hardware", "rev-a")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

#[test]
fn a_good_bundle_loads_from_a_file_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.pb");
    let b = bundle();
    std::fs::write(&path, b.encode_to_vec()).unwrap();
    let id = Identity::load(&path).unwrap();
    assert_eq!(id.device_id().as_str(), "dev-1");
    assert_eq!(id.server_url(), "https://localhost:7443");
    assert!(id.ca_pem().is_some());
    let config = id.device_config().unwrap();
    assert_eq!(
        (config.product.as_str(), config.hardware.as_str()),
        ("sensor", "rev-a")
    );
    assert_eq!(id.to_bundle(), b);
    let debug = format!("{id:?}");
    assert!(
        !debug.contains(&hex::encode(&b.private_key)),
        "no key in Debug"
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pb");
    let e = Identity::load(&missing).unwrap_err();
    assert!(matches!(e, IdentityError::Io { .. }));
    assert!(e.to_string().contains("missing.pb"), "{e}");
    let big = dir.path().join("big.pb");
    std::fs::write(&big, vec![0u8; MAX_IDENTITY_LEN as usize + 1]).unwrap();
    assert!(matches!(
        Identity::load(&big),
        Err(IdentityError::TooLarge { .. })
    ));
    let junk = dir.path().join("junk.pb");
    std::fs::write(&junk, b"\xff\xff\xff\xff not protobuf").unwrap();
    assert!(matches!(
        Identity::load(&junk),
        Err(IdentityError::Decode(_))
    ));
}

#[test]
fn each_bad_field_is_refused() {
    type Spoil = fn(&mut pb::IdentityBundle);
    type Expect = fn(&IdentityError) -> bool;
    let cases: Vec<(Spoil, Expect)> = vec![
        (
            |b| b.device_id.clear(),
            |e| matches!(e, IdentityError::DeviceId(_)),
        ),
        (
            |b| b.device_id = "bad id/..".into(),
            |e| matches!(e, IdentityError::DeviceId(_)),
        ),
        (
            |b| b.private_key = vec![0; 32],
            |e| matches!(e, IdentityError::PrivateKey),
        ),
        (
            |b| b.private_key.truncate(31),
            |e| matches!(e, IdentityError::PrivateKey),
        ),
        (
            |b| b.server_url = "ftp://x".into(),
            |e| matches!(e, IdentityError::ServerUrl(_)),
        ),
        (
            |b| b.ca_pem.clear(),
            |e| matches!(e, IdentityError::MissingCa(_)),
        ),
        (
            |b| b.trust_root = None,
            |e| matches!(e, IdentityError::NoTrustRoot),
        ),
        (
            |b| b.trust_root.as_mut().unwrap().payload[3] ^= 1,
            |e| matches!(e, IdentityError::TrustRoot(_)),
        ),
        (
            |b| b.trust_root.as_mut().unwrap().signatures.clear(),
            |e| matches!(e, IdentityError::TrustRoot(_)),
        ),
    ];
    for (i, (spoil, expect)) in cases.into_iter().enumerate() {
        let mut b = bundle();
        spoil(&mut b);
        let e = match Identity::from_bundle(b) {
            Err(e) => e,
            Ok(id) => panic!("case {i} accepted: {id:?}"),
        };
        assert!(expect(&e), "case {i}: {e}");
    }
    // Plaintext needs no CA.
    let mut b = bundle();
    b.server_url = "http://127.0.0.1:7000".into();
    b.ca_pem.clear();
    assert!(Identity::from_bundle(b).is_ok());
}

#[test]
fn device_config_needs_product_and_hardware() {
    let mut b = bundle();
    b.attributes.remove("hardware");
    let id = Identity::from_bundle(b).unwrap();
    let e = id.device_config().unwrap_err();
    assert!(
        matches!(e, IdentityError::MissingAttribute("hardware")),
        "{e}"
    );
}
