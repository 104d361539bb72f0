//! Keys born on the device: a key-less template gets its key on the device
//! (`aloft_agent::enroll`), the signed registration request proves it, the
//! server registers it (a factory token) and the device then runs sessions
//! with that key; templates the device cannot use are refused before any
//! key is stored.

mod common;

use std::path::Path;
use std::time::Duration;

use aloft_agent::enroll::{EnrollOptions, enroll, request_line};
use aloft_agent::{Agent, Identity, IdentityError, Outcome};
use aloft_device::Device;
use aloft_protocol::prost::Message as _;
use aloft_protocol::registration;
use aloft_protocol::{SecretKey, UnixTime, Version, pb};
use common::*;

fn template(trust: pb::SignedEnvelope, url: &str) -> pb::IdentityBundle {
    pb::IdentityBundle {
        device_id: "dev-born".into(),
        private_key: Vec::new(),
        server_url: url.into(),
        ca_pem: String::new(),
        trust_root: Some(trust),
        attributes: [
            ("product".to_owned(), "sensor".to_owned()),
            ("hardware".to_owned(), "rev-a".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ]
        .into_iter()
        .collect(),
    }
}

fn write(path: &Path, bundle: &pb::IdentityBundle) {
    std::fs::write(path, bundle.encode_to_vec()).unwrap();
}

fn opts() -> EnrollOptions {
    EnrollOptions {
        factory_version: Version::new(1, 0, 0),
        payloads: None,
        now: UnixTime(now()),
    }
}

#[test]
fn a_template_gets_its_key_on_the_device_and_then_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.pb");
    let keys = Keys::new();
    let server = SecretKey::generate().public_key();
    write(
        &path,
        &template(keys.trust_root(&server), "http://127.0.0.1:9"),
    );

    // A template is not an identity yet.
    assert!(matches!(Identity::load(&path), Err(IdentityError::NoKey)));
    let err = Identity::load(&path).unwrap_err().to_string();
    assert!(err.contains("aloft-agent register-request"), "{err}");

    let first = enroll(&path, &opts()).unwrap();
    assert!(first.key_made);
    // The key is in the identity store (0600) and the device loads.
    let loaded = Identity::load(&path).unwrap();
    assert_eq!(loaded.public_key(), first.identity.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The request names that key and verifies under it (proof of possession).
    let verified = registration::verify(&first.request).unwrap();
    assert_eq!(verified.public_key(), &loaded.public_key());
    assert_eq!(verified.device_id().as_str(), "dev-born");
    assert_eq!(verified.attributes().region, "eu");
    assert_eq!(verified.factory_version(), Version::new(1, 0, 0));
    assert_eq!(verified.payloads(), pb::PayloadSupport::EncryptedOnly);
    // The private key is in neither the request nor its line.
    let secret = hex::encode(loaded.secret_key().to_bytes());
    let line = request_line("dev-born", &first.request);
    assert!(!line.contains(&secret));
    assert!(
        !first
            .request
            .payload
            .windows(32)
            .any(|w| w == loaded.secret_key().to_bytes())
    );
    assert!(line.starts_with("{\"device_id\":\"dev-born\",\"payload\":\""));

    // Again (the device restarted before the station took the request): the
    // key is kept, the request is a fresh one.
    let second = enroll(&path, &opts()).unwrap();
    assert!(!second.key_made);
    assert_eq!(second.identity.public_key(), loaded.public_key());
    assert_ne!(second.request.payload, first.request.payload, "new nonce");
}

#[test]
fn unusable_templates_are_refused_before_a_key_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let server = SecretKey::generate().public_key();
    let good = template(keys.trust_root(&server), "http://127.0.0.1:9");
    type Expected = fn(&IdentityError) -> bool;
    let cases: Vec<(&str, pb::IdentityBundle, Expected)> = vec![
        (
            "no TrustRoot",
            pb::IdentityBundle {
                trust_root: None,
                ..good.clone()
            },
            |e| matches!(e, IdentityError::NoTrustRoot),
        ),
        (
            "unknown attribute",
            {
                let mut b = good.clone();
                b.attributes.insert("colour".into(), "red".into());
                b
            },
            |e| matches!(e, IdentityError::Request(_)),
        ),
        (
            "no hardware",
            {
                let mut b = good.clone();
                b.attributes.remove("hardware");
                b
            },
            |e| matches!(e, IdentityError::MissingAttribute("hardware")),
        ),
        (
            "https without a CA",
            pb::IdentityBundle {
                server_url: "https://localhost:1".into(),
                ..good.clone()
            },
            |e| matches!(e, IdentityError::MissingCa(_)),
        ),
    ];
    for (what, bundle, expected) in cases {
        let path = dir.path().join(format!("{}.pb", what.replace(' ', "-")));
        write(&path, &bundle);
        let err = enroll(&path, &opts()).unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
        let after = pb::IdentityBundle::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        assert!(after.private_key.is_empty(), "{what}: a key was stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_from_its_own_request_checks_in_with_its_key() {
    let h = Harness::start(false).await;
    let factory_release = h.keys.release("1.0.0", 8 * 1024);
    let path = h.dir.path().join("identity.pb");
    write(
        &path,
        &template(h.keys.trust_root(&h.server.server_public_key()), &h.url()),
    );
    let enrolled = enroll(&path, &opts()).unwrap();

    // The station registers the request with a factory token.
    let factory = h
        .admin
        .clone()
        .create_token(h.authed(pb::CreateTokenRequest {
            name: "line-3".into(),
            role: pb::Role::Factory as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    let registered = h
        .admin
        .clone()
        .register_device(authed(
            pb::RegisterDeviceRequest {
                device_id: "dev-born".into(),
                registration: Some(enrolled.request.clone()),
                ..Default::default()
            },
            &factory,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.key_origin, pb::KeyOrigin::OnDevice as i32);
    assert_eq!(
        registered.public_key,
        enrolled.identity.public_key().to_sec1_compressed().to_vec()
    );

    // The device, booting with the identity it now holds, authenticates.
    let identity = Identity::load(&path).unwrap();
    let mut device = Device::provision(
        new_flash(),
        layout(),
        device_config(),
        &h.trust,
        &factory_release.image,
        &factory_release.manifest_bytes(),
    )
    .unwrap();
    device.boot().unwrap();
    let mut agent = Agent::new(identity, device, fast_config()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let info = h.wait_for("dev-born", "seen", |i| i.last_seen > 0).await;
    assert_eq!(info.firmware_version, "1.0.0");
    let _ = stop.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.unwrap(), Outcome::Shutdown);
    h.server.shutdown().await.unwrap();
}
