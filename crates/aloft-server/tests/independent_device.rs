//! The wire contract is enough to write a device: a device side built only
//! from ARCHITECTURE.md "Wire contract" and the proto comments, with the
//! generated protobuf types and the RustCrypto primitives, and **nothing**
//! from aloft-protocol's signing, verification, wrapping or payload code.
//! It checks in to a real server, verifies the directive and the manifest,
//! unwraps the content key, downloads and decrypts the image and reports
//! it installed and then confirmed. If a rule in the documents drifted from
//! the code (a domain tag, the signature or token encoding, the chunk nonce,
//! the key-wrap derivation), this test fails.
#![allow(missing_docs)]

mod common;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::device_service_client::DeviceServiceClient;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::pb::{self, ReportKind};
use aloft_protocol::prost::Message as _;
use common::{authed, now, rand_bytes, start};
use p256::ecdsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// `SHA-256(tag || NUL || message)`: what every signature covers.
fn prehash(domain: &str, message: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(message);
    h.finalize().into()
}

fn verify(key_sec1: &[u8], domain: &str, message: &[u8], r_s: &[u8]) -> bool {
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_sec1).unwrap();
    let Ok(sig) = p256::ecdsa::Signature::from_slice(r_s) else {
        return false;
    };
    key.verify_prehash(&prehash(domain, message), &sig).is_ok()
}

/// Envelope check: at least `threshold` distinct listed keys signed it.
fn threshold_met(
    env: &pb::SignedEnvelope,
    domain: &str,
    keys: &[Vec<u8>],
    threshold: usize,
) -> bool {
    let mut signers = std::collections::BTreeSet::new();
    for s in &env.signatures {
        for k in keys {
            let id: [u8; 32] = Sha256::digest(k).into();
            if id.as_slice() == s.key_id && verify(k, domain, &env.payload, &s.signature) {
                signers.insert(id);
            }
        }
    }
    signers.len() >= threshold
}

fn gcm_open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    let cipher = aes_gcm::Aes256Gcm::new(&(*key).into());
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let mut buf = ct.to_vec();
    let tag: [u8; 16] = tag.try_into().unwrap();
    cipher
        .decrypt_inout_detached(
            &(*nonce).into(),
            aad,
            buf.as_mut_slice().into(),
            &tag.into(),
        )
        .expect("authentic ciphertext");
    buf
}

/// The independent device: its id, key and the session it is in.
struct Device {
    id: String,
    key: p256::SecretKey,
    tx: mpsc::Sender<pb::DeviceToServer>,
    inbound: Streaming<pb::ServerToDevice>,
    challenge: Vec<u8>,
    seq: u64,
}

impl Device {
    async fn open(channel: &tonic::transport::Channel, id: &str, key: p256::SecretKey) -> Self {
        let (tx, rx) = mpsc::channel(8);
        let mut inbound = DeviceServiceClient::new(channel.clone())
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let Some(Kind::Challenge(c)) = inbound.message().await.unwrap().unwrap().kind else {
            panic!("the server speaks first with a Challenge");
        };
        assert_eq!(c.nonce.len(), 32);
        Self {
            id: id.into(),
            key,
            tx,
            inbound,
            challenge: c.nonce,
            seq: 0,
        }
    }

    async fn send(&mut self, body: Body) {
        self.seq += 1;
        let payload = pb::DeviceMessage {
            device_id: self.id.clone(),
            challenge: self.challenge.clone(),
            seq: self.seq,
            body: Some(body),
        }
        .encode_to_vec();
        let signing = p256::ecdsa::SigningKey::from(&self.key);
        let sig: p256::ecdsa::Signature = signing
            .sign_prehash(&prehash("aloft/v1/device-message", &payload))
            .unwrap();
        let signed = pb::SignedDeviceMessage {
            payload,
            signature: sig.to_bytes().to_vec(),
        };
        assert_eq!(signed.signature.len(), 64, "r || s");
        self.tx
            .send(pb::DeviceToServer {
                signed: Some(signed),
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Kind {
        self.inbound.message().await.unwrap().unwrap().kind.unwrap()
    }
}

fn state(version: &str) -> pb::DeviceState {
    pb::DeviceState {
        firmware_version: version.into(),
        security_version: 1,
        active_slot: pb::Slot::A as i32,
        confirmed: true,
        trust_root_version: 1,
        ..Default::default()
    }
}

fn report(kind: ReportKind, release: &str) -> pb::Report {
    pb::Report {
        report_id: rand_bytes::<16>().to_vec(),
        kind: kind as i32,
        release_id: release.into(),
        detail: String::new(),
    }
}

#[tokio::test]
async fn a_device_written_from_the_wire_contract_alone_updates() {
    // The operator side may use Aloft's own tools.
    let h = start(false).await;
    h.install_trust_root().await;
    let release = h.keys.release("sensor-1.1.0", "1.1.0", 5000, now() + 3600);
    h.upload(&release, 4096).await.unwrap();
    let device_key = p256::SecretKey::from_slice(&rand_bytes::<32>()).unwrap();
    let device_public = p256::ecdsa::VerifyingKey::from(device_key.public_key())
        .to_sec1_point(true)
        .as_bytes()
        .to_vec();
    assert_eq!(device_public.len(), 33);
    let mut register = common::TestDevice::new("indie-1").register_request();
    register.public_key = device_public.clone();
    h.admin()
        .register_device(authed(register, &h.token()))
        .await
        .unwrap();
    h.rollout("r1", "sensor-1.1.0", "").await;

    // What the device knows from the factory: its TrustRoot.
    let info = h
        .admin()
        .get_server_info(authed(pb::GetServerInfoRequest {}, &h.token()))
        .await
        .unwrap()
        .into_inner();
    let root_env = info.trust_root.unwrap();
    let root = pb::TrustRoot::decode(root_env.payload.as_slice()).unwrap();
    assert!(threshold_met(
        &root_env,
        "aloft/v1/trust-root",
        &root.root_keys,
        root.root_threshold as usize
    ));

    // Session: Challenge, Hello (seq 1), Welcome, Offer.
    let mut dev = Device::open(&h.channel, "indie-1", device_key.clone()).await;
    let nonce = rand_bytes::<24>().to_vec(); // any length 16..=32
    dev.send(Body::Hello(pb::Hello {
        device_nonce: nonce.clone(),
        state: Some(state("1.0.0")),
        reports: vec![],
    }))
    .await;
    let Kind::Welcome(welcome) = dev.next().await else {
        panic!("expected Welcome")
    };
    assert_eq!(welcome.session_token.len(), 32);
    let Kind::Offer(offer) = dev.next().await else {
        panic!("expected Offer")
    };

    // The directive: one server key of the root, bound to us and this session.
    let directive_env = offer.directive.unwrap();
    assert!(threshold_met(
        &directive_env,
        "aloft/v1/directive",
        &root.server_keys,
        1
    ));
    let directive = pb::Directive::decode(directive_env.payload.as_slice()).unwrap();
    assert_eq!(directive.device_id, "indie-1");
    assert_eq!(directive.device_nonce, nonce);
    assert!(directive.server_time <= directive.expires_at && directive.expires_at >= now());
    // The manifest: named by digest, signed by the release threshold.
    let manifest_env = offer.manifest.unwrap();
    assert_eq!(
        Sha256::digest(&manifest_env.payload).as_slice(),
        directive.manifest_digest
    );
    assert!(threshold_met(
        &manifest_env,
        "aloft/v1/release-manifest",
        &root.release_keys,
        root.release_threshold as usize
    ));
    let manifest = pb::ReleaseManifest::decode(manifest_env.payload.as_slice()).unwrap();

    // The content key: ECDH, HKDF-SHA256, AES-256-GCM with a zero nonce.
    let wrapped = directive.content_key.unwrap();
    let ephemeral = p256::PublicKey::from_sec1_bytes(&wrapped.ephemeral_public_key).unwrap();
    let shared = p256::ecdh::diffie_hellman(device_key.to_nonzero_scalar(), ephemeral.as_affine());
    let mut info = wrapped.ephemeral_public_key.clone();
    info.extend_from_slice(&device_public);
    info.extend_from_slice(b"indie-1");
    let mut kek = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(
        Some(b"aloft/v1/content-key-wrap"),
        shared.raw_secret_bytes().as_slice(),
    )
    .expand(&info, &mut kek)
    .unwrap();
    assert_eq!(wrapped.ciphertext.len(), 48);
    let content_key: [u8; 32] = gcm_open(&kek, &[0; 12], b"indie-1", &wrapped.ciphertext)
        .try_into()
        .unwrap();

    // The download: the token as lower-case hex, chunks decrypted by index.
    let token: String = welcome
        .session_token
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut stream = DeviceServiceClient::new(h.channel.clone())
        .download(authed(
            pb::DownloadRequest {
                release_id: manifest.release_id.clone(),
                start_chunk: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let chunks = manifest.image_len.div_ceil(u64::from(manifest.chunk_size)) as u32;
    let mut image = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(&manifest.nonce_prefix);
        nonce[7..11].copy_from_slice(&chunk.index.to_be_bytes());
        nonce[11] = u8::from(chunk.index + 1 == chunks);
        image.extend(gcm_open(
            &content_key,
            &nonce,
            &manifest.image_sha256,
            &chunk.data,
        ));
    }
    assert_eq!(image, release.image, "the image, byte for byte");
    assert_eq!(Sha256::digest(&image).as_slice(), manifest.image_sha256);

    // Installed, then (after the reboot) confirmed in a new session.
    dev.send(Body::Report(report(ReportKind::Installed, "sensor-1.1.0")))
        .await;
    let Kind::ReportAck(_) = dev.next().await else {
        panic!("expected ReportAck")
    };
    drop(dev);
    let mut dev = Device::open(&h.channel, "indie-1", device_key).await;
    dev.send(Body::Hello(pb::Hello {
        device_nonce: rand_bytes::<16>().to_vec(),
        state: Some(state("1.1.0")),
        reports: vec![report(ReportKind::Confirmed, "sensor-1.1.0")],
    }))
    .await;
    let Kind::Welcome(_) = dev.next().await else {
        panic!("expected Welcome")
    };
    let Kind::ReportAck(ack) = dev.next().await else {
        panic!("expected ReportAck")
    };
    assert_eq!(ack.report_ids.len(), 1);
    let info = h.device_info("indie-1").await;
    assert_eq!(info.firmware_version, "1.1.0");
    assert_eq!(info.status, pb::DeviceStatus::Updated as i32, "{info:?}");
}
